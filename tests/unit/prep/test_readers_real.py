"""Real-world exports (issue #14): byte-order marks, non-UTF-8 text, compressed files, a CSV quote that
would swallow the following records, oversized CSV fields and parquet cells, and CSV line numbers."""

import bz2
import gzip
import json
import sys
from pathlib import Path

import pytest

from llmops_cli.errors import DataError
from llmops_cli.prep.config import PrepSection
from llmops_cli.prep.pipeline import run_prep
from llmops_cli.prep.readers import read_rows

TICKETS = [(f"how do I reset the printer on floor {i}?", f"hold the reset button for {i} seconds", "hardware")
           for i in range(10)]


def _cfg(tmp_path: Path, *sources, **kw) -> PrepSection:
    kw.setdefault("near_dup", {"enabled": False})
    kw.setdefault("fields", {"prompt": "question", "completion": "answer"})
    return PrepSection(
        sources=[s if isinstance(s, dict) else {"path": str(s)} for s in sources],
        output_dir=str(tmp_path / "out"), report=str(tmp_path / "prep.json"),
        metrics_file=str(tmp_path / "prep_metrics.json"), **kw,
    )


def _csv(rows=TICKETS) -> str:
    return "question,answer,tag\n" + "".join(f"{q},{a},{t}\n" for q, a, t in rows)


def _jsonl(rows=TICKETS) -> str:
    return "".join(json.dumps({"question": q, "answer": a, "tag": t}, ensure_ascii=False) + "\n" for q, a, t in rows)


def _kept(result) -> list[dict]:
    return [json.loads(line) for s in ("train", "validation", "test")
            for line in Path(result.outputs[s]).read_text().splitlines()]


def _quarantined(result) -> list[dict]:
    return [json.loads(line) for line in Path(result.outputs["quarantine"]).read_text().splitlines()]


def _balanced(result) -> None:
    assert result.rows_in == sum(result.splits.values()) + result.quarantined
    for stats in result.per_source.values():
        assert stats["rows_in"] == stats["rows_out"] + sum(stats["quarantined"].values())


@pytest.mark.parametrize("name,text", [("excel.csv", _csv()), ("export.jsonl", _jsonl())])
def test_a_utf8_byte_order_mark_is_skipped(tmp_path, name, text):
    path = tmp_path / name
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    result = run_prep(_cfg(tmp_path, path))
    _balanced(result)
    assert result.reasons == {} and sum(result.splits.values()) == 10
    assert {r["prompt"] for r in _kept(result)} == {q for q, _, _ in TICKETS}


@pytest.mark.parametrize("name,text", [("legacy.csv", _csv), ("legacy.jsonl", _jsonl)])
def test_latin1_input_gets_an_encoding_hint_and_reads_with_the_encoding_option(tmp_path, name, text):
    rows = [(f"où est l'imprimante {i}?", "au café étage 2", "hw") for i in range(5)]
    path = tmp_path / name
    path.write_bytes(text(rows).encode("latin-1"))
    with pytest.raises(DataError):  # every row is quarantined ...
        run_prep(_cfg(tmp_path, path))
    quarantined = [json.loads(line) for line in (tmp_path / "out/quarantine.jsonl").read_text().splitlines()]
    assert [q["reason"] for q in quarantined] == ["encoding"] * 5  # the summary's reasons table says so
    details = [q["detail"] for q in quarantined]
    first = details[0]  # ... and each says where, why and what to do
    line = 2 if name.endswith(".csv") else 1
    assert str(path) in first and "byte" in first and f"line {line}" in first
    assert "re-export as UTF-8" in first and "encoding: latin-1" in first

    result = run_prep(_cfg(tmp_path, {"path": str(path), "encoding": "latin-1"}))
    assert result.reasons == {}
    assert {r["completion"] for r in _kept(result)} == {"au café étage 2"}


