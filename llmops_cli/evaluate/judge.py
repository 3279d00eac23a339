"""LLM-as-judge: rubric grading by a model behind an OpenAI-compatible endpoint."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from llmops_cli.evaluate.backends import EndpointClient
from llmops_cli.evaluate.config import JudgeSpec

# The one reply format the judge is asked for; anything else is a failed judgment, never a guess
# (a lenient parser read "On a scale of 1 to 5, I give it 4." as 1 and "Score: -2" as 2).
_SCORE = re.compile(r"\s*Score:\s*(\d{1,3})\s*", re.I)


def parse_score(text: str, scale: int) -> float | None:
    """The N of a reply that is exactly 'Score: N' with 1 <= N <= scale, else None (a failure)."""
    match = _SCORE.fullmatch(text or "")
    if not match:
        return None
    value = float(match.group(1))
    return value if 1 <= value <= scale else None


def judge(spec: JudgeSpec, requests: list[str], references: list[str], answers: list[str],
          concurrency: int = 8) -> dict[str, Any]:
    """Mean score (1..scale and normalised to 0-1) and the count of judge failures (never a crash)."""
    client = EndpointClient(str(spec.url), spec.model, spec.api_key_env, timeout_s=spec.timeout_s)

    def one(i: int) -> float | None:
        prompt = (f"{spec.rubric}\nRate on a scale of 1 to {spec.scale}.\n\nRequest: {requests[i]}\n"
                  f"Reference answer: {references[i]}\nAnswer to grade: {answers[i]}\n\n"
                  f"Reply with exactly one line, 'Score: N', where N is a whole number from 1 to {spec.scale}, "
                  "and nothing else.")
        try:
            text, _, _ = client.chat([{"role": "user", "content": prompt}], max_tokens=16)
        except Exception:  # noqa: BLE001 - a judge failure is counted, not fatal
            return None
        return parse_score(text, spec.scale)

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        scores = list(pool.map(one, range(len(answers))))
    valid = [s for s in scores if s is not None]
    failure_rate = (len(scores) - len(valid)) / len(scores) if scores else 0.0
    mean = sum(valid) / len(valid) if valid else None
    if failure_rate > spec.max_failure_rate:
        mean = None  # the judged subset may be anything but representative: no score to gate on
    return {"judge_score": mean, "judge_score_norm": (mean - 1) / (spec.scale - 1) if mean is not None else None,
            "judge_failures": len(scores) - len(valid), "judged": len(valid),
            "judge_failure_rate": round(failure_rate, 6)}
