"""The prep pipeline.

Pass 1 streams every source row through: parse -> sample -> schema -> clean -> length -> language
-> PII -> exact dedup -> render with the chat template (token filters, EOS check) -> MinHash
signature, and spools the surviving rows to a temp file (only small per-row facts stay in memory).
Then every row gets its split (hash-based, optionally stratified by label), near-duplicates are
resolved across splits (test and validation win over train), and pass 2 streams the spool into the
split files (jsonl + parquet), the tokenization cache and the quarantine file.

Invariant, checked before the splits are committed: for every source, rows in = rows written to a
split + rows quarantined (each with its reason).
"""

from __future__ import annotations

import gc
import hashlib
import heapq
import json
import shutil
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmops_cli.errors import DataError
from llmops_cli.prep.clean import SECRET_KINDS, dedup_key, find_pii, redact_pii
from llmops_cli.prep.config import PrepSection, SourceSpec, SplitSpec
from llmops_cli.prep.readers import _RAW_KEEP, RawRow, SourceFile, read_rows, source_files
from llmops_cli.prep.schemas import (
    FieldNames,
    Reject,
    detect_schema,
    example_messages,
    example_texts,
    kind_of,
    to_example,
)
from llmops_cli.prep.tools import source_tools
from llmops_cli.utils import atomic_write_json, atomic_write_text, sha256_file

if TYPE_CHECKING:
    from llmops_cli.model.config import ModelSection
    from llmops_cli.prep.neardup import NearDupIndex
    from llmops_cli.prep.render import ChatRenderer

SPLITS = ("train", "validation", "test")
TEMPLATE_FILE = "chat_template.jinja"  # beside the splits: the template they were rendered with
PERCENTILES = (50, 90, 95, 99)


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
    schemas: dict[str, str] = field(default_factory=dict)
    dedup: dict[str, Any] = field(default_factory=dict)
    tokens: dict[str, Any] | None = None
    chat_template: dict[str, Any] | None = None
    tokenized_cache: dict[str, Any] | None = None
    labels_by_split: dict[str, dict[str, int]] = field(default_factory=dict)
    languages: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class _Tally:
    rows_in: int = 0
    rows_out: int = 0
    quarantined: Counter[str] = field(default_factory=Counter)


def _unit(text: str) -> float:
    """A stable number in [0, 1) from a string (sha256, so equal on every machine and run)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


def split_of_bucket(bucket: float, validation: float, test: float) -> str:
    if bucket < test:
        return "test"
    if bucket < test + validation:
        return "validation"
    return "train"


def assign_split(key: str, validation: float, test: float, salt: str) -> str:
    """Stable split from a hash of the row's content: appending rows never moves existing ones."""
    return split_of_bucket(_unit(f"{salt}\0{key}"), validation, test)


def assign_splits(buckets: list[float], labels: list[str | None], spec: SplitSpec) -> list[str]:
    """Split of every row: by hash bucket, or (stratify) by hash rank within each label."""
    if not spec.stratify:
        return [split_of_bucket(b, spec.validation, spec.test) for b in buckets]
    out = ["train"] * len(buckets)
    groups: dict[str | None, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        groups[label].append(i)
    for members in groups.values():
        members.sort(key=buckets.__getitem__)
        n_test = round(len(members) * spec.test)
        n_val = round(len(members) * spec.validation)
        for rank, i in enumerate(members):
            out[i] = "test" if rank < n_test else "validation" if rank < n_test + n_val else "train"
    return out


def _percentiles(values: list[int]) -> dict[str, Any]:
    if not values:
        return {"count": 0}
    ordered = sorted(values)
    pick = {f"p{p}": ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))] for p in PERCENTILES}
    return {"count": len(ordered), "min": ordered[0], **pick, "max": ordered[-1],
            "mean": round(sum(ordered) / len(ordered), 2)}


def _redact_obj(obj: Any, kinds: tuple[str, ...]) -> Any:
    """A copy of a record with the given PII types redacted in every string, field names included."""
    if isinstance(obj, str):
        return redact_pii(obj, kinds)
    if isinstance(obj, dict):
        return {_redact_obj(k, kinds): _redact_obj(v, kinds) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_redact_obj(v, kinds) for v in obj]
    return obj


