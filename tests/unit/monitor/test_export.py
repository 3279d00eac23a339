import json

from llmops_cli.monitor.config import MonitorSection
from llmops_cli.monitor.export import export_dataset
from llmops_cli.monitor.summary import summarize
from tests.unit.monitor.logdata import request, write_log


def _setup(tmp_path, **export):
    recs = [request(0, prompt="I was charged twice for my order", response="shipping"),
            request(1, prompt="Where is my parcel, it is late", response="I'm sorry, I cannot help with that"),
            request(2, prompt="Reset my password please", response="account"),
            request(3, prompt="My invoice is wrong this month", response="billing"),
            request(4)]  # content logging off
    write_log(tmp_path / "requests.jsonl", recs)
    write_log(tmp_path / "feedback.jsonl", [
        {"response_id": "chatcmpl-req-0", "rating": 1, "comment": "wrong", "correction": "billing"},
        {"response_id": "chatcmpl-req-1", "rating": 2, "correction": "shipping"},
        {"response_id": "chatcmpl-req-3", "rating": 5},
        {"response_id": "chatcmpl-req-4", "rating": 1, "correction": "billing"},
    ])
    out = {"output": str(tmp_path / "fb/export.jsonl"), "review_output": str(tmp_path / "fb/review.jsonl"), **export}
    cfg = MonitorSection(request_log=str(tmp_path / "requests.jsonl"), feedback_log=str(tmp_path / "feedback.jsonl"),
                         output=str(tmp_path / "m.json"), drift={"enabled": False}, export=out)
    return cfg, summarize(cfg, write=False)


def test_export_writes_corrected_rows_and_review_rows(tmp_path):
    cfg, summary = _setup(tmp_path)
    result = export_dataset(cfg, summary)
    rows = [json.loads(line) for line in (tmp_path / "fb/export.jsonl").read_text().splitlines()]
    assert [(r["id"], r["prompt"], r["completion"]) for r in rows] == [
        ("fb-chatcmpl-req-0", "I was charged twice for my order", "billing"),
        ("fb-chatcmpl-req-1", "Where is my parcel, it is late", "shipping")]
    assert rows[1]["reasons"] == ["low_rating", "refusal"] and rows[0]["comment"] == "wrong"
    assert result.exported == 2 and result.for_review == 0
    assert result.low_rated_without_prompt == 1  # req-4 was logged without its prompt
    assert result.reasons == {"low_rating": 2, "refusal": 1}


def test_flagged_without_correction_goes_to_review(tmp_path):
    cfg, summary = _setup(tmp_path)
    summary.interactions.append({"response_id": "x", "model": "m:1", "ts": 1.0, "prompt": "p", "response": "[EMAIL]",
                                 "flags": ["pii"]})
    result = export_dataset(cfg, summary)
    review = [json.loads(line) for line in (tmp_path / "fb/review.jsonl").read_text().splitlines()]
    assert [r["id"] for r in review] == ["fb-x"] and "completion" not in review[0]
    assert result.for_review == 1
    cfg.export.include_flagged = False
    assert export_dataset(cfg, summary).for_review == 0


def test_prep_accepts_the_exported_dataset(tmp_path):
    """The loop closes: prep reads the export with the demo's field names (message / category)."""
    from llmops_cli.prep.config import PrepSection
    from llmops_cli.prep.pipeline import run_prep

    cfg, summary = _setup(tmp_path, prompt_field="message", completion_field="category")
    export_dataset(cfg, summary)
    prep = PrepSection(sources=[{"path": str(tmp_path / "fb/export.jsonl")}],
                       fields={"id": "id", "prompt": "message", "completion": "category", "label": "category"},
                       min_chars=8, output_dir=str(tmp_path / "processed"), report=str(tmp_path / "prep.json"),
                       metrics_file=str(tmp_path / "prep_metrics.json"))
    run_prep(prep)
    out = []
    for split in ("train", "validation", "test"):
        path = tmp_path / "processed" / f"{split}.jsonl"
        out += [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    assert sorted((r["prompt"], r["completion"]) for r in out) == [
        ("I was charged twice for my order", "billing"), ("Where is my parcel, it is late", "shipping")]
