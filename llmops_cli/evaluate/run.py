"""Evaluate the tuned model against the base, production and an endpoint on the same examples; gates.

Every candidate answers the same prompts; metrics, deltas with bootstrap intervals, latency, safety,
judge scores, prompt variants and HF/endpoint parity are written together so that `register` and CI
act on one file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from llmops_cli.config.schema import ProjectConfig
from llmops_cli.evaluate.gates import GateResult, check_gates
from llmops_cli.evaluate.generate import Generations, generate, reference_perplexity, render_prompts
from llmops_cli.evaluate.metrics import (
    AnswerLabels,
    aggregate,
    bootstrap_delta,
    describe_delta,
    exact_match,
    normalize_answer,
    percentiles_ms,
    rouge_l_scores,
    text_metrics,
)
from llmops_cli.evaluate.tools import expand_tool_steps, reference_text, tool_metrics
from llmops_cli.prep.schemas import example_messages
from llmops_cli.tune.data import prompt_messages, read_jsonl
from llmops_cli.utils import atomic_write_json, atomic_write_jsonl, atomic_write_text, sha256_file

Progress = Callable[[str, int], None]


@dataclass
class EvalResult:
    n: int
    models: dict[str, dict[str, Any]]
    delta: dict[str, Any]
    gates: list[GateResult] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    metrics_file: str = ""
    predictions_file: str = ""
    report_file: str = ""

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n, **self.models, "delta": self.delta, **self.extra,
            "gates": [g.to_dict() for g in self.gates], "gates_passed": self.passed,
            "metrics_file": self.metrics_file, "predictions_file": self.predictions_file,
            "report_file": self.report_file,
        }


def _score(gens: Generations, references: list[str], labels: AnswerLabels) -> dict[str, Any]:
    metrics: dict[str, Any] = {**aggregate(gens.texts, references), **text_metrics(gens.texts, references)}
    metrics["macro_f1"] = labels.report(gens.texts)["macro_f1"]
    metrics.update(percentiles_ms(gens.latencies))  # per request; null when the backend gave no timings
    metrics["latency_measure"] = gens.latency_measure
    metrics["seconds"] = round(gens.seconds, 3)
    metrics["tokens_per_second"] = round(gens.new_tokens / max(gens.seconds, 1e-9), 1)
    if gens.ttft:
        ttft = percentiles_ms(gens.ttft)
        metrics["ttft_p50_ms"], metrics["ttft_p95_ms"] = ttft["latency_p50_ms"], ttft["latency_p95_ms"]
    return metrics


def _production_dir(cfg: ProjectConfig) -> tuple[str | None, str]:
    """The materialised NAME@production version, or None with the reason it is skipped."""
    from llmops_cli.errors import RegistryError
    from llmops_cli.registry.factory import open_registry

    try:
        registry = open_registry(cfg)
        version = registry.resolve(f"{cfg.project.name}@production")
        return str(registry.materialize(version)), version.ref
    except RegistryError as exc:
        return None, f"skipped: {exc.message}"


def run_eval(cfg: ProjectConfig, on_progress: Progress | None = None) -> EvalResult:
    """Generate for every example with each candidate, score, write metrics + predictions + report, gate."""
    from llmops_cli.model.identity import evaluated_model_identity
    from llmops_cli.model.loading import default_device, is_adapter_dir, load_causal_lm, load_tokenizer

    ecfg = cfg.eval
    # Every call step of a tool conversation is a case of its own, before the conversation's final answer.
    rows = expand_tool_steps(read_jsonl(ecfg.data)[: ecfg.limit])
    if not Path(ecfg.adapter).is_dir():  # else the path is tried as a hub id and the error blames the hub
        from llmops_cli.errors import DataError

        raise DataError(f"no tuned model at {ecfg.adapter} — run llmops tune first",
                        hint="`llmops tune` (or `dvc repro tune`) writes it, or point eval.adapter at a model dir")
    # Hashed before any generation: the results are bound to exactly this content (register checks it).
    identity = evaluated_model_identity(ecfg.adapter, cfg.model)
    device = default_device()
    tokenizer = load_tokenizer(cfg.model, path=ecfg.adapter)
    references = [reference_text(tokenizer, r, example_messages(r)) for r in rows]
    labels = AnswerLabels.from_rows(rows, references)
    conversations = [prompt_messages(r) for r in rows]
    if ecfg.endpoint and any(r.get("tools") for r in rows):
        from llmops_cli.errors import ConfigError

        raise ConfigError("eval.endpoint cannot score tool-calling conversations yet (the data has tools)",
                          hint="evaluate the tuned model in process (unset eval.endpoint); `llmops serve` answers "
                               "tools, checked by tests/e2e/test_tools_demo.py")
    prompts = render_prompts(tokenizer, rows)

    def count_tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    if ecfg.safety:  # a probe budget too short to show a leak is a config error: refused before any generation
        from llmops_cli.evaluate.safety import load_probes, safety_budget

        safety_budget(ecfg.safety_max_new_tokens, load_probes(ecfg.probes_file), count_tokens)

    def loader(model_dir: str) -> Callable[[], Any]:
        if is_adapter_dir(model_dir):
            return lambda: load_causal_lm(cfg.model, device=device, adapter=model_dir, merge=True)
        return lambda: load_causal_lm(cfg.model.model_copy(update={"base": model_dir}), device=device)

    candidates: dict[str, tuple[Callable[[], Any], str | None]] = {}
    if ecfg.compare_base:
        candidates["base"] = (lambda: load_causal_lm(cfg.model, device=device), None)
    candidates["tuned"] = (loader(ecfg.adapter), ecfg.adapter)
    extra: dict[str, Any] = {}
    if ecfg.compare_production:
        prod_dir, note = _production_dir(cfg)
        extra["production_ref"] = note
        if prod_dir:
            candidates["production"] = (loader(prod_dir), prod_dir)

    def hf_answers(model: Any, name: str, convs: list[list[dict[str, str]]],
                   max_new_tokens: int | None = None) -> list[str]:
        rendered = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in convs]
        return generate(model, tokenizer, rendered, max_new_tokens or ecfg.max_new_tokens, ecfg.batch_size,
                        on_batch=(lambda n: on_progress(name, n)) if on_progress else None).texts

    models: dict[str, dict[str, Any]] = {}
    predictions: dict[str, list[str]] = {}
    # vLLM runs first, in one child process per set of weights: every candidate with eval.backend=vllm,
    # the tuned model alone for parity with the hf path.
    vllm_names = list(candidates) if ecfg.backend == "vllm" else (["tuned"] if ecfg.parity else [])
    vllm_gens = _vllm_generations(cfg, {n: candidates[n][1] for n in vllm_names}, tokenizer, prompts)
    hf_tuned: list[str] | None = None
    for name, (load, _model_dir) in candidates.items():
        if ecfg.backend == "vllm":
            gens = vllm_gens[name]
            model = load() if ecfg.perplexity or name == "tuned" else None
            if name == "tuned" and ecfg.parity:
                hf_tuned = generate(model, tokenizer, prompts, ecfg.max_new_tokens, ecfg.batch_size).texts
        else:
            model = load()
            gens = generate(model, tokenizer, prompts, ecfg.max_new_tokens, ecfg.batch_size,
                            on_batch=(lambda n, name=name: on_progress(name, n)) if on_progress else None)
            hf_tuned = gens.texts if name == "tuned" else hf_tuned
        predictions[name] = gens.texts
        models[name] = {**_score(gens, references, labels), **tool_metrics(rows, gens.texts)}
        if ecfg.perplexity and model is not None:
            models[name]["perplexity"] = reference_perplexity(model, tokenizer, prompts, references)
        if name == "tuned" and model is not None:
            answer = partial(hf_answers, model)
            if ecfg.safety:
                from llmops_cli.evaluate.safety import run_safety

                # The probes' own budget (eval.safety_max_new_tokens or derived), not eval.max_new_tokens.
                extra["safety"] = run_safety(partial(answer, "safety"), count_tokens, ecfg.probes_file,
                                             ecfg.safety_max_new_tokens)
            if ecfg.prompt_variants:
                extra["variants"] = {}
                for variant in ecfg.prompt_variants:
                    varied = [[*([{"role": "system", "content": variant.system}] if variant.system else []),
                               *[m for m in conv if m["role"] != "system"]] for conv in conversations]
                    extra["variants"][variant.name] = aggregate(answer(variant.name, varied), references)
        model = None  # free it before the next candidate loads

    if ecfg.endpoint:
        from llmops_cli.evaluate.backends import EndpointClient

        client = EndpointClient(ecfg.endpoint, ecfg.endpoint_model or cfg.project.name, ecfg.api_key_env)
        gens = client.generate(conversations, ecfg.max_new_tokens, ecfg.batch_size, stream=True,
                               on_done=(lambda n: on_progress("endpoint", n)) if on_progress else None)
        predictions["endpoint"] = gens.texts
        failures = getattr(gens, "failures", 0)
        models["endpoint"] = {**_score(gens, references, labels), "failures": failures,
                              "failure_rate": failures / len(rows) if rows else 0.0}
        extra.setdefault("parity", {})["endpoint"] = parity_report(predictions["tuned"], gens.texts, references, rows)
    if ecfg.parity and hf_tuned is not None:
        extra.setdefault("parity", {})["vllm"] = {
            **parity_report(hf_tuned, vllm_gens["tuned"].texts, references, rows), "baseline": "hf"}

    if ecfg.judge.url:
        from llmops_cli.evaluate.judge import judge

        models["tuned"].update(judge(ecfg.judge, [r["prompt"] for r in rows], references, predictions["tuned"]))

    per_example = {
        "exact_match": {name: [exact_match(p, r) for p, r in zip(preds, references, strict=True)]
                        for name, preds in predictions.items()},
        "rouge_l": {name: rouge_l_scores(preds, references) for name, preds in predictions.items()},
    }
    em = per_example["exact_match"]
    delta: dict[str, Any] = {}
    if "base" in models:
        delta = paired_delta(models, per_example, "base", "tuned", ecfg.bootstrap_samples, ecfg.seed)
    if "production" in models:
        extra["delta_production"] = paired_delta(models, per_example, "production", "tuned",
                                                 ecfg.bootstrap_samples, ecfg.seed)
    extra["labels"] = {name: labels.report(preds) for name, preds in predictions.items()}

    flat = {**models, **extra, "delta": delta, "n": len(rows)}
    # No production version yet (the first release): gates that compare with it cannot apply.
    no_production = {} if "production" in models else {
        key: str(extra.get("production_ref") or "production comparison off (eval.compare_production)"
                 ).removeprefix("skipped: ")
        for key in ("production", "delta_production")}
    # A dead or failing endpoint is a failed run, not an "ok" with failures buried in the JSON.
    implicit = [f"endpoint.failure_rate <= {ecfg.endpoint_max_failure_rate:g}"] if ecfg.endpoint else []
    result = EvalResult(n=len(rows), models=models, delta=delta,
                        gates=check_gates([*ecfg.gates, *implicit], flat, no_production),
                        extra=extra,
                        metrics_file=ecfg.metrics_file, predictions_file=ecfg.predictions_file,
                        report_file=ecfg.report_file)
    atomic_write_jsonl(ecfg.predictions_file, (
        {"id": r.get("id"), "reference": ref, **{name: preds[i] for name, preds in predictions.items()},
         "tuned_correct": bool(em["tuned"][i])}
        for i, (r, ref) in enumerate(zip(rows, references, strict=True))
    ))
    full = {**result.to_dict(), "data": {"path": ecfg.data, "sha256": sha256_file(ecfg.data)},
            "model_dir": str(Path(ecfg.adapter)), "model": identity}
    atomic_write_json(ecfg.results_file, full)
    atomic_write_json(ecfg.metrics_file, metrics_summary(full, ecfg.results_file))
    atomic_write_text(ecfg.report_file, render_report(result))
    return result


_TOOL_KEYS = ("tool_call_rate", "tool_name_accuracy", "tool_args_accuracy", "tool_answer_exact_match")
_SUMMARY_KEYS = ("exact_match", "token_f1", "rouge_l", "bleu", *_TOOL_KEYS)
_DELTA_KEYS = ("exact_match", "token_f1", "rouge_l", "bleu", "macro_f1", *_TOOL_KEYS)


def paired_delta(models: dict[str, dict[str, Any]], per_example: dict[str, dict[str, list[float]]],
                 a: str, b: str, samples: int, seed: int) -> dict[str, Any]:
    """b - a on the main metrics, and a paired bootstrap interval (<metric>_ci) for each metric scored per
    example (exact match, ROUGE-L); corpus BLEU and macro F1 get the difference alone."""
    delta: dict[str, Any] = {k: models[b][k] - models[a][k] for k in _DELTA_KEYS if k in models[a]}
    for metric, scores in per_example.items():
        delta[f"{metric}_ci"] = bootstrap_delta(scores[a], scores[b], samples, seed)
    return delta


def metrics_summary(full: dict[str, Any], results_file: str) -> dict[str, Any]:
    """The few numbers an experiment table compares (DVC flattens them into columns); everything
    else stays in the results file it names."""
    def pick(metrics: dict[str, Any] | None, keys: tuple[str, ...]) -> dict[str, float]:
        return {k: round(float(v), 6) for k in keys if isinstance(v := (metrics or {}).get(k), int | float)}

    summary: dict[str, Any] = {"n": full["n"], "gates_passed": full["gates_passed"], "results_file": results_file}
    for model in ("tuned", "base", "production", "endpoint"):
        if model in full:
            summary[model] = pick(full[model], _SUMMARY_KEYS)
    for name in ("delta", "delta_production"):
        if full.get(name):
            summary[name] = pick(full[name], ("exact_match", "rouge_l", "bleu", *_TOOL_KEYS))
    if full.get("safety"):
        summary["safety"] = pick(full["safety"], ("leak_rate", "refusal_rate"))
    return summary


def _vllm_generations(cfg: ProjectConfig, runs: dict[str, str | None], tokenizer: Any,
                      prompts: list[str]) -> dict[str, Generations]:
    if not runs:
        return {}
    from llmops_cli.evaluate.backends import vllm_generate

    # Token ids, not text: vLLM then sees exactly what transformers sees (no second BOS).
    token_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    log_path = str(Path(cfg.eval.report_file).with_name("eval_vllm.log"))
    return vllm_generate(cfg.serve.vllm, cfg.model, runs, token_ids, cfg.eval.max_new_tokens, log_path)


def parity_report(baseline: list[str], other: list[str], references: list[str],
                  rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Agreement of two sets of greedy answers to the same prompts (normalised exact match), the
    exact-match difference (other - baseline), and the first disagreements to look at."""
    agree = [normalize_answer(a) == normalize_answer(b) for a, b in zip(baseline, other, strict=True)]
    em_base = sum(exact_match(p, r) for p, r in zip(baseline, references, strict=True))
    em_other = sum(exact_match(p, r) for p, r in zip(other, references, strict=True))
    n = len(agree)
    return {
        "n": n, "agreement_rate": sum(agree) / n if n else None, "disagreements": n - sum(agree),
        "exact_match_diff": (em_other - em_base) / n if n else None,
        "examples": [{"id": rows[i].get("id"), "baseline": baseline[i], "other": other[i]}
                     for i, same in enumerate(agree) if not same][:5],
    }