def test_the_encoding_option_is_checked(tmp_path):
    with pytest.raises(ValueError, match="unknown encoding"):
        _cfg(tmp_path, {"path": "a.csv", "encoding": "latin-42"})
    with pytest.raises(ValueError, match="UTF-8"):
        _cfg(tmp_path, {"path": "a.csv", "encoding": "utf-16"})


def _zst(data: bytes) -> bytes:
    zstandard = pytest.importorskip("zstandard")
    return zstandard.ZstdCompressor().compress(data)


@pytest.mark.parametrize("name,compress", [
    ("t.jsonl.gz", gzip.compress), ("t.csv.gz", gzip.compress), ("t.csv.bz2", bz2.compress),
    ("t.jsonl.zst", _zst), ("t.json.gz", gzip.compress),
])
def test_compressed_inputs_are_read_by_suffix(tmp_path, name, compress):
    inner = name.split(".")[1]
    text = {"csv": _csv(), "jsonl": _jsonl(), "json": json.dumps(
        [{"question": q, "answer": a, "tag": t} for q, a, t in TICKETS])}[inner]
    path = tmp_path / name
    path.write_bytes(compress(text.encode("utf-8")))
    result = run_prep(_cfg(tmp_path, str(tmp_path / ("*" + name[1:]))))  # a glob over compressed files
    _balanced(result)
    assert sum(result.splits.values()) == 10 and result.reasons == {}
    assert sorted(r["prompt"] for r in _kept(result)) == sorted(q for q, _, _ in TICKETS)


def test_a_corrupt_compressed_file_and_a_missing_zstandard_give_clear_errors(tmp_path, monkeypatch):
    bad = tmp_path / "bad.jsonl.gz"
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="bad.jsonl.gz.*gzip"):
        list(read_rows(bad))
    zst = tmp_path / "a.jsonl.zst"
    zst.write_bytes(b"\x28\xb5\x2f\xfd")
    monkeypatch.setitem(sys.modules, "zstandard", None)
    with pytest.raises(DataError, match="zstandard") as err:
        list(read_rows(zst))
    assert "pip install zstandard" in (err.value.hint or "")


def test_a_stray_quote_is_quarantined_with_its_span_and_swallows_nothing(tmp_path):
    lines = _csv().splitlines(keepends=True)
    q, a, t = TICKETS[3]
    lines[4] = f'"{q},{a},{t}\n'  # data row 4 (physical line 5) opens a quote that never closes
    path = tmp_path / "helpdesk.csv"
    path.write_text("".join(lines))
    result = run_prep(_cfg(tmp_path, path))
    _balanced(result)
    assert result.rows_in == 10 and sum(result.splits.values()) == 9 and result.quarantined == 1
    (bad,) = _quarantined(result)
    assert bad["line"] == 5 and "lines 5-5" in bad["detail"] and bad["reason"] == "unparseable"
    assert {r["prompt"] for r in _kept(result)} == {q for i, (q, _, _) in enumerate(TICKETS) if i != 3}
    assert result.per_source[str(path)]["records_in"] == 10


def test_a_stray_quote_closed_by_a_later_quote_swallows_nothing(tmp_path):
    lines = _csv().splitlines(keepends=True)
    lines[4] = '"stray opening quote,x,hardware\n'
    lines[7] = 'closing here",y,hardware\n'  # would turn lines 5-8 into one valid-looking record
    path = tmp_path / "helpdesk.csv"
    path.write_text("".join(lines))
    rows = list(read_rows(path))
    assert [r.line for r in rows] == list(range(2, 12))
    assert [r.line for r in rows if r.error] == [5]  # line 8's quote is not at a field start: a literal
    assert "lines 5-5" in rows[3].error