def _redact_head(head: str, kinds: tuple[str, ...]) -> str:
    """The raw head of an unparseable or oversized row, redacted. A head cut at _RAW_KEEP characters can end
    inside an email, a key or a card number, which no detector sees whole: the cut word goes, and the run of
    digits and separators before it (the first groups of a card number) with it."""
    if head.endswith("\u2026") or len(head) >= _RAW_KEEP:
        cut = head.rstrip("\u2026")
        cut = cut[:max(cut.rfind(" "), cut.rfind("\n"), cut.rfind("\t")) + 1]
        head = cut.rstrip("0123456789 ().+-\t\n") + "\u2026"
    return redact_pii(head, kinds)


def _pseudonym(value: str, salt: str) -> str:
    """A stable stand-in for an id that holds PII: ids stay unique and equal across runs, the value is gone.
    Pseudonymous, not anonymous: whoever knows the salt can test a guessed id against it."""
    return "pii-" + hashlib.sha256(f"{salt}\0id\0{value}".encode()).hexdigest()[:16]


class _Sampler:
    """Deterministic per-source sampling: `weight` (a fraction) then `max_rows` (a count)."""

    def __init__(self, spec: SourceSpec, units: list[SourceFile], salt: str, max_row_bytes: int) -> None:
        self.spec = spec
        self.salt = salt
        self.threshold: float | None = None
        if spec.max_rows is not None:
            # One cheap extra read: the k smallest row hashes fix the threshold in bounded memory.
            hashes = (self._h(raw) for unit in units for raw in read_rows(unit, max_row_bytes) if not raw.error)
            smallest = heapq.nsmallest(spec.max_rows, (h for h in hashes if h < spec.weight))
            if len(smallest) == spec.max_rows:
                self.threshold = smallest[-1]

    def _h(self, raw: RawRow) -> float:
        return _unit(f"{self.salt}\0sample\0{raw.source}\0{raw.line}")

    @property
    def active(self) -> bool:
        return self.spec.weight < 1 or self.threshold is not None

    def keep(self, raw: RawRow) -> bool:
        h = self._h(raw)
        return h < self.spec.weight and (self.threshold is None or h <= self.threshold)


