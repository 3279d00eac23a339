import json
from pathlib import Path

from llmops_cli.prep.config import PrepSection
from llmops_cli.prep.pipeline import assign_split, run_prep
from tests.conftest import make_rows, write_jsonl


def _cfg(tmp_path: Path, *paths: Path, **kw) -> PrepSection:
    return PrepSection(
        sources=[{"path": str(p)} for p in paths],
        fields={"prompt": "message", "completion": "category", "label": "category"},
        output_dir=str(tmp_path / "out"), report=str(tmp_path / "prep.json"),
        metrics_file=str(tmp_path / "prep_metrics.json"), **kw,
    )


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_nothing_is_lost_and_every_reason_is_recorded(tmp_path):
    rows = make_rows(50)
    dirty = [*rows, rows[0] | {"id": "dup"}, {"id": "e", "message": "   ", "category": "x"},
             {"id": "t", "message": 42, "category": "x"}, {"id": "m", "category": "x"},
             {"id": "p", "message": "call me on +1 415-555-0132 about my laptop", "category": "billing"}]
    path = write_jsonl(tmp_path / "a.jsonl", dirty)
    with path.open("a") as fh:
        fh.write('{"id": "cut", "message": "half a rec\n')
    csv_path = tmp_path / "b.csv"
    csv_path.write_text('id,message,category\nc1,"my package, the one with ""shoes"", is late",shipping\n'
                        'c2,,billing\n', encoding="utf-8")
    result = run_prep(_cfg(tmp_path, path, csv_path))
    assert result.rows_in == len(dirty) + 1 + 2
    assert result.rows_in == sum(result.splits.values()) + result.quarantined
    for stats in result.per_source.values():
        assert stats["rows_in"] == stats["rows_out"] + sum(stats["quarantined"].values())
    assert result.reasons == {"duplicate": 1, "empty": 2, "wrong_type": 1, "missing_field": 1, "unparseable": 1}
    quarantine = _read(tmp_path / "out/quarantine.jsonl")
    assert {q["reason"] for q in quarantine} == set(result.reasons)
    kept = [r for s in ("train", "validation", "test") for r in _read(tmp_path / f"out/{s}.jsonl")]
    assert any(r["prompt"] == "call me on [PHONE] about my laptop" for r in kept)
    assert any("the one with \"shoes\"" in r["prompt"] for r in kept)
    report = json.loads((tmp_path / "prep.json").read_text())
    assert report["pii"] == {"phone": 1}
    assert "415-555" not in (tmp_path / "prep.json").read_text()


def test_pii_drop_policy_quarantines(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [*make_rows(5), {"id": "p", "message": "write to a@example.com now",
                                                              "category": "account"}])
    result = run_prep(_cfg(tmp_path, path, pii={"email": "drop"}))
    assert result.reasons == {"pii": 1}


def test_splits_are_deterministic_and_stable_when_rows_are_appended(tmp_path):
    rows = make_rows(300)
    first = run_prep(_cfg(tmp_path / "1", write_jsonl(tmp_path / "a.jsonl", rows)))
    placement = {r["id"]: s for s in ("train", "validation", "test")
                 for r in _read(Path(first.outputs[s]))}
    appended = [r | {"id": "N" + r["id"]} for r in make_rows(100, seed=9)]
    second = run_prep(_cfg(tmp_path / "2", write_jsonl(tmp_path / "b.jsonl", rows + appended)))
    moved = [r["id"] for s in ("train", "validation", "test") for r in _read(Path(second.outputs[s]))
             if r["id"] in placement and placement[r["id"]] != s]
    assert moved == []
    assert 0.03 < first.splits["test"] / sum(first.splits.values()) < 0.2


def test_assign_split_respects_fractions():
    counts = {"train": 0, "validation": 0, "test": 0}
    for i in range(10000):
        counts[assign_split(str(i), 0.1, 0.2, "s")] += 1
    assert abs(counts["test"] - 2000) < 200 and abs(counts["validation"] - 1000) < 150


def test_invalid_utf8_and_broken_csv_rows_are_quarantined(tmp_path):
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_bytes(b'{"id": "1", "message": "valid row here ok", "category": "billing"}\n'
                      b'{"id": "2", "message": "bad \xff\xfe bytes", "category": "billing"}\n')
    csv_path = tmp_path / "b.csv"
    csv_path.write_text('id,message,category\n1,fine message text,shipping\n2,"broken "quote,billing\n'
                        '3,too,many,cells,here\n')
    result = run_prep(_cfg(tmp_path, jsonl, csv_path))
    assert result.rows_in == sum(result.splits.values()) + result.quarantined
    assert result.reasons.get("unparseable", 0) >= 2
