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
    while time.monotonic() < deadline and not list((tmp_path / "reg").glob("blobs/sha256/.incoming-*")):
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    reg = LocalRegistry(tmp_path / "reg")
    assert reg.list() == []
    version, created = reg.add("demo", big, {})  # and the registry still works afterwards
    assert created and version.version == 1 and reg.verify(version) == []


@pytest.mark.parametrize("ref", ["demo:²", "demo:١", "demo:" + "9" * 24, "demo:0", "demo:-1", "demo@", "@"])
def test_malformed_refs_are_usage_errors_not_crashes(tmp_path, ref):
    from llmops_cli.errors import RefError

    reg = LocalRegistry(tmp_path / "reg")
    reg.add("demo", _model_dir(tmp_path), {})
    with pytest.raises(RefError) as info:
        reg.resolve(ref, default_name="demo")
    assert info.value.exit_code == 2


def _edit_index(root: Path, sql: str, *args) -> None:
    import sqlite3

    conn = sqlite3.connect(root / "index.sqlite")
    conn.execute(sql, args)
    conn.commit()
    conn.close()


@pytest.mark.parametrize("edit", ["metrics", "actor", "file_sha", "repoint", "digest"])
def test_verify_detects_edits_of_the_index(tmp_path, edit):
    reg = LocalRegistry(tmp_path / "reg")
    version, _ = reg.add("demo", _model_dir(tmp_path, "a", "one"), {"eval": {"tuned": {"exact_match": 0.2}}})
    other, _ = reg.add("demo", _model_dir(tmp_path, "b", "two"), {})
    assert reg.verify(version) == []
    manifest = json.loads(json.dumps(version.manifest))
    sha_other = other.files["adapter_model.safetensors"]
    if edit == "metrics":
        manifest["eval"]["tuned"]["exact_match"] = 1.0
        _edit_index(reg.root, "UPDATE versions SET manifest=? WHERE version=1", json.dumps(manifest))
    elif edit == "actor":
        _edit_index(reg.root, "UPDATE versions SET created_by='ceo' WHERE version=1")
    elif edit == "file_sha":
        _edit_index(reg.root, "UPDATE files SET sha256=? WHERE version=1 AND path='adapter_model.safetensors'",
                    sha_other)
    elif edit == "repoint":  # file row and manifest both point at another (intact) blob
        manifest["files"]["adapter_model.safetensors"] = sha_other
        _edit_index(reg.root, "UPDATE versions SET manifest=? WHERE version=1", json.dumps(manifest))
        _edit_index(reg.root, "UPDATE files SET sha256=? WHERE version=1 AND path='adapter_model.safetensors'",
                    sha_other)
    else:
        _edit_index(reg.root, "UPDATE versions SET digest=? WHERE version=1", other.digest)
    problems = reg.verify(reg.get("demo", 1))
    assert problems, edit
    with pytest.raises(RegistryError, match="failed verification"):
        reg.materialize(reg.get("demo", 1))


def test_materialized_copy_is_read_only_verified_and_rebuilt(tmp_path):
    reg = LocalRegistry(tmp_path / "reg")
    version, _ = reg.add("demo", _model_dir(tmp_path, "a", "one"), {})
    copy = reg.materialize(version)
    assert not os.access(copy / "adapter_model.safetensors", os.W_OK) or os.geteuid() == 0
    assert (os.stat(copy / "adapter_model.safetensors").st_mode & 0o222) == 0
    os.chmod(copy, 0o755)
    (copy / ".hidden_evil.py").write_text("x")
    assert reg.verify(version) == ["materialized copy: .hidden_evil.py: not part of the version"]
    again = reg.materialize(version)
    assert again == copy and not (copy / ".hidden_evil.py").exists() and reg.verify(version) == []


def test_gc_waits_for_a_registration_in_flight(tmp_path, monkeypatch):
    """The race from the issue, made deterministic: gc starts while a registration has written its blobs
    but not committed its version. gc must not delete them."""
    import threading

    reg = LocalRegistry(tmp_path / "reg")
    src = _model_dir(tmp_path, "big", "payload")
    written, release = threading.Event(), threading.Event()
    commit = LocalRegistry._commit_version

    def paused_commit(self, *args, **kwargs):
        written.set()
        release.wait(30)
        return commit(self, *args, **kwargs)

    monkeypatch.setattr(LocalRegistry, "_commit_version", paused_commit)
    result: dict = {}
    registering = threading.Thread(target=lambda: result.update(v=reg.add("demo", src, {})[0]))
    registering.start()
    assert written.wait(30)
    collecting = threading.Thread(target=lambda: result.update(gc=LocalRegistry(reg.root).gc()))
    collecting.start()
    collecting.join(1.0)
    assert collecting.is_alive()  # gc waits for the registration's lease
    release.set()
    registering.join(30)
    collecting.join(30)
    assert result["gc"]["removed"] == 0 and reg.verify(result["v"]) == []


def _register_big(root: str, src: str) -> None:
    LocalRegistry(root).add("demo", src, {})


def _gc_loop(root: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        LocalRegistry(root).gc()


def test_gc_racing_real_registrations_loses_nothing(tmp_path):
    srcs = []
    for i in range(5):
        src = _model_dir(tmp_path, f"m{i}", f"p{i}")
        for j in range(4):
            (src / f"shard-{j}.bin").write_bytes(os.urandom(2 << 20))
        srcs.append(src)
    ctx = multiprocessing.get_context("spawn")
    root = str(tmp_path / "reg")
    LocalRegistry(root).gc()
    procs = [ctx.Process(target=_gc_loop, args=(root, 4.0))]
    procs += [ctx.Process(target=_register_big, args=(root, str(s))) for s in srcs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    reg = LocalRegistry(root)
    assert len(reg.list("demo")) == 5 and all(reg.verify(v) == [] for v in reg.list("demo"))


def test_gc_reclaims_leftovers_of_killed_processes_and_stale_copies(tmp_path):
    reg = LocalRegistry(tmp_path / "reg")
    version, _ = reg.add("demo", _model_dir(tmp_path), {})
    reg.materialize(version)
    (reg.blobs / ".incoming-abc").write_bytes(b"half")
    (reg.blobs / "aa").mkdir(exist_ok=True)
    (reg.blobs / "aa" / ".incoming-old").write_bytes(b"half")  # the layout of older releases
    (reg.root / ".materialize-xyz" / "sub").mkdir(parents=True)
    stale = reg.root / "materialized" / "demo" / "7"
    stale.mkdir(parents=True)
    (stale / "weights").write_bytes(b"of a version that does not exist")
    result = reg.gc()
    assert (result["leftovers"], result["copies"], result["removed"]) == (3, 1, 0)
    assert not stale.exists() and reg.verify(version) == []
    assert (reg.root / "materialized" / "demo" / "1").is_dir()


def test_model_content_leaves_out_training_state_run_records_and_the_card(tmp_path):
    from llmops_cli.registry.base import model_files

    src = _model_dir(tmp_path)
    for name in ("README.md", "run_manifest.json", "training_args.bin", ".hidden"):
        (src / name).write_text("x")
    (src / "checkpoints" / "checkpoint-5").mkdir(parents=True)
    (src / "checkpoints" / "checkpoint-5" / "model.safetensors").write_text("x")
    (src / "sub" / "README.md").write_text("nested docs are content")
    assert sorted(model_files(src)) == ["adapter_config.json", "adapter_model.safetensors", "sub/README.md",
                                        "sub/tokenizer.json"]
