import pytest

from llmops_cli.evaluate.gates import check_gates, parse_gate
from llmops_cli.evaluate.metrics import aggregate, exact_match, normalize_answer, token_f1


def test_normalize_and_exact_match():
    assert normalize_answer("The  Billing!") == "billing"
    assert exact_match("Billing.", "billing") == 1.0
    assert exact_match("billing issue", "billing") == 0.0


def test_token_f1_known_values():
    assert token_f1("the cat sat", "cat sat down") == pytest.approx(0.8)  # p=1, r=2/3
    assert token_f1("", "") == 1.0
    assert token_f1("dog", "cat") == 0.0


def test_aggregate():
    assert aggregate(["a", "b", "c", "x"], ["a", "b", "c", "d"]) == {"exact_match": 0.75, "token_f1": 0.75}


def test_gates_pass_and_fail():
    metrics = {"tuned": {"exact_match": 0.8}, "delta": {"exact_match": -0.02}}
    results = check_gates(["tuned.exact_match >= 0.8", "delta.exact_match >= -0.01", "base.exact_match > 0"],
                          metrics)
    assert [r.passed for r in results] == [True, False, False]
    assert results[2].reason == "metric not found"


def test_gate_syntax():
    assert parse_gate("latency_p95_ms <= 500").threshold == 500
    with pytest.raises(ValueError):
        parse_gate("exact_match is high")
