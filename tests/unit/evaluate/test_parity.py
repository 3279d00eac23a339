"""Parity between two generation paths (evaluate/run.py:parity_report)."""

from llmops_cli.evaluate.run import parity_report


def test_parity_counts_disagreements_and_the_exact_match_difference():
    rows = [{"id": f"r{i}"} for i in range(4)]
    references = ["billing", "shipping", "account", "billing"]
    hf = ["billing", "shipping", "account", "shipping"]
    other = ["Billing.", "shipping", "returns", "billing"]  # normalised: r0 agrees; r2, r3 differ
    report = parity_report(hf, other, references, rows)
    assert report["n"] == 4 and report["agreement_rate"] == 0.5 and report["disagreements"] == 2
    assert report["exact_match_diff"] == 0.0  # hf 3/4 right, other 3/4 right
    assert [e["id"] for e in report["examples"]] == ["r2", "r3"]
    assert report["examples"][0] == {"id": "r2", "baseline": "account", "other": "returns"}


def test_identical_answers_agree_fully():
    report = parity_report(["a", "b"], ["a", "b"], ["a", "c"], [{}, {}])
    assert report["agreement_rate"] == 1.0 and report["examples"] == [] and report["exact_match_diff"] == 0.0
