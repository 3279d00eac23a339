"""`llmops eval`."""

from __future__ import annotations

from llmops_cli.cli.common import ConfigOpt, JsonOpt, SetOpt, command, load_project


def evaluate(config: ConfigOpt = None, set_: SetOpt = None, json_: JsonOpt = False) -> None:
    """Score the tuned model (and the base) on the test split and check the gates (exit 1 on failure)."""
    with command(json_) as console:
        cfg = load_project(config, set_)
        from llmops_cli.errors import GateFailed
        from llmops_cli.evaluate.run import run_eval
        from llmops_cli.tune.data import read_jsonl

        total = len(read_jsonl(cfg.eval.data)[: cfg.eval.limit]) * (2 if cfg.eval.compare_base else 1)
        with console.progress("generating", total=total) as bar:
            result = run_eval(cfg, on_progress=lambda name, n: bar.advance(n, model=name))
        metrics = sorted({k for m in result.models.values() for k in m})
        console.table(f"eval on {result.n} examples", ["model", *metrics],
                      [[name, *(m.get(k, "") for k in metrics)] for name, m in result.models.items()])
        failed = [g for g in result.gates if not g.passed]
        if result.gates:
            console.table("gates", ["gate", "value", "result"],
                          [[g.gate, g.value if g.value is not None else g.reason, "pass" if g.passed else "FAIL"]
                           for g in result.gates])
        console.result(result.to_dict(), f"metrics written to {result.metrics_file}" if not failed else None)
        if failed:
            raise GateFailed(f"{len(failed)} of {len(result.gates)} gate(s) failed: "
                             + "; ".join(g.gate for g in failed), hint=f"see {result.metrics_file}")