class _Run:
    """State of one prep run (tallies, dedup sets, spool); `run_prep` drives it."""

    def __init__(self, cfg: PrepSection, renderer: ChatRenderer | None, work: Path,
                 quarantine_writer: Any) -> None:
        self.cfg = cfg
        self.renderer = renderer
        self.tallies: dict[str, _Tally] = defaultdict(_Tally)
        self.records: Counter[str] = Counter()  # input records per source, as the readers count them
        self.quarantine = quarantine_writer
        self.pii_counts: Counter[str] = Counter()
        self.languages: Counter[str] = Counter()
        self.seen: dict[bytes, str] = {}
        self.exact_removed = 0
        self.schemas: dict[str, str] = {}
        self.kind: tuple[str, str] | None = None  # (kind, first file), to refuse text mixed with chat
        self.spool_path = work / "spool.jsonl"
        self.spool = self.spool_path.open("w", encoding="utf-8")
        self.buckets: list[float] = []
        self.labels: list[str | None] = []
        self.ids: list[str] = []
        self.token_counts: list[int] = []
        self.eos_missing = 0
        self.neardup: NearDupIndex | None = None
        if cfg.near_dup.enabled:
            from llmops_cli.prep.neardup import NearDupIndex

            # the index spools the dedup keys next to the row spool: exact Jaccard re-reads candidates' keys
            self.neardup = NearDupIndex(cfg.near_dup.threshold, cfg.near_dup.num_perm, cfg.near_dup.ngram,
                                        max_miss=cfg.near_dup.max_miss, spool_dir=work)
        self._lang_detect: Callable[[str], str] | None = None
        if cfg.language.keep:
            self._lang_detect = _language_detector(cfg.language.seed)
        self.policy = cfg.pii.model_dump()
        # The quarantine (a DVC output) keeps what a split would: the types the policy redacts or drops are
        # redacted, whatever the reason of the row; secrets always are, even under `keep`.
        self.quarantine_kinds = tuple(k for k, act in self.policy.items() if act != "keep" or k in SECRET_KINDS)

    def reject(self, raw: RawRow, reason: str, detail: str = "", row: Any = ...) -> None:
        self.tallies[raw.source].quarantined[reason] += 1
        kinds = self.quarantine_kinds
        if row is ... and raw.record is None and isinstance(raw.raw, str):
            kept = _redact_head(raw.raw, kinds)
        else:
            kept = _redact_obj(raw.record if row is ... else row, kinds)
        self.quarantine.write({"source": raw.source, "line": raw.line, "reason": reason,
                               "detail": redact_pii(detail, kinds), "row": kept})

    def check_kind(self, unit: SourceFile, schema: str) -> None:
        kind = kind_of(schema)
        if self.kind is None:
            self.kind = (kind, unit.name)
        elif self.kind[0] != kind:
            raise DataError(
                f"mixed schemas: {self.kind[1]} holds {self.kind[0]} rows but {unit.name} holds {kind} rows "
                f"({schema})",
                hint="prepare pre-training text (schema: text) and chat/instruction data in separate prep runs, "
                     "or set prep.schema / sources[].schema",
            )

    def process(self, raw: RawRow, schema: str, names: FieldNames) -> None:
        cfg = self.cfg
        record = raw.record or {}
        try:
            ex = to_example(record, schema, names)
        except Reject as rej:
            self.reject(raw, rej.reason, rej.detail)
            return
        main = ex.get("text") or ex["prompt"]
        if len(main) < cfg.min_chars:
            self.reject(raw, "too_short", f"{len(main)} chars < prep.min_chars={cfg.min_chars}")
            return
        if len(main) > cfg.max_chars:
            self.reject(raw, "too_long", f"{len(main)} chars > prep.max_chars={cfg.max_chars}")
            return
        if self._lang_detect is not None and len(main) >= cfg.language.min_chars:
            lang = self._lang_detect(main)
            self.languages[lang] += 1
            if lang not in (cfg.language.keep or []):
                self.reject(raw, "language", f"detected {lang!r}, keeping {cfg.language.keep}")
                return
        scrubbed = self._scrub(raw, record, ex)
        if scrubbed is None:
            return
        ex, row_id, label = scrubbed
        texts = example_texts(ex)
        parts = [dedup_key(t) for t in (texts if "text" in ex else texts[1:])]  # the system prompt is shared
        digest = hashlib.blake2b("\0".join(parts).encode(), digest_size=16).digest()
        key_text = " ".join(parts)
        if cfg.dedup:
            first = self.seen.get(digest)
            if first is not None:
                self.exact_removed += 1
                self.reject(raw, "duplicate", f"same as {first}")
                return
            self.seen[digest] = f"{raw.source}:{raw.line}"
        if row_id is None:
            row_id = digest.hex()[:16]
        if cfg.system_prompt and "text" not in ex and not ex.get("system"):
            ex["system"] = cfg.system_prompt
        spooled: dict[str, Any] = {"src": raw.source, "line": raw.line}
        if self.renderer is not None:
            rendered = (self.renderer.render_text(ex["text"]) if "text" in ex
                        else self.renderer.render_chat(example_messages(ex), ex.get("tools")))
            tok_cfg = cfg.tokenize
            if rendered.n_tokens < tok_cfg.min_tokens:
                self.reject(raw, "too_few_tokens", f"{rendered.n_tokens} tokens < {tok_cfg.min_tokens}")
                return
            if tok_cfg.max_tokens is not None and rendered.n_tokens > tok_cfg.max_tokens:
                self.reject(raw, "too_many_tokens", f"{rendered.n_tokens} tokens > {tok_cfg.max_tokens}")
                return
            if not rendered.ends_with_eos:
                self.eos_missing += 1
                if tok_cfg.require_eos:
                    raise DataError(
                        f"{raw.source}:{raw.line}: the rendered answer does not end with the EOS token "
                        f"{self.renderer.tok.eos_token!r} (template: {self.renderer.template_source}); a model "
                        "trained on it will not learn to stop generating",
                        hint="use a chat template that closes assistant turns with the EOS token "
                             "(prep.tokenize.template), or a tokenizer whose eos_token is the end-of-turn token",
                    )
            spooled["ids"], spooled["mask"] = _pack_tokens(rendered.input_ids, rendered.mask)
            self.token_counts.append(rendered.n_tokens)
        out_row: dict[str, Any] = {"id": row_id, **ex}
        if cfg.fields.label:
            out_row["label"] = label
        spooled["row"] = out_row
        self.spool.write(json.dumps(spooled, ensure_ascii=False) + "\n")
        split_key = parts[0] if "text" in ex else parts[-2]  # the prompt: same question, same split
        self.buckets.append(_unit(f"{cfg.splits.salt}\0{split_key}"))
        self.labels.append(label)
        self.ids.append(row_id)
        if self.neardup is not None:
            self.neardup.add(key_text)

    def _scrub(self, raw: RawRow, record: dict[str, Any],
               ex: dict[str, Any]) -> tuple[dict[str, Any], str | None, str | None] | None:
        """PII policy over the example's texts, the id and the label: (example, id, label), or None when the
        row was quarantined. An id holding PII that is not kept becomes a stable pseudonym (ids must stay
        unique, and `[EMAIL]` for every such row would not be); a label is redacted like any text."""
        cfg = self.cfg
        ident = record.get(cfg.fields.id) if cfg.fields.id else None
        row_id = str(ident) if ident not in (None, "") and not isinstance(ident, (dict, list)) else None
        label = None
        if cfg.fields.label:
            value = record.get(cfg.fields.label)
            label = " ".join(str(value).split()) if value is not None else None
        found = find_pii("\n".join(example_texts(ex)))
        in_id = find_pii(row_id) if row_id else {}
        in_label = find_pii(label) if label else {}
        if not (found or in_id or in_label):
            return ex, row_id, label
        for counts in (found, in_id, in_label):
            self.pii_counts.update(counts)
        dropped = sorted(k for k in {**found, **in_id, **in_label} if self.policy[k] == "drop")
        if dropped:
            self.reject(raw, "pii", f"contains {', '.join(dropped)} (policy: drop)")
            return None
        redact = [k for k in found if self.policy[k] == "redact"]
        if redact:
            ex = _redact_example(ex, redact)
        if row_id is not None and any(self.policy[k] == "redact" for k in in_id):
            row_id = _pseudonym(row_id, cfg.splits.salt)
        if label is not None and in_label:
            label = redact_pii(label, [k for k in in_label if self.policy[k] == "redact"])
        return ex, row_id, label

    def spooled(self) -> Iterator[dict[str, Any]]:
        self.spool.close()
        with self.spool_path.open(encoding="utf-8") as fh:
            for line in fh:
                yield json.loads(line)


