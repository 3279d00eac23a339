"""Near-dup across splits, stratified splits, language filter and the report."""

import json
from collections import Counter
from pathlib import Path

from llmops_cli.prep.config import PrepSection, SplitSpec
from llmops_cli.prep.neardup import NearDupIndex
from llmops_cli.prep.pipeline import assign_splits, run_prep
from tests.conftest import write_jsonl

SENTENCES = [
    "the courier left my parcel at the wrong address and nobody answers the phone at the depot",
    "i was charged twice for the same monthly subscription and need one payment refunded",
    "after the latest firmware update the watch no longer pairs with my phone over bluetooth",
    "please cancel the order i placed yesterday because i found the same item cheaper elsewhere",
    "the jacket arrived with a broken zip and i would like to return it for a full refund",
]
TAIL = "which is why i am writing to your support team again since nobody replied to my last two emails about it"


def _cfg(tmp_path: Path, data: Path, **kw) -> PrepSection:
    return PrepSection(sources=[{"path": str(data)}], output_dir=str(tmp_path / "out"),
                       report=str(tmp_path / "prep.json"), metrics_file=str(tmp_path / "prep_metrics.json"), **kw)


def _split_of(result) -> dict[str, str]:
    return {json.loads(line)["id"]: s for s in ("train", "validation", "test")
            for line in Path(result.outputs[s]).read_text().splitlines()}


def test_near_duplicates_of_eval_rows_never_stay_in_train(tmp_path):
    rows = []
    for i, sentence in enumerate(SENTENCES):
        for v in range(12):  # 12 variants of each ticket (one word differs: Jaccard ~0.86 on 3-grams)
            rows.append({"id": f"s{i}v{v}", "prompt": f"{sentence} {v} {TAIL}", "completion": "answer"})
    for i in range(200):  # unrelated filler so that every split is populated
        rows.append({"id": f"f{i}", "prompt": f"filler ticket {i} about item {i * 31 % 97} colour {i % 7}",
                     "completion": "other"})
    data = write_jsonl(tmp_path / "a.jsonl", rows)
    off = run_prep(_cfg(tmp_path / "off", data, near_dup={"enabled": False}))
    placed = _split_of(off)
    assert any(placed[f"s{i}v{v}"] != "train" for i in range(5) for v in range(12))  # leakage without near-dup
    on = run_prep(_cfg(tmp_path / "on", data, splits={"validation": 0.2, "test": 0.2},
                       near_dup={"threshold": 0.75}))
    placed = _split_of(on)
    for i in range(5):
        kept = [placed[f"s{i}v{v}"] for v in range(12) if f"s{i}v{v}" in placed]
        assert len(kept) == 1, (i, kept)  # one representative per cluster survives
    assert on.dedup["near"] == 5 * 11 and on.reasons["near_duplicate"] == 55
    assert sum(on.dedup["near_by_split"].values()) == 55
    quarantine = [json.loads(line) for line in Path(on.outputs["quarantine"]).read_text().splitlines()]
    near = [q for q in quarantine if q["reason"] == "near_duplicate"]
    assert all("near-duplicate (Jaccard~" in q["detail"] and q["row"]["id"].startswith("s") for q in near)
    # an eval row is never removed in favour of a train row
    for q in near:
        kept_id = q["detail"].rsplit(" ", 1)[-1]
        if placed[kept_id] == "train":
            assert q["detail"].split(" of ")[1].startswith("train")
    assert all(f"f{i}" in placed for i in range(200))  # distinct rows are untouched


def test_near_dup_threshold_and_index():
    index = NearDupIndex(threshold=0.7, num_perm=128, ngram=2)
    a = index.add("the quick brown fox jumps over the lazy dog near the river bank today")
    b = index.add("the quick brown fox jumps over the lazy dog near the river bank tonight")
    c = index.add("completely different words about invoices and refunds for last month")
    assert index.jaccard(a, b) > 0.7 > index.jaccard(a, c)
    assert index.resolve(["train", "test", "train"]) == {a: (b, index.jaccard(a, b))}


def test_stratified_splits_have_exact_label_fractions():
    labels = ["a"] * 100 + ["b"] * 50 + ["c"] * 10
    buckets = [((i * 2654435761) % 2**32) / 2**32 for i in range(len(labels))]
    out = assign_splits(buckets, labels, SplitSpec(validation=0.1, test=0.2, stratify=True))
    counts = Counter(zip(labels, out, strict=True))
    assert (counts["a", "test"], counts["a", "validation"]) == (20, 10)
    assert (counts["b", "test"], counts["b", "validation"]) == (10, 5)
    assert (counts["c", "test"], counts["c", "validation"]) == (2, 1)
    assert assign_splits(buckets, labels, SplitSpec(validation=0.1, test=0.2, stratify=True)) == out


def test_language_filter_is_seeded_and_reported(tmp_path):
    english = [{"prompt": f"My order number {i} has not arrived yet and I would like to know where it is.",
                "completion": "shipping"} for i in range(6)]
    german = [{"prompt": f"Meine Bestellung Nummer {i} ist noch nicht angekommen, wo ist sie bitte?",
               "completion": "shipping"} for i in range(4)]
    data = write_jsonl(tmp_path / "a.jsonl", english + german)
    result = run_prep(_cfg(tmp_path, data, language={"keep": ["en"]}, near_dup={"enabled": False}))
    assert result.reasons == {"language": 4}
    assert result.languages == {"en": 6, "de": 4}


def test_report_has_every_section_and_no_pii(tmp_path):
    rows = [{"prompt": f"refund card 4111 1111 1111 1111 for order {i} to jane{i}@example.com",
             "completion": "billing", "label": "billing" if i % 2 else "refunds"} for i in range(30)]
    rows.append({"prompt": "my key is AKIAIOSFODNN7EXAMPLE", "completion": "x", "label": "x"})
    data = write_jsonl(tmp_path / "a.jsonl", rows)
    result = run_prep(_cfg(tmp_path, data, fields={"label": "label"}))
    text = (tmp_path / "prep.json").read_text()
    report = json.loads(text)
    for key in ("reasons", "pii", "dedup", "labels", "labels_by_split", "per_source", "hashes", "pii_policy",
                "schemas", "tokenization"):
        assert key in report, key
    assert report["pii"] == {"aws_key": 1, "credit_card": 30, "email": 30}
    assert report["reasons"] == {"pii": 1}
    assert sum(report["labels"].values()) == sum(result.splits.values())
    everything = text + "".join(Path(p).read_text() for k, p in result.outputs.items() if k.endswith(("n", "t", "e"))
                                and p.endswith(".jsonl"))
    assert "4111" not in everything and "@example.com" not in everything and "AKIA" not in everything
