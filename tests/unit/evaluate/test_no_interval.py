"""eval.bootstrap_samples=0: every place that shows the tuned-vs-base delta shows it without a 95% CI."""

import dataclasses

from llmops_cli.evaluate.metrics import bootstrap_delta
from llmops_cli.evaluate.run import EvalResult, render_report
from llmops_cli.registry.base import Version
from llmops_cli.registry.card import model_card

BASE, TUNED, PROD = [0.0, 0.0, 1.0, 0.0], [1.0, 1.0, 1.0, 0.0], [0.0, 1.0, 1.0, 0.0]


def _result(samples: int) -> EvalResult:
    return EvalResult(
        n=4, models={"base": {"exact_match": 0.25}, "production": {"exact_match": 0.5}, "tuned": {"exact_match": 0.75}},
        delta={"exact_match": 0.5, "exact_match_ci": bootstrap_delta(BASE, TUNED, samples, seed=0)},
        extra={"delta_production": {"exact_match": 0.25,
                                    "exact_match_ci": bootstrap_delta(PROD, TUNED, samples, seed=0)}})


def test_report_shows_the_delta_without_an_interval():
    report = render_report(_result(0))
    assert "95%" not in report
    assert "Tuned - base exact match: +0.500 (no interval: eval.bootstrap_samples=0)" in report
    assert "Tuned - production exact match: +0.250 (no interval: eval.bootstrap_samples=0)" in report
    assert report.count("95% CI") == 0 and render_report(_result(50)).count("95% CI") == 2


def test_model_card_of_an_eval_without_bootstrap_shows_no_interval():
    """The eval result is copied into the registry manifest; its card must render (no None formatted as a
    bound) and claim no interval."""
    version = Version(name="support", version=1, digest="ab" * 32, created_at="2026-12-03T06:00:00Z",
                      created_by="alice", forced=False, force_reason=None, manifest={"eval": _result(0).to_dict()})
    card = model_card(version)
    assert "- delta vs base: exact_match=+0.5" in card and "95%" not in card
    with_ci = model_card(dataclasses.replace(version, manifest={"eval": _result(50).to_dict()}))
    assert "exact_match 95% CI [" in with_ci
