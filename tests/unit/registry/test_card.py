"""The model card: rendered from the Version record alone, deterministic, complete."""

import dataclasses
import json

from llmops_cli.config.loader import load_config
from llmops_cli.registry.base import Version
from llmops_cli.registry.card import model_card
from llmops_cli.registry.lineage import build_manifest

MANIFEST = {
    "base_model": {"id": "models/base", "content_sha256": "ab" * 32},
    "adapter": True,
    "training": {"config": {"tune": {"method": "lora", "epochs": 3, "learning_rate": 0.002}},
                 "metrics": {"train_loss": 0.5}, "data": {"train": "00" * 32}},
    "data": {
        "sources": [{"path": "data/raw/tickets.jsonl", "sha256": "c0ffee" + "0" * 58, "bytes": 1234},
                    {"path": "data/feedback/export.jsonl", "missing": True}],
        "splits": {"train": 80, "validation": 10, "test": 10},
        "prep_hashes": {"train": "11" * 32},
        "prep_config": {"dedup": True, "pii": {"email": "redact", "phone": "drop"},
                        "near_dup": {"enabled": False}},
    },
    "eval": {"n": 10, "base": {"exact_match": 0.1}, "tuned": {"exact_match": 0.8},
             "delta": {"exact_match": 0.7, "exact_match_ci": {"delta": 0.7, "ci_low": 0.5, "ci_high": 0.9}},
             "gates": [{"gate": "tuned.exact_match >= 0.5", "passed": True}], "gates_passed": True,
             "safety": {"probes": 3, "refusal_rate": 0.75, "leak_rate": 0.125, "bias_disparity_rate": 0.25}},
    "git_commit": "deadbeefcafe",
    "serve_readiness": {"lora_rank": 16, "requires_merge": False, "reasons": ["EOS token differs"]},
    "registered_by_os_user": "bob",
    "license": "apache-2.0",
    "files": {"adapter_model.safetensors": "22" * 32},
}


def _version(**changes) -> Version:
    base = Version(name="support", version=3, digest="f00d" * 16, created_at="2026-12-03T06:00:00Z",
                   created_by="alice", forced=False, force_reason=None, manifest=MANIFEST)
    return dataclasses.replace(base, **changes)


def test_card_names_version_date_commit_digest_and_people():
    card = model_card(_version())
    assert card.startswith("# support:3\n")
    for text in ("2026-12-03T06:00:00Z", "deadbeefcafe", "f00d" * 16, "alice", "bob"):
        assert text in card


def test_card_shows_license_data_sources_and_prep_policy():
    card = model_card(_version())
    assert "## License" in card and "apache-2.0" in card
    assert "data/raw/tickets.jsonl" in card and "c0ffee" in card and "1234 bytes" in card
    assert "data/feedback/export.jsonl" in card and "missing" in card
    assert "dedup" in card and "phone=drop" in card


def test_card_shows_evaluation_and_safety():
    card = model_card(_version())
    assert "tuned: exact_match=0.8" in card and "[0.5, 0.9]" in card and "tuned.exact_match >= 0.5" in card
    assert "## Safety" in card
    for number in ("0.75", "0.125", "0.25"):
        assert number in card
    no_safety = {**MANIFEST, "eval": {k: v for k, v in MANIFEST["eval"].items() if k != "safety"}}
    assert "not run" in model_card(_version(manifest=no_safety)).split("## Safety")[1]


def test_forced_registration_is_prominent_and_a_limitation():
    card = model_card(_version(forced=True, force_reason="hotfix for incident 42"))
    line = "Registered with --force: hotfix for incident 42"
    assert line in card.split("## Intended use")[0]
    assert "hotfix for incident 42" in card.split("## Limitations")[1]
    assert "--force" not in model_card(_version())


def test_os_user_is_shown_only_when_it_differs():
    same = {**MANIFEST, "registered_by_os_user": "alice"}
    assert "OS user" not in model_card(_version(manifest=same))
    assert "OS user" in model_card(_version())


def test_card_is_deterministic_and_built_from_the_version_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no config, no files: nothing but the record to read
    first = model_card(_version()).encode()
    assert first == model_card(_version(manifest=json.loads(json.dumps(MANIFEST)))).encode()
    assert model_card(_version(version=4)) != model_card(_version())


def test_card_of_a_version_with_an_old_or_empty_manifest():
    card = model_card(_version(manifest={}))
    assert "# support:3" in card and "unknown" in card and "not run" in card


def test_card_from_a_real_manifest(adapter_project):
    tmp, config = adapter_project
    run = json.loads((tmp / "tune/run_manifest.json").read_text())
    evaluation = json.loads((tmp / "metrics/eval.json").read_text())
    manifest = build_manifest(load_config(config), tmp / "tune", run, evaluation, {})
    card = model_card(_version(manifest=json.loads(json.dumps(manifest))))
    assert str(tmp / "data.jsonl") in card and "tuned: exact_match=0.8" in card
    assert "## Safety" in card and "not run" in card and "## License" in card
