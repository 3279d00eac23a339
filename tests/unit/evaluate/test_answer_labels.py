"""Generation tasks with a label prefix ("billing: I've refunded ..."): label metrics read the answer's label
from its start, and the tuned-vs-base deltas carry intervals for ROUGE-L as well as exact match."""

import pytest

from llmops_cli.evaluate.metrics import AnswerLabels, rouge_l_scores, text_metrics
from llmops_cli.evaluate.run import EvalResult, paired_delta, render_report

ROWS = [{"label": "billing"}, {"label": "shipping"}, {"label": "account"}, {"label": "billing"}]
REFS = ["billing: I've refunded the duplicate charge.", "shipping: Your package is on its way.",
        "account: Your account is unlocked.", "billing: I've reversed the incorrect fee."]


def test_a_templated_answer_is_labelled_by_its_category_prefix():
    labels = AnswerLabels.from_rows(ROWS, REFS)
    answers = ["billing: I've reversed the incorrect fee.", "Shipping - on its way", "account", "billingual noise"]
    assert labels.references == ["billing", "shipping", "account", "billing"]
    # "account" alone still starts with the label; "billingual" is not the word "billing".
    assert labels.of(answers) == ["billing", "shipping", "account", "billingual noise"]
    report = labels.report(answers)
    assert report["per_label"]["billing"]["recall"] == 0.5 and report["confusion"]["billing"]["<other>"] == 1
    assert labels.report(REFS)["macro_f1"] == 1.0


def test_the_longest_label_wins():
    labels = AnswerLabels.from_rows([{"label": "account"}, {"label": "account locked"}],
                                    ["account: updated.", "account locked: unlocked now."])
    assert labels.of(["account locked: unlocked now.", "account: updated."]) == ["account locked", "account"]


def test_a_label_only_task_needs_the_whole_answer_to_be_the_label():
    """When the reference answer is the label itself, extra words are a wrong answer, as before."""
    rows = [{"label": "billing"}, {"label": "shipping"}]
    labels = AnswerLabels.from_rows(rows, ["billing", "shipping"])
    assert labels.of(["billing", "shipping shipping"]) == ["billing", "shipping shipping"]
    assert labels.report(["billing", "shipping shipping"])["confusion"]["shipping"] == {"<other>": 1}
    # Rows without a label field: the reference answer is the label (the old behaviour).
    assert AnswerLabels.from_rows([{}, {}], ["Billing", "shipping"]).references == ["billing", "shipping"]


def test_rouge_l_per_example_averages_to_the_corpus_value():
    preds, refs = ["the cat sat on the mat", "abc"], ["the cat lay on the mat", "abc"]
    scores = rouge_l_scores(preds, refs)
    assert scores == pytest.approx([5 / 6, 1.0])
    assert text_metrics(preds, refs)["rouge_l"] == pytest.approx(sum(scores) / 2)


def test_paired_delta_has_rouge_l_and_exact_match_intervals():
    models = {name: {"exact_match": em, "token_f1": 0.5, "rouge_l": rl, "bleu": bl, "macro_f1": f1}
              for name, em, rl, bl, f1 in (("base", 0.0, 0.1, 0.0, 0.1), ("tuned", 0.25, 0.8, 0.5, 0.9))}
    per_example = {"exact_match": {"base": [0.0] * 4, "tuned": [1.0, 0.0, 0.0, 0.0]},
                   "rouge_l": {"base": [0.1, 0.0, 0.2, 0.1], "tuned": [0.9, 0.7, 0.8, 0.8]}}
    delta = paired_delta(models, per_example, "base", "tuned", samples=200, seed=0)
    assert delta["rouge_l"] == pytest.approx(0.7) and delta["bleu"] == pytest.approx(0.5)
    assert delta["macro_f1"] == pytest.approx(0.8)
    assert 0 < delta["rouge_l_ci"]["ci_low"] <= delta["rouge_l_ci"]["delta"] <= delta["rouge_l_ci"]["ci_high"]
    assert delta["exact_match_ci"]["ci_low"] == 0.0 and delta["exact_match_ci"]["delta"] == 0.25
    report = render_report(EvalResult(n=4, models=models, delta=delta))
    assert "Tuned - base ROUGE-L: +0.700 (95% CI" in report
