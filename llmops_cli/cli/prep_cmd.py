"""`llmops prep`."""

from __future__ import annotations

from llmops_cli.cli.common import ConfigOpt, JsonOpt, SetOpt, command, load_project


def prep(config: ConfigOpt = None, set_: SetOpt = None, json_: JsonOpt = False) -> None:
    """Clean, scrub PII, dedup (exact and near) and split the raw data; render it with the chat template.

    Every input row ends in a split or in the quarantine file with its reason.
    """
    with command(json_) as console:
        cfg = load_project(config, set_)
        from llmops_cli.prep.pipeline import run_prep

        with console.progress("prep: rows read") as progress:
            result = run_prep(cfg.prep, model=cfg.model, on_row=lambda n: progress.advance(10000))
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
        dedup = result.dedup
        console.info(f"duplicates removed: exact={dedup.get('exact', 0)} near={dedup.get('near', 0)}"
                     + (f" ({', '.join(f'{k}={v}' for k, v in dedup['near_by_split'].items())})"
                        if dedup.get("near_by_split") else ""))
        if result.tokens and result.tokens.get("count"):
            t = result.tokens
            console.info(f"tokens per example: p50={t['p50']} p95={t['p95']} max={t['max']}; "
                         f"chat template sha256 {result.chat_template['chat_template_sha256'][:12]}… "  # type: ignore[index]
                         f"({result.chat_template['chat_template_source']}), answers end with "  # type: ignore[index]
                         f"{result.chat_template['eos_token']!r}")  # type: ignore[index]
        splits = ", ".join(f"{k}={v}" for k, v in result.splits.items())
        console.result(result.to_dict(), f"{result.rows_in} rows in: {splits}, quarantined={result.quarantined} "
                                         f"(report: {result.report})")
