"""Text metrics. Pure functions, checked against known values in tests."""

from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass
from typing import Any

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD-style normalisation: lower case, no punctuation, no articles, single spaces."""
    text = text.lower().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def aggregate(predictions: list[str], references: list[str]) -> dict[str, float]:
    n = len(references)
    if n == 0:
        return {"exact_match": 0.0, "token_f1": 0.0}
    return {
        "exact_match": sum(map(exact_match, predictions, references)) / n,
        "token_f1": sum(map(token_f1, predictions, references)) / n,
    }


def label_report(predictions: list[str], references: list[str]) -> dict[str, Any]:
    """Per-label precision/recall/F1, macro F1 and the confusion matrix (for label-style outputs)."""
    preds = [normalize_answer(p) for p in predictions]
    refs = [normalize_answer(r) for r in references]
    labels = sorted(set(refs))
    confusion: dict[str, dict[str, int]] = {r: {} for r in labels}
    for p, r in zip(preds, refs, strict=True):
        key = p if p in labels else "<other>"
        confusion[r][key] = confusion[r].get(key, 0) + 1
    per_label = {}
    for label in labels:
        tp = sum(1 for p, r in zip(preds, refs, strict=True) if p == r == label)
        fp = sum(1 for p, r in zip(preds, refs, strict=True) if p == label and r != label)
        fn = sum(1 for p, r in zip(preds, refs, strict=True) if r == label and p != label)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_label[label] = {"precision": precision, "recall": recall, "f1": f1, "support": tp + fn}
    macro = sum(v["f1"] for v in per_label.values()) / len(per_label) if per_label else 0.0
    return {"per_label": per_label, "macro_f1": macro, "confusion": confusion}


@dataclass(frozen=True)
class AnswerLabels:
    """How answers map to labels for label metrics. references[i] is example i's label (normalised); an
    answer's label is the whole answer where the reference answer is the label itself (a label task), else
    the longest known label the answer starts with as whole words ("billing: I've refunded ..." -> billing)."""

    references: list[str]
    whole: list[bool]

    @classmethod
    def from_rows(cls, rows: list[dict[str, Any]], completions: list[str]) -> AnswerLabels:
        """From prep's rows (their `label`, from prep.fields.label) and reference answers; a row without a
        label is labelled by its whole reference answer."""
        refs = [normalize_answer(str(r.get("label") or c)) for r, c in zip(rows, completions, strict=True)]
        return cls(refs, [normalize_answer(c) == ref for c, ref in zip(completions, refs, strict=True)])

    def of(self, answers: list[str]) -> list[str]:
        known = sorted(set(self.references), key=len, reverse=True)  # longest first: "account locked"
        out = []
        for answer, whole in zip(answers, self.whole, strict=True):
            text = normalize_answer(answer)
            prefix = None if whole else next((k for k in known if text == k or text.startswith(k + " ")), None)
            out.append(prefix or text)
        return out

    def report(self, answers: list[str]) -> dict[str, Any]:
        return label_report(self.of(answers), self.references)


def rouge_l_scores(predictions: list[str], references: list[str]) -> list[float]:
    """ROUGE-L F per example (what the paired bootstrap resamples)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return [scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references, strict=True)]


def text_metrics(predictions: list[str], references: list[str]) -> dict[str, float]:
    """ROUGE-L F (rouge-score), corpus BLEU and chrF (sacrebleu), on 0-1 scales."""
    import sacrebleu

    rouge = rouge_l_scores(predictions, references)
    return {
        "rouge_l": sum(rouge) / len(rouge) if rouge else 0.0,
        "bleu": sacrebleu.corpus_bleu(predictions, [references]).score / 100,
        "chrf": sacrebleu.corpus_chrf(predictions, [references]).score / 100,
    }


def bootstrap_delta(a: list[float], b: list[float], samples: int, seed: int) -> dict[str, float]:
    """Mean of b - a over paired examples with a percentile bootstrap 95% interval (ci_low, ci_high);
    with samples=0 the delta alone."""
    import random

    n = len(a)
    if n == 0:
        return {"delta": 0.0, "ci_low": 0.0, "ci_high": 0.0}
    diffs = [y - x for x, y in zip(a, b, strict=True)]
    mean = sum(diffs) / n
    if samples <= 0:
        # No interval was computed, so none is recorded: readers (report, terminal, model card) show an
        # interval only where ci_low/ci_high exist, never a zero-width or null one.
        return {"delta": mean}
    rng = random.Random(seed)
    stats = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(samples))
    return {"delta": mean, "ci_low": stats[int(0.025 * (samples - 1))], "ci_high": stats[int(0.975 * (samples - 1))]}


def describe_delta(ci: dict[str, float | None]) -> str:
    """'+0.300 (95% CI +0.200 .. +0.400)', or the delta alone when the bootstrap was off."""
    if ci.get("ci_low") is None or ci.get("ci_high") is None:
        return f"{ci['delta']:+.3f} (no interval: eval.bootstrap_samples=0)"
    return f"{ci['delta']:+.3f} (95% CI {ci['ci_low']:+.3f} .. {ci['ci_high']:+.3f})"


def percentiles_ms(values_s: list[float]) -> dict[str, float | None]:
    from llmops_cli.monitor.summary import percentile

    ordered = sorted(v * 1000 for v in values_s)
    return {"latency_p50_ms": percentile(ordered, 0.5), "latency_p95_ms": percentile(ordered, 0.95)}
