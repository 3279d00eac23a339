"""The prep pipeline: sources -> clean -> PII -> filters -> dedup -> hash split -> files + report.

Invariant, checked before anything is written: for every source, rows in = rows written to a split
+ rows quarantined (each with its reason).
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmops_cli.errors import DataError
from llmops_cli.prep.clean import dedup_key, find_pii, normalize_text, redact_pii
from llmops_cli.prep.config import PrepSection, SourceSpec
from llmops_cli.prep.readers import RawRow, expand_source, read_rows
from llmops_cli.utils import atomic_write_json, atomic_write_jsonl, sha256_file

SPLITS = ("train", "validation", "test")


@dataclass
class PrepResult:
    splits: dict[str, int]
    quarantined: int
    rows_in: int
    reasons: dict[str, int]
    pii: dict[str, int]
    labels: dict[str, int]
    per_source: dict[str, dict[str, Any]]
    outputs: dict[str, str]
    report: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class _Tally:
    rows_in: int = 0
    rows_out: int = 0
    quarantined: Counter[str] = field(default_factory=Counter)


def assign_split(key: str, validation: float, test: float, salt: str) -> str:
    """Stable split from a hash of the row's content: appending rows never moves existing ones."""
    bucket = int.from_bytes(hashlib.sha256(f"{salt}\0{key}".encode()).digest()[:8], "big") / 2**64
    if bucket < test:
        return "test"
    if bucket < test + validation:
        return "validation"
    return "train"


def run_prep(cfg: PrepSection) -> PrepResult:
    """Run prep with the given config; writes the splits, quarantine and report; returns counts."""
    out_dir = Path(cfg.output_dir)
    tallies: dict[str, _Tally] = defaultdict(_Tally)
    splits: dict[str, list[dict[str, Any]]] = {name: [] for name in SPLITS}
    quarantine: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    pii_counts: Counter[str] = Counter()
    labels: Counter[str] = Counter()

    def reject(raw: RawRow, reason: str, detail: str = "") -> None:
        tallies[raw.source].quarantined[reason] += 1
        quarantine.append({
            "source": raw.source, "line": raw.line, "reason": reason, "detail": detail,
            "row": raw.record if raw.record is not None else raw.raw,
        })

    for spec in cfg.sources:
        for path in expand_source(spec.path):
            for raw in read_rows(path):
                tallies[raw.source].rows_in += 1
                if raw.error:
                    reject(raw, "unparseable", raw.error)
                    continue
                row, problem = _to_example(raw, spec, cfg)
                if row is None:
                    reject(raw, *problem)
                    continue
                found = find_pii(row["prompt"] + "\n" + row["completion"])
                pii_counts.update(found)
                dropped = [k for k in found if getattr(cfg.pii, k) == "drop"]
                if dropped:
                    reject(raw, "pii", f"contains {', '.join(dropped)} (policy: drop)")
                    continue
                redact = [k for k in found if getattr(cfg.pii, k) == "redact"]
                if redact:
                    row["prompt"] = redact_pii(row["prompt"], redact)
                    row["completion"] = redact_pii(row["completion"], redact)
                key = dedup_key(row["prompt"]) + "\0" + dedup_key(row["completion"])
                if cfg.dedup and key in seen:
                    reject(raw, "duplicate", f"same as {seen[key]}")
                    continue
                seen[key] = f"{raw.source}:{raw.line}"
                split = assign_split(dedup_key(row["prompt"]), cfg.splits.validation, cfg.splits.test,
                                     cfg.splits.salt)
                splits[split].append(row)
                tallies[raw.source].rows_out += 1
                if row.get("label") is not None:
                    labels[row["label"]] += 1

    rows_in = sum(t.rows_in for t in tallies.values())
    if rows_in == 0:
        raise DataError("no input rows: every source is empty", hint="check prep.sources in the config")
    kept = sum(len(rows) for rows in splits.values())
    if not kept:
        raise DataError(f"all {rows_in} rows were quarantined", hint=f"see {out_dir / 'quarantine.jsonl'}")
    for source, tally in tallies.items():  # the nothing-lost invariant, per source
        assert tally.rows_in == tally.rows_out + sum(tally.quarantined.values()), source

    outputs = {}
    for name, rows in splits.items():
        outputs[name] = str(out_dir / f"{name}.jsonl")
        atomic_write_jsonl(outputs[name], rows)
    outputs["quarantine"] = str(out_dir / "quarantine.jsonl")
    atomic_write_jsonl(outputs["quarantine"], quarantine)

    reasons: Counter[str] = Counter()
    for tally in tallies.values():
        reasons.update(tally.quarantined)
    result = PrepResult(
        splits={name: len(rows) for name, rows in splits.items()},
        quarantined=len(quarantine),
        rows_in=rows_in,
        reasons=dict(reasons.most_common()),
        pii={k: pii_counts[k] for k in sorted(pii_counts)},
        labels=dict(sorted(labels.items())),
        per_source={
            src: {"rows_in": t.rows_in, "rows_out": t.rows_out, "quarantined": dict(t.quarantined)}
            for src, t in sorted(tallies.items())
        },
        outputs=outputs,
        report=cfg.report,
    )
    atomic_write_json(cfg.report, {
        **result.to_dict(),
        "pii_policy": cfg.pii.model_dump(),
        "hashes": {name: sha256_file(path) for name, path in outputs.items()},
    })
    return result


def _to_example(raw: RawRow, spec: SourceSpec, cfg: PrepSection) -> tuple[dict[str, Any] | None, tuple[str, str]]:
    """Map a raw record to {id, prompt, completion, label}; or None and (reason, detail)."""
    record = raw.record or {}
    names = {
        "prompt": spec.prompt_field or cfg.fields.prompt,
        "completion": spec.completion_field or cfg.fields.completion,
    }
    row: dict[str, Any] = {}
    for role, name in names.items():
        if name not in record or record[name] is None:
            return None, ("missing_field", f"no {name!r} field")
        value = record[name]
        if not isinstance(value, str):
            return None, ("wrong_type", f"{name!r} is a {type(value).__name__}, expected a string")
        row[role] = normalize_text(value)
        if not row[role]:
            return None, ("empty", f"{name!r} is empty after cleaning")
    if len(row["prompt"]) < cfg.min_chars:
        return None, ("too_short", f"prompt has {len(row['prompt'])} chars < {cfg.min_chars}")
    if len(row["prompt"]) > cfg.max_chars:
        return None, ("too_long", f"prompt has {len(row['prompt'])} chars > {cfg.max_chars}")
    ident = record.get(cfg.fields.id) if cfg.fields.id else None
    row["id"] = str(ident) if ident not in (None, "") else hashlib.sha256(
        (row["prompt"] + "\0" + row["completion"]).encode()
    ).hexdigest()[:16]
    if cfg.fields.label:
        label = record.get(cfg.fields.label)
        row["label"] = normalize_text(str(label)) if label is not None else None
    if cfg.system_prompt:
        row["system"] = cfg.system_prompt
    return {"id": row.pop("id"), **row}, ("", "")