def _pack_tokens(ids: list[int], mask: list[int]) -> tuple[str, str]:
    """Token ids (int32) and mask (bytes) as base64 text for the spool: JSON lists of ~500 ints per row
    cost ~20% of a tokenizing run to write and read back."""
    from array import array
    from base64 import b64encode

    return b64encode(array("i", ids).tobytes()).decode("ascii"), b64encode(bytes(mask)).decode("ascii")


def _unpack_tokens(ids: str, mask: str) -> tuple[list[int], list[int]]:
    from array import array
    from base64 import b64decode

    return array("i", b64decode(ids)).tolist(), list(b64decode(mask))


def _redact_example(ex: dict[str, Any], kinds: list[str]) -> dict[str, Any]:
    """Every text an example carries, tool results and call arguments included (a placeholder holds no
    quote, so arguments stay JSON); tool schemas are the operator's, left as they are."""
    def turn(t: dict[str, Any]) -> dict[str, Any]:
        out = {**t, "content": redact_pii(t["content"], kinds)}
        if t.get("tool_calls"):
            out["tool_calls"] = calls(t["tool_calls"])
        return out

    def calls(items: list[dict[str, str]]) -> list[dict[str, str]]:
        return [{**c, "arguments": redact_pii(c["arguments"], kinds)} for c in items]

    out = {k: redact_pii(v, kinds) if isinstance(v, str) else v for k, v in ex.items()}
    for key in ("history", "trace"):
        if key in ex:
            out[key] = [turn(t) for t in ex[key]]
    if "tool_calls" in ex:
        out["tool_calls"] = calls(ex["tool_calls"])
    return out


def _language_detector(seed: int) -> Callable[[str], str]:
    from langdetect import DetectorFactory, LangDetectException, detect

    DetectorFactory.seed = seed  # langdetect is random without it; the seed is its only global

    def run(text: str) -> str:
        try:
            return str(detect(text))
        except LangDetectException:
            return "unknown"

    return run


def _resolve_renderer(cfg: PrepSection, model: ModelSection | None) -> ChatRenderer | None:
    if not cfg.tokenize.enabled:
        return None
    source = cfg.tokenize.tokenizer or (model.base if model is not None else None)
    if source is None:
        return None  # library use without a model section: nothing to render with (recorded in the report)
    from llmops_cli.prep.render import load_renderer

    return load_renderer(source, cfg.tokenize.template, model)


