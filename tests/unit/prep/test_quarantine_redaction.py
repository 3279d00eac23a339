"""Issue #14: PII and secrets never reach quarantine.jsonl, whatever the reason a row was quarantined, and an id
or a label holding PII never reaches a split, the quarantine, the report or `llmops prep --json`."""

import json
from pathlib import Path

from typer.testing import CliRunner

from llmops_cli.cli.app import app
from llmops_cli.prep.config import PrepSection
from llmops_cli.prep.pipeline import run_prep
from tests.conftest import make_rows, project_yaml, write_jsonl

AWS = "AKIAIOSFODNN7EXAMPLE"
CARDS = ("4111 1111 1111 1111", "5555555555554444", "4012-8888-8888-1881", "378282246310005")


def _pii(i: int, key: bool = True) -> str:
    """A different email and card per row, and the AWS key id (so a leak names the row it came from)."""
    return f"mail quarantined.person{i}@example.com card {CARDS[i % len(CARDS)]}" + (f" key {AWS}" if key else "")


def _secrets_of(n: int) -> list[str]:
    return [*(f"quarantined.person{i}" for i in range(n)), *CARDS, AWS, "straddle.person"]


def _source(tmp_path: Path) -> tuple[Path, int]:
    """One jsonl file with a row quarantined for each reason, each carrying an email, a card and an AWS key."""
    rows = make_rows(40)
    head = '{"id": "big", "message": "'
    filler = "word " * ((1990 - len(head)) // 5)
    big = head + filler + " " * (1990 - len(head) - len(filler)) + "straddle.person@example.com " + "x" * 2000 + '"}'
    assert big.index("straddle") == 1990  # the 2,000-character head cuts this email in half
    lines = [
        json.dumps({f"owner quarantined.person0@example.com {AWS}": 1, "note": _pii(0)}),  # unknown_schema
        *(json.dumps(r) for r in rows),
        json.dumps({"id": "orig", "message": f"my parcel is lost, {_pii(1, key=False)}", "category": "shipping"}),
        json.dumps({"id": "dup", "message": f"My parcel is lost, {_pii(2, key=False)}", "category": "shipping",
                    "note": _pii(2)}),  # the same text once redacted: a duplicate
        json.dumps({"id": "e", "message": "   ", "category": "billing", "note": _pii(3)}),  # empty
        json.dumps({"id": "l", "message": "long " * 60 + _pii(4), "category": "billing"}),  # too_long
        json.dumps({"id": "w", "message": [_pii(5)], "category": "billing", "note": _pii(5)}),  # wrong_type
        json.dumps({"id": "m", "category": "billing", "note": _pii(6)}),  # missing_field
        json.dumps({"id": "k", "message": f"here is my key, {_pii(7)}", "category": "account"}),  # pii (drop)
        '{"id": "u", "message": "half a row, ' + _pii(8) + "\n",  # unparseable
        big + "\n",  # too_large: only the first 2,000 characters are kept
    ]
    path = tmp_path / "raw.jsonl"
    path.write_text("\n".join(line.rstrip("\n") for line in lines) + "\n", encoding="utf-8")
    return path, 9


def _cfg(tmp_path: Path, source: Path, **kw) -> PrepSection:
    return PrepSection(
        sources=[{"path": str(source)}], fields={"prompt": "message", "completion": "category", "label": "category"},
        output_dir=str(tmp_path / "out"), report=str(tmp_path / "prep.json"),
        metrics_file=str(tmp_path / "metrics.json"), max_chars=200, max_row_bytes=3000, **kw,
    )


def test_quarantine_holds_no_pii_whatever_the_reason(tmp_path):
    source, n = _source(tmp_path)
    result = run_prep(_cfg(tmp_path, source))
    quarantine = Path(result.outputs["quarantine"]).read_text(encoding="utf-8")
    reasons = {json.loads(line)["reason"] for line in quarantine.splitlines()}
    assert {"unknown_schema", "duplicate", "empty", "too_long", "wrong_type", "missing_field", "pii",
            "unparseable", "too_large"} <= reasons
    for secret in _secrets_of(n):
        assert secret not in quarantine, secret
    assert "[EMAIL]" in quarantine and "[CREDIT_CARD]" in quarantine and "[AWS_KEY]" in quarantine
    for name in ("train", "validation", "test"):
        text = Path(result.outputs[name]).read_text(encoding="utf-8")
        assert not any(secret in text for secret in _secrets_of(n))


def test_quarantine_follows_the_policy_but_always_hides_secrets(tmp_path):
    source, _ = _source(tmp_path)
    result = run_prep(_cfg(tmp_path, source, pii={"email": "keep", "aws_key": "keep"}))
    quarantine = Path(result.outputs["quarantine"]).read_text(encoding="utf-8")
    assert "quarantined.person3@example.com" in quarantine  # kept in the splits, so kept here too
    assert AWS not in quarantine and "4111 1111 1111 1111" not in quarantine
    assert AWS in Path(result.outputs["train"]).read_text() + Path(result.outputs["test"]).read_text() + Path(
        result.outputs["validation"]).read_text()  # keep means keep in the splits


def test_an_email_id_and_a_phone_label_reach_no_output(tmp_path):
    rows = [*make_rows(60),
            {"id": "jane.doe@example.com", "message": "where is my parcel, it is a week late", "category": "shipping"},
            {"id": "R90001", "message": "my invoice shows the wrong amount twice", "category": "call 415-555-0132"},
            {"id": "jane.doe@example.com", "message": "  ", "category": "call 415-555-0132"}]  # quarantined
    config = project_yaml(tmp_path, tmp_path / "no-model", write_jsonl(tmp_path / "raw.jsonl", rows),
                          prep={"tokenize": {"enabled": False}})
    runner = CliRunner()
    result = runner.invoke(app, ["prep", "-c", str(config), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["quarantined"] == 1 and data["pii"].get("email", 0) >= 1 and data["pii"].get("phone", 0) >= 1
    outputs = [Path(p) for k, p in data["outputs"].items() if k != "tokenized"]
    texts = {str(p): p.read_bytes().decode("utf-8", "replace") for p in outputs if p.suffix == ".jsonl"}
    texts["report"] = Path(data["report"]).read_text(encoding="utf-8")
    texts["stdout"] = result.output
    texts["parquet"] = json.dumps([_parquet_rows(p) for p in outputs if p.suffix == ".parquet"])
    for where, text in texts.items():
        for needle in ("jane.doe", "415-555-0132"):
            assert needle not in text, (needle, where)
    kept = [json.loads(line) for name in ("train", "validation", "test")
            for line in Path(data["outputs"][name]).read_text().splitlines()]
    ids = {r["id"] for r in kept if r["prompt"].startswith("where is my parcel")}
    labels = {r["label"] for r in kept if r["id"] == "R90001"}
    assert len(ids) == 1 and ids.pop().startswith("pii-") and labels == {"call [PHONE]"}
    again = json.loads(runner.invoke(app, ["prep", "-c", str(config), "--json"]).stdout)
    assert again["outputs"] and _ids(again) == _ids(data)  # the stand-in id is stable across runs


def _ids(data: dict) -> list[str]:
    return sorted(json.loads(line)["id"] for name in ("train", "validation", "test")
                  for line in Path(data["outputs"][name]).read_text().splitlines())


def _parquet_rows(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def test_an_id_holding_a_secret_drops_the_row_and_a_pseudonym_is_stable(tmp_path):
    rows = [*make_rows(30), {"id": f"key-{AWS}", "message": "my parcel never came, please help", "category": "x"},
            {"id": "bob@example.com", "message": "the app crashes when I log in today", "category": "technical"}]
    source = write_jsonl(tmp_path / "raw.jsonl", rows)
    result = run_prep(_cfg(tmp_path, source))
    quarantine = [json.loads(line) for line in Path(result.outputs["quarantine"]).read_text().splitlines()]
    assert [(q["reason"], q["row"]["id"]) for q in quarantine] == [("pii", "key-[AWS_KEY]")]
    assert result.pii == {"aws_key": 1, "email": 1}
    kept = "".join(Path(result.outputs[name]).read_text() for name in ("train", "validation", "test"))
    first = [json.loads(line)["id"] for line in kept.splitlines() if "crashes when I log in" in line]
    assert len(first) == 1 and first[0].startswith("pii-") and "bob@" not in kept
    other_salt = run_prep(_cfg(tmp_path, source, splits={"salt": "another"}))
    kept = "".join(Path(other_salt.outputs[name]).read_text() for name in ("train", "validation", "test"))
    assert first[0] not in kept  # the pseudonym is keyed by the salt