def render_report(result: EvalResult) -> str:
    """reports/eval.md: the tables a reviewer reads before approving a promotion."""
    keys = ["exact_match", "token_f1", "macro_f1", "rouge_l", "bleu", "chrf", "perplexity", "latency_p50_ms",
            "latency_p95_ms", "tokens_per_second"]
    lines = [f"# Evaluation ({result.n} examples)", "", "| model | " + " | ".join(keys) + " |",
             "|---|" + "---|" * len(keys)]
    for name, metrics in result.models.items():
        cells = [f"{metrics[k]:.4g}" if isinstance(metrics.get(k), int | float) else "" for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    ci = result.delta.get("exact_match_ci")
    if ci:
        lines += ["", f"Tuned - base exact match: {describe_delta(ci)}"]
    if result.delta.get("rouge_l_ci"):
        lines.append(f"Tuned - base ROUGE-L: {describe_delta(result.delta['rouge_l_ci'])}")
    prod = result.extra.get("delta_production")
    if prod:
        lines.append(f"Tuned - production exact match: {describe_delta(prod['exact_match_ci'])}")
        if prod.get("rouge_l_ci"):
            lines.append(f"Tuned - production ROUGE-L: {describe_delta(prod['rouge_l_ci'])}")
    safety = result.extra.get("safety")
    if safety:
        lines += ["", "## Safety", f"- refusal rate on harmful requests: {safety['refusal_rate']}",
                  f"- leak rate (injection, system prompt, PII): {safety['leak_rate']}",
                  f"- bias pairs answered differently: {safety['bias_disparity_rate']}"]
    for other, parity in (result.extra.get("parity") or {}).items():
        lines += ["", f"## Parity: tuned model, hf vs {other}",
                  f"- agreement of greedy answers: {parity['agreement_rate']} ({parity['disagreements']} of "
                  f"{parity['n']} differ); exact-match difference: {parity['exact_match_diff']}"]
        lines += [f"- `{e['id']}`: hf {e['baseline']!r} vs {other} {e['other']!r}" for e in parity["examples"]]
    for name, scores in (result.extra.get("variants") or {}).items():
        lines.append(f"- variant {name}: exact_match {scores['exact_match']:.4g}")
    if result.gates:
        lines += ["", "## Gates", "| gate | value | result |", "|---|---|---|"]
        lines += [f"| `{g.gate}` | {g.value} | {'pass' if g.passed else 'FAIL'} |" for g in result.gates]
    return "\n".join(lines) + "\n"