def test_a_legitimate_multiline_field_is_one_record_with_its_first_line(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text('question,answer,tag\nq1,"first line\nsecond line",t\nq2,"x\ny",t,extra\nq3,fine,t\n')
    rows = list(read_rows(path))
    assert [r.line for r in rows] == [2, 4, 6]
    assert rows[0].record == {"question": "q1", "answer": "first line\nsecond line", "tag": "t"}
    assert rows[1].error and "more cells" in rows[1].error and "lines 4-5" in rows[1].error
    assert rows[2].record == {"question": "q3", "answer": "fine", "tag": "t"}


def test_a_huge_csv_field_is_read_and_an_oversized_record_is_quarantined_truncated(tmp_path):
    path = tmp_path / "a.csv"
    big = "z" * 200_000  # over the csv module's default field limit (131,072), under max_row_bytes
    path.write_text(f"question,answer,tag,notes\nq1,a1,t,{big}\nq2,a2,t,\"{'y' * 300_000}\"\nq3,a3,t,\n")
    rows = list(read_rows(path, max_row_bytes=250_000))
    assert [r.line for r in rows] == [2, 3, 4]
    assert rows[0].record is not None and rows[0].record["notes"] == big
    assert rows[1].reason == "too_large" and rows[1].record is None and len(rows[1].raw or "") < 3000
    assert rows[2].record == {"question": "q3", "answer": "a3", "tag": "t", "notes": ""}


def test_a_huge_parquet_cell_is_quarantined_without_being_copied(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"question": q, "answer": a, "tag": t} for q, a, t in TICKETS]
    rows[2]["answer"] = "w" * (2 * 2**20)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet")
    result = run_prep(_cfg(tmp_path, tmp_path / "a.parquet"))
    _balanced(result)
    assert result.reasons == {"too_large": 1} and sum(result.splits.values()) == 9
    assert Path(result.outputs["quarantine"]).stat().st_size < 10_000
    assert _quarantined(result)[0]["line"] == 3


def test_a_huge_cell_in_a_saved_dataset_is_quarantined_without_being_copied(tmp_path):
    from datasets import Dataset

    rows = [{"question": q, "answer": a, "tag": t} for q, a, t in TICKETS]
    rows[5]["answer"] = "w" * (2 * 2**20)
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    result = run_prep(_cfg(tmp_path, tmp_path / "saved"))
    assert result.reasons == {"too_large": 1} and sum(result.splits.values()) == 9
    assert Path(result.outputs["quarantine"]).stat().st_size < 10_000


def test_csv_line_numbers_are_the_physical_first_line_of_the_record(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text('question,answer,tag\nq1,"a\nb",t\n\nq2,x,t,extra\nq3,"broken "quote,t\n')
    rows = list(read_rows(path))
    assert [(r.line, bool(r.error)) for r in rows] == [(2, False), (5, True), (6, True)]


def test_reconciliation_counts_input_records_apart_from_the_rows_read(tmp_path, monkeypatch):
    from llmops_cli.prep import pipeline

    path = tmp_path / "a.csv"
    path.write_text(_csv())
    real = pipeline.read_rows

    def swallowing(unit, max_row_bytes, records=None):  # a parser that loses a record, as issue #14's did
        return (row for row in real(unit, max_row_bytes, records) if row.line != 5)

    monkeypatch.setattr(pipeline, "read_rows", swallowing)
    with pytest.raises(DataError, match="10 input records but 9 rows were read"):
        run_prep(_cfg(tmp_path, path))


def test_a_huge_hub_row_is_quarantined_without_being_copied(tmp_path, monkeypatch):
    import datasets

    rows = [{"question": q, "answer": a, "tag": t} for q, a, t in TICKETS]
    rows[1]["answer"] = "w" * (2 * 2**20)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", lambda name, split, streaming: iter(rows))
    result = run_prep(_cfg(tmp_path, {"hub": "org/tickets"}))
    assert result.reasons == {"too_large": 1} and sum(result.splits.values()) == 9
    assert Path(result.outputs["quarantine"]).stat().st_size < 10_000
