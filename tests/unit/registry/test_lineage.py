"""The lineage manifest register records: raw sources, configs, tokenizer, safety, lockfile, OS user, license."""

import json
import sys
from pathlib import Path

import pytest

from llmops_cli.config.loader import load_config
from llmops_cli.registry.lineage import build_manifest, license_of

SAFETY = {"probes": 3, "refusal_rate": 1.0, "leak_rate": 0.0, "bias_disparity_rate": 0.25, "results": [], "bias": []}


def _inputs(tmp: Path) -> tuple[dict, dict, dict]:
    run = json.loads((tmp / "tune/run_manifest.json").read_text())
    evaluation = {**json.loads((tmp / "metrics/eval.json").read_text()), "safety": SAFETY,
                  "parity": {"vllm": {"agreement_rate": 1.0}},
                  "delta_production": {"exact_match": 0.1}}
    prep = {"hashes": {"train": "11" * 32}, "splits": {"train": 8, "validation": 1, "test": 1}}
    return run, evaluation, prep


def _manifest(adapter_project, **overrides) -> dict:
    tmp, config = adapter_project
    run, evaluation, prep = _inputs(tmp)
    cfg = load_config(config, [f"{k}={v}" for k, v in overrides.items()])
    return build_manifest(cfg, tmp / "tune", run, evaluation, prep)


def test_keeps_the_keys_other_code_reads(adapter_project):
    manifest = _manifest(adapter_project)
    for key in ("base_model", "adapter", "training", "data", "eval", "git_commit", "packages", "train_git_commit",
                "train_packages", "serve_readiness"):
        assert key in manifest
    assert manifest["adapter"] is True and manifest["serve_readiness"]["lora_rank"] == 4
    assert manifest["eval"]["tuned"] == {"exact_match": 0.8} and manifest["eval"]["gates_passed"] is True
    assert manifest["data"]["prep_hashes"] == {"train": "11" * 32}
    assert manifest["training"]["metrics"] == {"train_loss": 1.0}
    json.dumps(manifest)  # JSON-serialisable as it is


def test_raw_sources_are_hashed_and_follow_their_content(adapter_project):
    tmp, _ = adapter_project
    first = _manifest(adapter_project)["data"]["sources"]
    assert len(first) == 1 and first[0]["path"] == str(tmp / "data.jsonl")
    assert len(first[0]["sha256"]) == 64 and first[0]["bytes"] == (tmp / "data.jsonl").stat().st_size
    with (tmp / "data.jsonl").open("a") as fh:
        fh.write('{"id": "2", "message": "more", "category": "shipping"}\n')
    assert _manifest(adapter_project)["data"]["sources"][0]["sha256"] != first[0]["sha256"]


def test_a_missing_source_is_recorded_not_an_error(adapter_project):
    tmp, _ = adapter_project
    (tmp / "data.jsonl").unlink()
    assert _manifest(adapter_project)["data"]["sources"] == [{"path": str(tmp / "data.jsonl"), "missing": True}]


def test_stage_configs_are_recorded(adapter_project):
    tmp, _ = adapter_project
    manifest = _manifest(adapter_project)
    assert manifest["data"]["prep_config"]["sources"][0]["path"] == str(tmp / "data.jsonl")
    assert manifest["data"]["prep_config"]["dedup"] is True
    assert manifest["eval"]["config"]["data"] == str(tmp / "processed/test.jsonl")
    assert manifest["register"]["config"]["model_dir"] == str(tmp / "tune")
    assert manifest["data"]["prep_config"]["pii"]["github_token"] == "drop"  # a policy, not a secret


def test_credentials_in_config_urls_are_masked(adapter_project):
    uri = "http://user:s3cret@mlflow.example:5000"
    config = _manifest(adapter_project, **{"register.mlflow_tracking_uri": uri})["register"]["config"]
    assert config["mlflow_tracking_uri"] == "http://***@mlflow.example:5000"


def test_safety_parity_and_production_delta_are_kept(adapter_project):
    manifest = _manifest(adapter_project)
    assert manifest["eval"]["safety"] == SAFETY
    assert manifest["eval"]["parity"] == {"vllm": {"agreement_rate": 1.0}}
    assert manifest["eval"]["delta_production"] == {"exact_match": 0.1}


def test_tokenizer_files_are_hashed_and_follow_tokenizer_config(adapter_project):
    tmp, _ = adapter_project
    tokenizer = _manifest(adapter_project)["tokenizer"]
    assert {"tokenizer.json", "tokenizer_config.json"} <= set(tokenizer["files"])
    assert len(tokenizer["sha256"]) == 64 and tokenizer["chat_template_sha256"]
    config = tmp / "tune/tokenizer_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "model_max_length": 7}))
    changed = _manifest(adapter_project)["tokenizer"]
    assert changed["files"]["tokenizer_config.json"] != tokenizer["files"]["tokenizer_config.json"]
    assert changed["sha256"] != tokenizer["sha256"]


def test_environment_is_a_full_lockfile(adapter_project):
    env = _manifest(adapter_project)["environment"]
    assert env["python"]["version"] == ".".join(map(str, sys.version_info[:3]))
    assert env["python"]["implementation"]
    assert {"system", "machine", "libc"} <= set(env["platform"])
    assert "pydantic" in env["packages"] and list(env["packages"]) == sorted(env["packages"])
    assert len(env["packages"]) > 20
    torch = pytest.importorskip("torch")
    assert env["torch"]["version"] == torch.__version__ and env["torch"]["cuda"] == torch.version.cuda
    assert {"cudnn", "debug"} <= set(env["torch"])


def test_os_user_is_recorded(adapter_project, monkeypatch):
    monkeypatch.setattr("llmops_cli.registry.lineage.os_user", lambda: "alice")
    assert _manifest(adapter_project)["registered_by_os_user"] == "alice"


def test_license_from_config_else_base_readme_else_unknown(adapter_project, tmp_path):
    assert _manifest(adapter_project, **{"register.license": "apache-2.0"})["license"] == "apache-2.0"
    base = tmp_path / "base"
    base.mkdir()
    assert license_of(None, str(base)) == "unknown"
    (base / "README.md").write_text("---\nlanguage: en\nlicense: mit\n---\n# A model\nlicense: not-this\n")
    assert license_of(None, str(base)) == "mit"
    assert license_of(None, "Qwen/Qwen2.5-0.5B-Instruct") == "unknown"  # a hub id: never fetched