def _parquet_schema(kind: str, tokenized: bool = False) -> Any:
    import pyarrow as pa

    if tokenized:
        return pa.schema([("id", pa.string()), ("input_ids", pa.list_(pa.int32())), ("mask", pa.list_(pa.int8())),
                          ("n_tokens", pa.int32())])
    if kind == "text":
        return pa.schema([("id", pa.string()), ("text", pa.string()), ("label", pa.string())])
    call = pa.list_(pa.struct([("id", pa.string()), ("name", pa.string()), ("arguments", pa.string())]))
    turn = pa.struct([("role", pa.string()), ("content", pa.string()), ("tool_calls", call),
                      ("tool_call_id", pa.string())])
    # `tools` holds JSON schemas of any shape: stored as their JSON text.
    return pa.schema([("id", pa.string()), ("prompt", pa.string()), ("completion", pa.string()),
                      ("system", pa.string()), ("history", pa.list_(turn)), ("label", pa.string()),
                      ("trace", pa.list_(turn)), ("tool_calls", call), ("tools", pa.string())])


def run_prep(cfg: PrepSection, model: ModelSection | None = None,
             on_row: Callable[[int], None] | None = None) -> PrepResult:
    """Run prep; writes the splits (jsonl + parquet), the tokenization cache, the quarantine file and
    the report. `model` supplies the base tokenizer (prep.tokenize); `on_row` is a progress callback."""
    from llmops_cli.prep.io import AtomicJsonl

    out_dir = Path(cfg.output_dir)
    # Resolve every source first: a typo in a path fails in a second, before any model is loaded.
    units = [(spec, source_files(spec.path, spec.hub, spec.split, spec.encoding)) for spec in cfg.sources]
    renderer = _resolve_renderer(cfg, model)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out_dir, prefix=".prep-"))
    quarantine = AtomicJsonl(out_dir / "quarantine.jsonl")
    # Millions of small acyclic objects (dedup digests, signatures, LSH buckets) make the cyclic GC
    # rescan an ever larger heap: pausing it is worth 20-30% here and frees nothing that matters.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        run = _Run(cfg, renderer, work, quarantine)
        _pass_one(run, units, on_row)
        return _finish(run, out_dir)
    finally:
        if gc_was_enabled:
            gc.enable()
        quarantine.abort()  # no-op after a commit
        shutil.rmtree(work, ignore_errors=True)


def _pass_one(run: _Run, units: list[tuple[SourceSpec, list[SourceFile]]],
              on_row: Callable[[int], None] | None) -> None:
    cfg = run.cfg
    count = 0
    for spec, files in units:
        sampler = _Sampler(spec, files, cfg.splits.salt, cfg.max_row_bytes)
        names = FieldNames(spec.prompt_field or cfg.fields.prompt, spec.completion_field or cfg.fields.completion,
                           cfg.fields, None if spec.completion_field else cfg.fields.completion_template,
                           tuple(source_tools(spec.tools, spec.name)))
        configured = spec.schema_ or cfg.schema_
        for unit in files:
            schema = None if configured == "auto" else configured
            if schema is not None:
                run.check_kind(unit, schema)
                run.schemas[unit.name] = schema
            for raw in read_rows(unit, cfg.max_row_bytes, run.records):
                run.tallies[raw.source].rows_in += 1
                count += 1
                if on_row is not None and count % 10000 == 0:
                    on_row(count)
                if raw.error:
                    run.reject(raw, raw.reason, raw.error)
                    continue
                if sampler.active and not sampler.keep(raw):
                    # Not bad data: recorded by position only, the row stays where it is in the source.
                    run.reject(raw, "sampled_out", f"not in this source's sample (weight={spec.weight}, "
                                                   f"max_rows={spec.max_rows})", row=None)
                    continue
                if schema is None:
                    schema = detect_schema(raw.record or {}, names)
                    if schema is None:
                        run.reject(raw, "unknown_schema", "fields match no schema: " + ", ".join(
                            sorted(map(str, raw.record or {}))[:20]))
                        continue
                    run.check_kind(unit, schema)
                    for source in {raw.source, unit.name}:
                        run.schemas[source] = schema
                run.process(raw, schema, names)
    run.spool.flush()


