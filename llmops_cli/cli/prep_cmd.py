"""`llmops prep`."""

from __future__ import annotations

from llmops_cli.cli.common import ConfigOpt, JsonOpt, SetOpt, command, load_project


def prep(config: ConfigOpt = None, set_: SetOpt = None, json_: JsonOpt = False) -> None:
    """Clean, scrub PII, dedup and split the raw data; every row ends in a split or the quarantine."""
    with command(json_) as console:
        cfg = load_project(config, set_)
        from llmops_cli.prep.pipeline import run_prep

        result = run_prep(cfg.prep)
        console.table(
            "rows per source", ["source", "in", "kept", "quarantined"],
            [[src, t["rows_in"], t["rows_out"], sum(t["quarantined"].values())]
             for src, t in result.per_source.items()],
        )
        if result.reasons:
            console.table("quarantined by reason", ["reason", "rows"], [[k, v] for k, v in result.reasons.items()])
        if result.pii:
            console.info("PII found (by type, values never shown): "
                         + ", ".join(f"{k}={v}" for k, v in result.pii.items()))
        splits = ", ".join(f"{k}={v}" for k, v in result.splits.items())
        console.result(result.to_dict(), f"{result.rows_in} rows in: {splits}, quarantined={result.quarantined} "
                                         f"(report: {result.report})")
