"""Inputs, schemas and the bad-input list of the issue: each gives a clear error or a quarantined row."""

import json
from pathlib import Path

import pytest

from llmops_cli.errors import DataError
from llmops_cli.prep.config import PrepSection
from llmops_cli.prep.pipeline import run_prep
from tests.conftest import make_rows, write_jsonl


def _cfg(tmp_path: Path, *sources, **kw) -> PrepSection:
    kw.setdefault("near_dup", {"enabled": False})
    return PrepSection(
        sources=[s if isinstance(s, dict) else {"path": str(s)} for s in sources],
        output_dir=str(tmp_path / "out"), report=str(tmp_path / "prep.json"),
        metrics_file=str(tmp_path / "prep_metrics.json"), **kw,
    )


def _kept(result) -> list[dict]:
    return [json.loads(line) for s in ("train", "validation", "test")
            for line in Path(result.outputs[s]).read_text().splitlines()]


def _balanced(result) -> None:
    assert result.rows_in == sum(result.splits.values()) + result.quarantined
    for stats in result.per_source.values():
        assert stats["rows_in"] == stats["rows_out"] + sum(stats["quarantined"].values())


PC = [{"id": f"p{i}", "prompt": f"how do I reset router model {i}?", "completion": f"hold button {i}"}
      for i in range(20)]