def _finish(run: _Run, out_dir: Path) -> PrepResult:
    from llmops_cli.prep.io import AtomicJsonl, ParquetSink

    cfg = run.cfg
    rows_in = sum(t.rows_in for t in run.tallies.values())
    if rows_in == 0:
        raise DataError("no input rows: every source is empty", hint="check prep.sources in the config")
    if not run.ids:
        run.quarantine.commit()
        raise DataError(f"all {rows_in} rows were quarantined",
                        hint=f"see {out_dir / 'quarantine.jsonl'} for the reason of each row")

    split_of = assign_splits(run.buckets, run.labels, cfg.splits)
    removed: dict[int, tuple[int, float]] = {}
    if run.neardup is not None:
        removed = run.neardup.resolve(split_of)
        run.neardup.close()
    near_pairs: Counter[str] = Counter()

    kind = run.kind[0] if run.kind else "chat"
    writers = {name: AtomicJsonl(out_dir / f"{name}.jsonl") for name in SPLITS}
    parquet = {name: ParquetSink(out_dir / f"{name}.parquet", _parquet_schema(kind)) for name in SPLITS}
    tok_dir = out_dir / f".tokenized-{run.spool_path.parent.name}"
    tokenized = ({name: ParquetSink(tok_dir / f"{name}.parquet", _parquet_schema(kind, tokenized=True))
                  for name in SPLITS} if run.renderer is not None else {})
    sinks: list[Any] = [*writers.values(), *parquet.values(), *tokenized.values()]
    columns = _parquet_schema(kind).names
    labels_by_split: dict[str, Counter[str]] = {name: Counter() for name in SPLITS}
    tokens_by_split: dict[str, list[int]] = {name: [] for name in SPLITS}
    try:
        for i, item in enumerate(run.spooled()):
            row, split = item["row"], split_of[i]
            raw = RawRow(item["src"], item["line"], None)
            if i in removed:
                j, sim = removed[i]
                pair = "~".join(sorted({split, split_of[j]}, key=SPLITS.index)) if split != split_of[j] else split
                near_pairs[pair] += 1
                run.reject(raw, "near_duplicate",
                           f"near-duplicate (Jaccard~{sim:.2f}) of {split_of[j]} row {run.ids[j]}", row=row)
                continue
            writers[split].write(row)
            parquet[split].write({k: json.dumps(row[k]) if k == "tools" and k in row else row.get(k)
                                  for k in columns})
            if tokenized:
                ids, mask = _unpack_tokens(item["ids"], item["mask"])
                tokenized[split].write({"id": row["id"], "input_ids": ids, "mask": mask, "n_tokens": len(ids)})
                tokens_by_split[split].append(len(ids))
            run.tallies[raw.source].rows_out += 1
            if row.get("label") is not None:
                labels_by_split[split][row["label"]] += 1
        for source, tally in run.tallies.items():  # the nothing-lost invariant, per source
            if tally.rows_in != tally.rows_out + sum(tally.quarantined.values()):
                raise DataError(f"internal error: rows of {source} were not all accounted for",
                                hint="please report this bug with the prep report")
        for source in run.records.keys() | run.tallies.keys():  # input records, counted apart from the parse
            if run.records[source] != run.tallies[source].rows_in:
                raise DataError(f"internal error: {source} holds {run.records[source]} input records but "
                                f"{run.tallies[source].rows_in} rows were read",
                                hint="please report this bug with the prep report and the file's layout")
        for sink in sinks:
            sink.commit()
        run.quarantine.commit()
    except BaseException:
        for sink in sinks:
            sink.abort()
        shutil.rmtree(tok_dir, ignore_errors=True)
        raise

    outputs = {name: str(out_dir / f"{name}.jsonl") for name in SPLITS}
    outputs |= {f"{name}_parquet": str(out_dir / f"{name}.parquet") for name in SPLITS}
    outputs["quarantine"] = str(out_dir / "quarantine.jsonl")
    hashes = {name: sha256_file(path) for name, path in outputs.items()}
    cache_info = _commit_cache(run, out_dir, tok_dir, hashes) if tokenized else None
    if cache_info:
        outputs["tokenized"] = cache_info["dir"]
    outputs |= _write_template(run, out_dir)

    reasons: Counter[str] = Counter()
    for tally in run.tallies.values():
        reasons.update(tally.quarantined)
    labels: Counter[str] = Counter()
    for counter in labels_by_split.values():
        labels.update(counter)
    tokens = None
    if run.renderer is not None:
        tokens = {**_percentiles(run.token_counts),
                  "kept": {name: _percentiles(v) for name, v in tokens_by_split.items()},
                  "eos_missing": run.eos_missing}
    result = PrepResult(
        splits={name: w.count for name, w in writers.items()},
        quarantined=run.quarantine.count,
        rows_in=rows_in,
        reasons=dict(reasons.most_common()),
        pii={k: run.pii_counts[k] for k in sorted(run.pii_counts)},
        labels=dict(sorted(labels.items())),
        per_source={
            src: {"records_in": run.records[src], "rows_in": t.rows_in, "rows_out": t.rows_out,
                  "quarantined": dict(t.quarantined)}
            for src, t in sorted(run.tallies.items())
        },
        outputs=outputs,
        report=cfg.report,
        schemas=dict(sorted(run.schemas.items())),
        dedup={
            "exact": run.exact_removed,
            "near": sum(near_pairs.values()),
            "near_by_split": dict(sorted(near_pairs.items())),
            "near_config": cfg.near_dup.model_dump() if cfg.near_dup.enabled else None,
        },
        tokens=tokens,
        chat_template=run.renderer.info() if run.renderer is not None else None,
        tokenized_cache=cache_info,
        labels_by_split={name: dict(sorted(c.items())) for name, c in labels_by_split.items()},
        languages=dict(run.languages.most_common()),
    )
    atomic_write_json(cfg.report, {
        **result.to_dict(),
        "pii_policy": cfg.pii.model_dump(),
        "hashes": hashes,
        "tokenization": "done" if run.renderer is not None else (
            "off (prep.tokenize.enabled=false)" if not cfg.tokenize.enabled else "skipped: no tokenizer given"),
    })
    # The numbers an experiment table compares; everything else stays in the report.
    atomic_write_json(cfg.metrics_file, {
        "rows_in": result.rows_in, "quarantined": result.quarantined, **result.splits,
        "exact_duplicates": run.exact_removed, "near_duplicates": sum(near_pairs.values()),
    })
    return result


