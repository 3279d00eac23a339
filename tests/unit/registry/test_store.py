import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmops_cli.errors import RegistryError
from llmops_cli.registry.store import LocalRegistry


def _model_dir(tmp_path: Path, name: str = "m", payload: str = "weights") -> Path:
    d = tmp_path / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "adapter_model.safetensors").write_text(payload)
    (d / "adapter_config.json").write_text(json.dumps({"r": 8}))
    (d / "sub").mkdir(exist_ok=True)
    (d / "sub" / "tokenizer.json").write_text("{}")
    return d


def test_add_resolve_and_materialize(tmp_path):
    reg = LocalRegistry(tmp_path / "reg")
    v1, created = reg.add("demo", _model_dir(tmp_path, "a", "one"), {"note": "first"})
    assert created and v1.version == 1
    again, created = reg.add("demo", _model_dir(tmp_path, "a2", "one"), {})
    assert not created and again.version == 1  # identical content is not a new version
    v2, _ = reg.add("demo", _model_dir(tmp_path, "b", "two"), {})
    assert v2.version == 2
    assert reg.resolve("latest", default_name="demo").version == 2
    assert reg.resolve("demo:1").manifest["note"] == "first"
    out = reg.materialize(v1)
    assert (out / "adapter_model.safetensors").read_text() == "one"
    assert (out / "sub" / "tokenizer.json").is_file()


def test_verify_detects_tampering_and_materialize_refuses(tmp_path):
    reg = LocalRegistry(tmp_path / "reg")
    version, _ = reg.add("demo", _model_dir(tmp_path), {})
    sha = version.manifest["files"]["adapter_model.safetensors"]
    blob = reg.blobs / sha[:2] / sha
    os.chmod(blob, 0o644)
    blob.write_text("tampered")
    assert reg.verify(version) == ["adapter_model.safetensors: content does not match its sha256"]
    with pytest.raises(RegistryError, match="failed verification"):
        reg.materialize(version)


@pytest.mark.parametrize("ref", ["../etc", "a/b", "x;rm -rf", "demo@Prod!", "demo:one", ""])
def test_bad_references_are_refused(tmp_path, ref):
    with pytest.raises(RegistryError):
        LocalRegistry(tmp_path / "reg").resolve(ref, default_name="demo")


def test_bad_names_are_refused(tmp_path):
    with pytest.raises(RegistryError, match="invalid model name"):
        LocalRegistry(tmp_path / "reg").add("../escape", _model_dir(tmp_path), {})


def _register(root: str, src: str, out: str) -> None:
    version, _ = LocalRegistry(root).add("demo", src, {})
    Path(out).write_text(str(version.version))


def test_concurrent_registrations_get_distinct_complete_versions(tmp_path):
    srcs = [_model_dir(tmp_path, f"m{i}", f"payload-{i}") for i in range(8)]
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_register, args=(str(tmp_path / "reg"), str(s), str(tmp_path / f"out{i}")))
             for i, s in enumerate(srcs)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    numbers = sorted(int((tmp_path / f"out{i}").read_text()) for i in range(8))
    assert numbers == list(range(1, 9))
    reg = LocalRegistry(tmp_path / "reg")
    assert all(reg.verify(v) == [] for v in reg.list("demo"))


def test_killed_registration_leaves_no_visible_version(tmp_path):
    big = _model_dir(tmp_path, "big")
    (big / "adapter_model.safetensors").write_bytes(os.urandom(64 << 20))  # slow enough to kill mid-copy
    code = ("import sys; from llmops_cli.registry.store import LocalRegistry; "
            "LocalRegistry(sys.argv[1]).add('demo', sys.argv[2], {})")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "reg"), str(big)])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not list((tmp_path / "reg").glob("blobs/sha256/*/.incoming-*")):
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    reg = LocalRegistry(tmp_path / "reg")
    assert reg.list() == []
    version, created = reg.add("demo", big, {})  # and the registry still works afterwards
    assert created and version.version == 1 and reg.verify(version) == []
