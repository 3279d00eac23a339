"""prep.fields.completion_template: a completion built from several input fields ("{category}: {reply}")."""

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from llmops_cli.prep.config import FieldMap, PrepSection
from llmops_cli.prep.pipeline import run_prep
from tests.conftest import write_jsonl

TICKETS = [{"id": f"t{i}", "message": f"my parcel number {i} has not arrived yet", "category": "shipping",
            "reply": f"I've asked the courier to trace order {i}."} for i in range(12)]
FIELDS = {"prompt": "message", "label": "category", "completion_template": "{category}: {reply}"}


def _cfg(tmp_path: Path, *sources: dict, **kw) -> PrepSection:
    return PrepSection(sources=list(sources), output_dir=str(tmp_path / "out"), report=str(tmp_path / "prep.json"),
                       metrics_file=str(tmp_path / "m.json"), near_dup={"enabled": False}, **kw)


def _kept(result) -> list[dict]:
    return [json.loads(line) for s in ("train", "validation", "test")
            for line in Path(result.outputs[s]).read_text().splitlines()]


def test_the_completion_is_built_from_the_template_and_the_label_stays_the_category(tmp_path):
    result = run_prep(_cfg(tmp_path, {"path": str(write_jsonl(tmp_path / "t.jsonl", TICKETS))}, fields=FIELDS))
    kept = sorted(_kept(result), key=lambda r: int(r["id"][1:]))
    assert len(kept) == 12 and result.schemas[str(tmp_path / "t.jsonl")] == "prompt_completion"
    assert kept[3]["completion"] == "shipping: I've asked the courier to trace order 3."
    assert {r["label"] for r in kept} == {"shipping"}


def test_a_source_with_its_own_completion_field_is_not_templated(tmp_path):
    feedback = [{"id": "fb1", "message": "where is my order, it is a week late", "answer": "shipping: On its way."}]
    result = run_prep(_cfg(tmp_path, {"path": str(write_jsonl(tmp_path / "t.jsonl", TICKETS))},
                           {"path": str(write_jsonl(tmp_path / "f.jsonl", feedback)), "completion_field": "answer"},
                           fields=FIELDS))
    assert next(r for r in _kept(result) if r["id"] == "fb1")["completion"] == "shipping: On its way."


@pytest.mark.parametrize("bad,reason,detail", [
    ({"reply": None}, "missing_field", "'reply'"),
    ({"reply": 7}, "wrong_type", "'reply'"),
    ({"category": " \u200b "}, "empty", "'category'"),
])
def test_a_row_missing_a_template_field_is_quarantined_naming_it(tmp_path, bad, reason, detail):
    rows = [*TICKETS[:4], {**TICKETS[4], **bad}]
    result = run_prep(_cfg(tmp_path, {"path": str(write_jsonl(tmp_path / "t.jsonl", rows))}, fields=FIELDS,
                           schema="prompt_completion"))
    assert result.reasons == {reason: 1}
    quarantined = json.loads(Path(result.outputs["quarantine"]).read_text())
    assert quarantined["line"] == 5 and detail in quarantined["detail"], quarantined


@pytest.mark.parametrize("template,match", [
    ("{category: {reply}", "not a valid template"),
    ("a fixed answer", "names no field"),
    ("{0}: {reply}", "field names"),
    ("{category.name}", "field names"),
    ("{category!r}", "field names"),
    ("{category:>10}", "field names"),
])
def test_a_malformed_template_is_a_config_error(template, match):
    with pytest.raises(ValidationError, match=match):
        FieldMap(completion_template=template)


def test_template_fields_are_listed():
    assert FieldMap(completion_template="{category}: {reply} ({category})").template_fields == ["category", "reply"]
    assert FieldMap().template_fields == []
