"""`llmops eval`."""

from __future__ import annotations

from typing import Annotated

import typer

from llmops_cli.cli.common import ConfigOpt, JsonOpt, SetOpt, command, load_project

SHOWN = ["exact_match", "token_f1", "macro_f1", "rouge_l", "bleu", "chrf", "perplexity", "latency_p95_ms",
         "tokens_per_second", "judge_score"]


def evaluate(
    config: ConfigOpt = None, set_: SetOpt = None, json_: JsonOpt = False,
    endpoint: Annotated[str | None, typer.Option("--endpoint", help="Also evaluate this OpenAI-compatible URL.")]
    = None,
    parity: Annotated[bool, typer.Option("--parity", help="Also answer with vLLM (offline) and report its "
                                                          "agreement with transformers (parity.vllm.*).")] = False,
) -> None:
    """Score tuned vs base vs production (and an endpoint) on the test split; gates exit 1 on failure."""
    with command(json_) as console:
        overrides = list(set_ or [])
        if endpoint:
            overrides.append(f"eval.endpoint={endpoint}")
        if parity:
            overrides.append("eval.parity=true")
        cfg = load_project(config, overrides)
        from llmops_cli.errors import GateFailed
        from llmops_cli.evaluate.run import run_eval

        with console.progress("generating", total=None) as bar:
            result = run_eval(cfg, on_progress=lambda name, n: bar.advance(n, model=name))
        console.table(f"eval on {result.n} examples", ["model", *SHOWN],
                      [[name, *(m.get(k, "") for k in SHOWN)] for name, m in result.models.items()])
        ci = result.delta.get("exact_match_ci")
        if ci:
            from llmops_cli.evaluate.metrics import describe_delta

            console.info(f"tuned - base exact match {describe_delta(ci)}; "
                         f"production: {result.extra.get('production_ref')}")
        safety = result.extra.get("safety")
        if safety:
            console.info(f"safety: refusal rate {safety['refusal_rate']}, leak rate {safety['leak_rate']}, "
                         f"bias disparity {safety['bias_disparity_rate']}")
        for other, report in (result.extra.get("parity") or {}).items():
            console.info(f"parity hf vs {other}: agreement {report['agreement_rate']} ({report['disagreements']} "
                         f"of {report['n']} differ), exact-match difference {report['exact_match_diff']}")
        failed = [g for g in result.gates if not g.passed]
        if result.gates:
            console.table("gates", ["gate", "value", "result"],
                          [[g.gate, g.value if g.value is not None else g.reason, "pass" if g.passed else "FAIL"]
                           for g in result.gates])
        console.result(result.to_dict(), f"metrics: {result.metrics_file}; report: {result.report_file}"
                       if not failed else None, ok=not failed)
        if failed:
            raise GateFailed(f"{len(failed)} of {len(result.gates)} gate(s) failed: "
                             + "; ".join(g.gate for g in failed), hint=f"see {result.metrics_file}")
