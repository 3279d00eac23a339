"""Evaluate the tuned model (and the base model) on the same examples, then check the gates."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmops_cli.config.schema import ProjectConfig
from llmops_cli.evaluate.gates import GateResult, check_gates
from llmops_cli.evaluate.generate import generate, render_prompts
from llmops_cli.evaluate.metrics import aggregate, exact_match
from llmops_cli.tune.data import read_jsonl
from llmops_cli.utils import atomic_write_json, atomic_write_jsonl, sha256_file


@dataclass
class EvalResult:
    n: int
    models: dict[str, dict[str, float]]
    delta: dict[str, float]
    gates: list[GateResult] = field(default_factory=list)
    metrics_file: str = ""
    predictions_file: str = ""

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n, **self.models, "delta": self.delta,
            "gates": [g.to_dict() for g in self.gates], "gates_passed": self.passed,
            "metrics_file": self.metrics_file, "predictions_file": self.predictions_file,
        }


def run_eval(cfg: ProjectConfig, on_progress: Callable[[str, int], None] | None = None) -> EvalResult:
    """Generate for every example with each model, score, write metrics + predictions, check gates."""
    from llmops_cli.model.loading import default_device, is_adapter_dir, load_causal_lm, load_tokenizer

    ecfg = cfg.eval
    rows = read_jsonl(ecfg.data)[: ecfg.limit]
    references = [r["completion"] for r in rows]
    device = default_device()
    tuned_dir = ecfg.adapter
    tokenizer = load_tokenizer(cfg.model, path=tuned_dir)
    prompts = render_prompts(tokenizer, rows)

    candidates: dict[str, Callable[[], Any]] = {}
    if ecfg.compare_base:
        candidates["base"] = lambda: load_causal_lm(cfg.model, device=device)
    if is_adapter_dir(tuned_dir):
        candidates["tuned"] = lambda: load_causal_lm(cfg.model, device=device, adapter=tuned_dir, merge=True)
    else:  # full fine-tune: the directory is a complete model
        full = cfg.model.model_copy(update={"base": tuned_dir})
        candidates["tuned"] = lambda: load_causal_lm(full, device=device)

    models: dict[str, dict[str, float]] = {}
    predictions: dict[str, list[str]] = {}
    for name, load in candidates.items():
        model = load()
        gens = generate(model, tokenizer, prompts, ecfg.max_new_tokens, ecfg.batch_size,
                        on_batch=(lambda n, name=name: on_progress(name, n)) if on_progress else None)
        del model
        predictions[name] = gens.texts
        models[name] = {
            **aggregate(gens.texts, references),
            "seconds": round(gens.seconds, 3),
            "tokens_per_second": round(gens.new_tokens / max(gens.seconds, 1e-9), 1),
        }
    delta = {}
    if "base" in models:
        delta = {k: models["tuned"][k] - models["base"][k] for k in ("exact_match", "token_f1")}

    flat = {**models, "delta": delta, "n": len(rows)}
    result = EvalResult(
        n=len(rows), models=models, delta=delta, gates=check_gates(ecfg.gates, flat),
        metrics_file=ecfg.metrics_file, predictions_file=ecfg.predictions_file,
    )
    atomic_write_jsonl(ecfg.predictions_file, (
        {"id": r.get("id"), "reference": ref,
         **{name: preds[i] for name, preds in predictions.items()},
         "tuned_correct": bool(exact_match(predictions["tuned"][i], ref))}
        for i, (r, ref) in enumerate(zip(rows, references, strict=True))
    ))
    atomic_write_json(ecfg.metrics_file, {
        **result.to_dict(),
        "data": {"path": ecfg.data, "sha256": sha256_file(ecfg.data)},
        "model_dir": str(Path(tuned_dir)),
    })
    return result