def test_json_parquet_glob_and_saved_dataset_sources(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset, DatasetDict

    (tmp_path / "in").mkdir()
    write_jsonl(tmp_path / "in/a.jsonl", PC[:5])
    write_jsonl(tmp_path / "in/b.jsonl", PC[5:8])
    (tmp_path / "c.json").write_text(json.dumps(PC[8:11]))
    pq.write_table(pa.Table.from_pylist(PC[11:15]), tmp_path / "d.parquet")
    Dataset.from_list(PC[15:18]).save_to_disk(str(tmp_path / "saved"))
    DatasetDict({"train": Dataset.from_list(PC[18:19]), "extra": Dataset.from_list(PC[19:])}).save_to_disk(
        str(tmp_path / "saved_dict"))
    result = run_prep(_cfg(tmp_path, tmp_path / "in/*.jsonl", tmp_path / "c.json", tmp_path / "d.parquet",
                           tmp_path / "saved", {"path": str(tmp_path / "saved_dict"), "split": "train"}))
    _balanced(result)
    assert result.rows_in == 19 and sum(result.splits.values()) == 19
    assert {r["id"] for r in _kept(result)} == {f"p{i}" for i in range(19)}
    assert len(result.per_source) == 6
    # parquet written next to jsonl, same rows
    parquet_rows = sum(pq.read_table(result.outputs[f"{s}_parquet"]).num_rows for s in ("train", "validation", "test"))
    assert parquet_rows == 19


def test_schemas_alpaca_openai_sharegpt_mix_into_one_shape(tmp_path):
    alpaca = [{"instruction": "Summarise", "input": "The parcel is late.", "output": "Late parcel."},
              {"instruction": "Say hi", "output": "hi"}]
    openai = [{"messages": [{"role": "system", "content": "Be brief."},
                            {"role": "user", "content": "first question"},
                            {"role": "assistant", "content": "first answer"},
                            {"role": "user", "content": [{"type": "text", "text": "second question"}]},
                            {"role": "assistant", "content": "second answer"}]},
              {"messages": [{"role": "user", "content": "only user"}]}]  # no answer: quarantined
    sharegpt = [{"conversations": [{"from": "human", "value": "q?"}, {"from": "gpt", "value": "a."}]}]
    result = run_prep(_cfg(tmp_path, write_jsonl(tmp_path / "alpaca.jsonl", alpaca),
                           write_jsonl(tmp_path / "chat.jsonl", openai), write_jsonl(tmp_path / "sg.jsonl", sharegpt)))
    _balanced(result)
    assert set(result.schemas.values()) == {"alpaca", "messages", "sharegpt"}
    assert result.reasons == {"bad_conversation": 1}
    rows = {r["completion"]: r for r in _kept(result)}
    assert rows["Late parcel."]["prompt"] == "Summarise\n\nThe parcel is late."
    assert rows["second answer"]["prompt"] == "second question"
    assert rows["second answer"]["system"] == "Be brief."
    assert rows["second answer"]["history"] == [{"role": "user", "content": "first question"},
                                                {"role": "assistant", "content": "first answer"}]
    assert rows["a."]["prompt"] == "q?"


def test_configurable_field_names_and_system_prompt(tmp_path):
    rows = [{"q": "where is my parcel now", "a": "shipping", "ident": 7}]
    cfg = _cfg(tmp_path, write_jsonl(tmp_path / "x.jsonl", rows), fields={"prompt": "q", "completion": "a",
                                                                          "id": "ident"},
               system_prompt="You classify tickets.")
    kept = _kept(run_prep(cfg))
    assert kept == [{"id": "7", "prompt": "where is my parcel now", "completion": "shipping",
                     "system": "You classify tickets."}]


def test_text_schema_for_continued_pretraining(tmp_path):
    rows = [{"text": f"Document number {i} talks about topic {i * 7}."} for i in range(10)]
    result = run_prep(_cfg(tmp_path, write_jsonl(tmp_path / "t.jsonl", rows)))
    assert result.schemas == {str(tmp_path / "t.jsonl"): "text"}
    assert all(set(r) == {"id", "text"} for r in _kept(result))


def test_mixed_schemas_across_files_give_a_clear_error(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", PC[:3])
    write_jsonl(tmp_path / "b.jsonl", [{"text": "plain pre-training text"}])
    with pytest.raises(DataError, match="mixed schemas.*a.jsonl.*chat.*b.jsonl.*text"):
        run_prep(_cfg(tmp_path, tmp_path / "*.jsonl"))


def test_rows_matching_no_schema_are_quarantined(tmp_path):
    result = run_prep(_cfg(tmp_path, write_jsonl(tmp_path / "a.jsonl", [{"foo": 1}, *PC[:3]])))
    assert result.reasons == {"unknown_schema": 1} and sum(result.splits.values()) == 3


@pytest.mark.parametrize("record,reason", [
    ({"prompt": 42, "completion": "x"}, "wrong_type"),
    ({"prompt": ["a"], "completion": "x"}, "wrong_type"),
    ({"prompt": "hello there", "completion": {"a": 1}}, "wrong_type"),
    ({"prompt": "hello there", "completion": None}, "missing_field"),
    ({"prompt": "  \u200b ", "completion": "x"}, "empty"),
])
def test_wrong_field_types_are_quarantined_with_their_reason(tmp_path, record, reason):
    result = run_prep(_cfg(tmp_path, write_jsonl(tmp_path / "a.jsonl", [*PC[:3], record])))
    assert result.reasons == {reason: 1}
    quarantined = json.loads(Path(result.outputs["quarantine"]).read_text())
    assert quarantined["reason"] == reason and quarantined["line"] == 4


def test_one_50mb_row_is_quarantined_without_being_copied(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", PC[:3])
    with path.open("a") as fh:
        fh.write(json.dumps({"prompt": "x" * (50 * 2**20), "completion": "y"}) + "\n")
    result = run_prep(_cfg(tmp_path, path))
    assert result.reasons == {"too_large": 1}
    assert Path(result.outputs["quarantine"]).stat().st_size < 10_000


@pytest.mark.parametrize("name,content,match", [
    ("missing.jsonl", None, "source not found"),
    ("data.txt", "hello", "unsupported file type '.txt'"),
    ("empty.jsonl", "", "no input rows"),
    ("empty.csv", "", "no input rows"),
    ("bad.json", "{not json", "not a valid JSON file"),
    ("bad.parquet", "not parquet", "not a readable parquet file"),
])
def test_bad_sources_give_clear_errors(tmp_path, name, content, match):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=match):
        run_prep(_cfg(tmp_path, path))


def test_plain_directory_and_unreachable_hub_give_clear_errors(tmp_path, monkeypatch):
    (tmp_path / "folder").mkdir()
    with pytest.raises(DataError, match="not a Hugging Face save_to_disk dataset"):
        run_prep(_cfg(tmp_path, tmp_path / "folder"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="hub dataset 'someone/data'.*HF_HUB_OFFLINE"):
        run_prep(_cfg(tmp_path, {"hub": "someone/data"}))


def test_invalid_utf8_and_broken_csv_quote_are_quarantined(tmp_path):
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_bytes(b'{"prompt": "valid row here ok", "completion": "billing"}\n'
                      b'{"prompt": "bad \xff\xfe bytes", "completion": "billing"}\n')
    csv_path = tmp_path / "b.csv"
    csv_path.write_text('prompt,completion\nfine message text,shipping\n"broken "quote,billing\n'
                        'too,many,cells,here\nlast good row,returns\n')
    result = run_prep(_cfg(tmp_path, jsonl, csv_path))
    _balanced(result)
    assert result.reasons == {"unparseable": 2, "encoding": 1}
    details = [json.loads(line)["detail"] for line in Path(result.outputs["quarantine"]).read_text().splitlines()]
    assert any("invalid UTF-8" in d for d in details) and any("more cells" in d for d in details)
    assert {r["prompt"] for r in _kept(result)} == {"valid row here ok", "fine message text", "last good row"}


def test_source_weights_and_sample_counts_are_deterministic_and_accounted(tmp_path):
    big = write_jsonl(tmp_path / "big.jsonl", [r | {"id": f"B{i}"} for i, r in enumerate(make_rows(400))])
    small = write_jsonl(tmp_path / "small.jsonl", make_rows(100, seed=3))
    cfg = _cfg(tmp_path, {"path": str(big), "weight": 0.25}, {"path": str(small), "max_rows": 30},
               fields={"prompt": "message", "completion": "category"}, dedup=False)
    first = run_prep(cfg)
    _balanced(first)
    assert first.per_source[str(small)]["rows_out"] == 30
    assert 60 < first.per_source[str(big)]["rows_out"] < 140
    assert first.reasons["sampled_out"] == 70 + (400 - first.per_source[str(big)]["rows_out"])
    second = run_prep(cfg)
    assert sorted(r["id"] for r in _kept(first)) == sorted(r["id"] for r in _kept(second))


def test_invalid_utf8_inside_a_csv_spoils_only_its_row(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes(b"prompt,completion\nfirst fine row,a\nbad \xff\xfe row,b\nthird fine row,c\n")
    result = run_prep(_cfg(tmp_path, path))
    assert result.reasons == {"encoding": 1}
    assert {r["prompt"] for r in _kept(result)} == {"first fine row", "third fine row"}
    assert "invalid UTF-8" in Path(result.outputs["quarantine"]).read_text()


def test_hub_dataset_is_streamed_when_reachable(tmp_path, monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(name, split, streaming):
        calls.append((name, split, streaming))
        if name == "private/gone":
            raise FileNotFoundError("Dataset 'private/gone' doesn't exist on the Hub")
        return iter(PC[:4])

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    result = run_prep(_cfg(tmp_path, {"hub": "org/support", "split": "train"}))
    assert calls == [("org/support", "train", True)]
    assert result.per_source == {"hub:org/support[train]": {"records_in": 4, "rows_in": 4, "rows_out": 4,
                                                            "quarantined": {}}}
    with pytest.raises(DataError, match="'private/gone' is not reachable: Dataset 'private/gone' doesn't exist"):
        run_prep(_cfg(tmp_path, {"hub": "private/gone"}))