def render_config(cfg: PrepSection) -> dict[str, Any]:
    """The part of the prep config that decides how examples are rendered (a cache key component)."""
    return {"tokenize": cfg.tokenize.model_dump(exclude={"tokenizer"}), "system_prompt": cfg.system_prompt}


def _write_template(run: _Run, out_dir: Path) -> dict[str, str]:
    """The chat template the splits were rendered and checked with travels with them: tune trains with
    it and saves it with the tuned model, so eval and serve use it too. No rendering: no template (a
    stale copy from an earlier run would be read as this data's)."""
    path = out_dir / TEMPLATE_FILE
    if run.renderer is None:
        path.unlink(missing_ok=True)
        return {}
    atomic_write_text(path, run.renderer.template)
    return {"chat_template": str(path)}


def _commit_cache(run: _Run, out_dir: Path, tok_dir: Path, hashes: dict[str, str]) -> dict[str, Any]:
    """Move the freshly written token files under their content key (keeping only that one)."""
    from llmops_cli.prep.cache import CACHE_DIR, MANIFEST, cache_key, cache_path

    assert run.renderer is not None
    info = run.renderer.info()
    split_hashes = {name: hashes[name] for name in SPLITS}
    key = cache_key(split_hashes, info["tokenizer_sha256"], info["chat_template_sha256"], render_config(run.cfg))
    target = cache_path(out_dir, key)
    files = {f"{name}.parquet": sha256_file(tok_dir / f"{name}.parquet") for name in SPLITS}
    atomic_write_json(tok_dir / MANIFEST, {
        "key": key, "data": split_hashes, **info, "config": render_config(run.cfg), "files": files,
    })
    hit = (target / MANIFEST).is_file() and json.loads((target / MANIFEST).read_text())["key"] == key
    if hit:
        shutil.rmtree(tok_dir, ignore_errors=True)
    else:
        shutil.rmtree(target, ignore_errors=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        tok_dir.rename(target)
    for other in (out_dir / CACHE_DIR).iterdir():  # older keys can never be read again: drop them
        if other.is_dir() and other != target:
            shutil.rmtree(other, ignore_errors=True)
    return {"key": key, "dir": str(target), "hit": hit}
