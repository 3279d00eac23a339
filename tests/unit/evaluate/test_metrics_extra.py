import pytest

from llmops_cli.evaluate.judge import parse_score
from llmops_cli.evaluate.metrics import bootstrap_delta, label_report, percentiles_ms, text_metrics


def test_label_report_known_values():
    preds = ["billing", "billing", "shipping", "account", "nonsense"]
    refs = ["billing", "shipping", "shipping", "account", "account"]
    report = label_report(preds, refs)
    assert report["per_label"]["billing"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3,
                                                            "support": 1})
    assert report["per_label"]["shipping"]["recall"] == 0.5
    assert report["per_label"]["account"]["f1"] == pytest.approx(2 / 3)
    assert report["confusion"]["account"] == {"account": 1, "<other>": 1}
    assert report["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 2 / 3) / 3)


def test_text_metrics_known_values():
    same = text_metrics(["the cat sat on the mat"], ["the cat sat on the mat"])
    assert same == pytest.approx({"rouge_l": 1.0, "bleu": 1.0, "chrf": 1.0})
    # ROUGE-L: LCS "the cat on the mat" = 5 of 6 tokens each side -> F = 5/6
    partial = text_metrics(["the cat sat on the mat"], ["the cat lay on the mat"])
    assert partial["rouge_l"] == pytest.approx(5 / 6)
    assert 0 < partial["bleu"] < 1 and 0 < partial["chrf"] < 1
    assert text_metrics(["abc"], ["xyz"])["rouge_l"] == 0.0


def test_bootstrap_interval_brackets_the_delta_and_is_seeded():
    a = [0.0] * 50 + [1.0] * 50
    b = [1.0] * 80 + [0.0] * 20
    ci = bootstrap_delta(a, b, samples=500, seed=1)
    assert ci["delta"] == pytest.approx(0.3)
    assert ci["ci_low"] < ci["delta"] < ci["ci_high"]
    assert bootstrap_delta(a, b, samples=500, seed=1) == ci
    assert bootstrap_delta(a, a, samples=200, seed=0) == {"delta": 0.0, "ci_low": 0.0, "ci_high": 0.0}


def test_latency_percentiles():
    assert percentiles_ms([0.01 * i for i in range(1, 101)]) == pytest.approx(
        {"latency_p50_ms": 505.0, "latency_p95_ms": 950.5})


@pytest.mark.parametrize("text,score", [
    ("Score: 4", 4.0), (" score: 5\n", 5.0), ("I'd say **3**/5.", None), ("score=5.0", None), ("Score: 9", None),
    ("no idea", None), ("0", None), ("On a scale of 1 to 5, I give it 4.", None), ("Score: -2", None),
    ("Score: 4. Great answer", None)])
def test_judge_score_parsing(text, score):
    assert parse_score(text, 5) == score


def test_no_interval_when_the_bootstrap_is_off():
    from llmops_cli.evaluate.metrics import describe_delta

    ci = bootstrap_delta([0, 0, 1], [1, 1, 1], samples=0, seed=0)
    assert ci == {"delta": pytest.approx(2 / 3)}
    assert "95%" not in describe_delta(ci) and "bootstrap_samples=0" in describe_delta(ci)
    assert "95% CI" in describe_delta(bootstrap_delta([0, 0, 1], [1, 1, 1], samples=50, seed=0))
