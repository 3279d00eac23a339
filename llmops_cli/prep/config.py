"""Config of `llmops prep`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from llmops_cli.config.base import Section

Schema = Literal["auto", "prompt_completion", "alpaca", "messages", "sharegpt", "text"]


class SourceSpec(Section):
    path: str | None = Field(
        None,
        description="A jsonl, json, csv or parquet file (the text formats also .gz, .bz2 or .zst compressed), "
                    "a glob of them, or a Hugging Face save_to_disk directory.",
    )
    hub: str | None = Field(
        None, description="A Hugging Face hub dataset id (owner/name), read when the hub is reachable."
    )
    split: str | None = Field(
        None, description="Split to read from a hub dataset or a saved DatasetDict (default: train / all)."
    )
    schema_: Schema | None = Field(
        None, alias="schema", description="Override prep.schema for this source."
    )
    prompt_field: str | None = Field(None, description="Override prep.fields.prompt for this source.")
    completion_field: str | None = Field(None, description="Override prep.fields.completion for this source.")
    weight: float = Field(
        1.0, gt=0, le=1,
        description="Fraction of this source's rows to keep (a deterministic hash sample); the rest are "
                    "quarantined as `sampled_out`.",
    )
    max_rows: int | None = Field(
        None, ge=1, description="Keep at most this many rows of the source (a deterministic hash sample)."
    )
    tools: list[dict[str, Any]] | str | None = Field(
        None,
        description="Functions the rows of this source may call (OpenAI `tools` list, inline or a path to a "
                    "JSON file holding it), for rows without a `tools` field of their own.",
    )
    encoding: str = Field(
        "utf-8",
        description="Text encoding of the source's jsonl / json / csv files (a UTF-8 byte-order mark is "
                    "skipped), e.g. latin-1 or cp1252 for a legacy export; ASCII-compatible encodings only.",
    )

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        import codecs

        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding {value!r} (e.g. utf-8, latin-1, cp1252)") from None
        if "\n".encode(value) != b"\n" or "a,".encode(value) != b"a,":  # lines are split as bytes
            raise ValueError(f"{value} is not ASCII-compatible: re-export the file as UTF-8")
        return value

    @field_validator("tools")
    @classmethod
    def _tools_are_functions(cls, value: Any) -> Any:
        if isinstance(value, list):
            from llmops_cli.prep.tools import ToolReject, parse_tools

            try:
                parse_tools(value, "tools")
            except ToolReject as exc:
                raise ValueError(exc.detail) from None
        return value

    @model_validator(mode="after")
    def _one_location(self) -> SourceSpec:
        if (self.path is None) == (self.hub is None):
            raise ValueError("give exactly one of `path` (files, a glob or a directory) or `hub` (a dataset id)")
        return self

    @property
    def name(self) -> str:
        return self.path if self.path is not None else f"hub:{self.hub}"


class FieldMap(Section):
    id: str | None = Field("id", description="Row id field (optional; a content hash is used when absent).")
    prompt: str = Field("prompt", description="Field holding the user prompt (prompt_completion schema).")
    completion: str = Field("completion", description="Field holding the target completion (prompt_completion).")
    completion_template: str | None = Field(
        None,
        description='Build the completion from several input fields instead, e.g. "{category}: {reply}" '
                    "(plain {field} names only; a row missing one is quarantined naming it). A source's "
                    "completion_field still takes its completion from that one field.",
    )
    label: str | None = Field(None, description="Optional label field, reported as a distribution.")
    system: str | None = Field("system", description="Per-row system prompt field, if present.")
    instruction: str = Field("instruction", description="Alpaca: the instruction field.")
    input: str = Field("input", description="Alpaca: the optional input (context) field.")
    output: str = Field("output", description="Alpaca: the answer field.")
    messages: str = Field(
        "messages", description="Chat: the list of turns (OpenAI `messages` or ShareGPT `conversations`)."
    )
    text: str = Field("text", description="Raw text for continued pre-training (text schema).")
    tools: str = Field(
        "tools", description="Chat: a row's tool list (OpenAI `tools`, or its JSON text as ShareGPT exports have it)."
    )

    @field_validator("completion_template")
    @classmethod
    def _template_names_fields(cls, template: str | None) -> str | None:
        if template is not None:
            template_fields(template)  # raises ValueError saying what is wrong
        return template

    @property
    def template_fields(self) -> list[str]:
        """The input fields completion_template reads, in order of first use."""
        return template_fields(self.completion_template) if self.completion_template else []


def template_fields(template: str) -> list[str]:
    """The {field} names of a completion template; ValueError for anything but plain names."""
    import string

    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"{template!r} is not a valid template ({exc}); write fields as {{name}}") from None
    names: list[str] = []
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        # Only plain names: an index, attribute, conversion or format spec would read or reshape
        # something other than the row's field text.
        if not name.isidentifier() or spec or conversion:
            raise ValueError(f"{template!r}: use plain field names such as {{category}}, not {{{name}...}}")
        if name not in names:
            names.append(name)
    if not names:
        raise ValueError(f"{template!r} names no field; write fields as {{name}}, e.g. \"{{category}}: {{reply}}\"")
    return names


class SplitSpec(Section):
    validation: float = Field(0.1, ge=0, lt=1, description="Fraction of rows in the validation split.")
    test: float = Field(0.1, ge=0, lt=1, description="Fraction of rows in the test split.")
    salt: str = Field(
        "llmops", description="Salt of the hash that assigns rows to splits; change it to reshuffle."
    )
    stratify: bool = Field(
        False,
        description="Stratify by the label field: exact per-label fractions (rows are ranked by their hash "
                    "within each label, so an append can move a row that sits on a quota boundary).",
    )

    @model_validator(mode="after")
    def _fractions_leave_train(self) -> SplitSpec:
        if self.validation + self.test >= 1:
            raise ValueError("validation + test must be below 1 so that some rows are left for train")
        return self


PiiAction = Literal["redact", "drop", "keep"]


def _pii(action: str, what: str) -> PiiAction:
    return Field(action, description=f"What to do with {what}: redact, drop the row, or keep.")  # type: ignore[return-value]


class PiiSpec(Section):
    email: PiiAction = _pii("redact", "email addresses")
    phone: PiiAction = _pii(
        "redact", "phone numbers (grouped national/international, E.164, NANP with or without separators; a bare "
                  "10-digit number right after order/invoice/ticket/tracking/account/ref is an order number)"
    )
    credit_card: PiiAction = _pii("redact", "credit card numbers (Luhn-checked)")
    ip: PiiAction = _pii("redact", "IPv4 and IPv6 addresses")
    iban: PiiAction = _pii("redact", "IBANs (mod-97 checked)")
    aws_key: PiiAction = _pii("drop", "AWS access key ids")
    aws_secret: PiiAction = _pii(
        "drop", "AWS secret access keys (40 base64 characters after aws_secret_access_key or near a key id)"
    )
    slack_token: PiiAction = _pii("drop", "Slack tokens (xoxb-, xoxp-, xoxa-, xoxs-, …)")
    jwt: PiiAction = _pii("drop", "JSON Web Tokens (eyJ….….…)")
    github_token: PiiAction = _pii("drop", "GitHub tokens (ghp_, github_pat_, …)")
    openai_key: PiiAction = _pii("drop", "OpenAI-style API keys (sk-…)")
    private_key: PiiAction = _pii("drop", "PEM private key blocks")


class NearDupSpec(Section):
    enabled: bool = Field(True, description="Remove near-duplicates (MinHash LSH candidates, exact Jaccard check).")
    threshold: float = Field(
        0.8, gt=0, lt=1,
        description="Exact Jaccard similarity of the word n-gram sets at which two rows are near-duplicates.",
    )
    num_perm: int = Field(
        128, ge=16, le=512,
        description="Most MinHash permutations (LSH bands x rows per band): the banding is chosen within it to "
                    "reach max_miss with the fewest false candidates; more: slower signatures, fewer candidates.",
    )
    max_miss: float = Field(
        1e-6, gt=0, le=0.01,
        description="Highest probability that LSH misses a pair at the threshold (pairs above it are missed "
                    "less often); every candidate is then checked with the exact Jaccard similarity.",
    )
    ngram: int = Field(3, ge=1, le=10, description="Word n-gram size of the shingles.")

    @model_validator(mode="after")
    def _banding(self) -> NearDupSpec:
        if self.enabled:
            from llmops_cli.prep.neardup import lsh_bands

            lsh_bands(self.threshold, self.max_miss, self.num_perm)  # raises ValueError naming num_perm
        return self


class TokenizeSpec(Section):
    enabled: bool = Field(
        True,
        description="Render examples with the chat template, count tokens, record the trainable-token mask, "
                    "check EOS and write the tokenization cache (needs the base model's tokenizer).",
    )
    tokenizer: str | None = Field(None, description="Tokenizer to use (default: model.base).")
    template: str | None = Field(
        None,
        description="Chat template: null = the tokenizer's own, `chatml` = the bundled ChatML template, "
                    "or a path to a .jinja file.",
    )
    min_tokens: int = Field(0, ge=0, description="Rows whose rendered example has fewer tokens are quarantined.")
    max_tokens: int | None = Field(
        None, ge=1, description="Rows whose rendered example has more tokens are quarantined (null: no limit)."
    )
    require_eos: bool = Field(
        True, description="Fail when a rendered example does not end its answer with the tokenizer's EOS token."
    )

    @field_validator("max_tokens")
    @classmethod
    def _max_not_below_min(cls, value: int | None, info: ValidationInfo) -> int | None:
        low = info.data.get("min_tokens")
        if value is not None and low is not None and low > value:
            raise ValueError(f"prep.tokenize.min_tokens ({low}) is above prep.tokenize.max_tokens ({value}): every "
                             "row would be quarantined; lower min_tokens or raise max_tokens")
        return value


class LanguageSpec(Section):
    keep: list[str] | None = Field(
        None, description="ISO 639-1 codes to keep (e.g. [en, de]); null turns the language filter off."
    )
    min_chars: int = Field(20, ge=0, description="Rows shorter than this are not language-checked (too noisy).")
    seed: int = Field(0, description="langdetect seed, so that detection is deterministic.")

    @field_validator("keep")
    @classmethod
    def _some_language(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("an empty list keeps no row: list the languages to keep (e.g. [en]); "
                             "null turns the language filter off")
        return value


class PrepSection(Section):
    sources: list[SourceSpec] = Field(
        default_factory=lambda: [SourceSpec(path="data/raw/*.jsonl")],
        description="Input files; each row ends in a split or in the quarantine file.",
    )
    schema_: Schema = Field(
        "auto", alias="schema",
        description="Row schema: prompt_completion, alpaca, messages (OpenAI), sharegpt, text, or auto "
                    "(detected per file from the fields present).",
    )
    fields: FieldMap = Field(default_factory=FieldMap, description="Which input fields hold what.")
    system_prompt: str | None = Field(None, description="System prompt put before every example.")
    min_chars: int = Field(1, ge=0, description="Rows whose prompt is shorter (after cleaning) are quarantined.")
    max_chars: int = Field(8000, ge=1, description="Rows whose prompt is longer are quarantined.")

    @field_validator("sources")
    @classmethod
    def _some_distinct_sources(cls, value: list[SourceSpec]) -> list[SourceSpec]:
        if not value:
            raise ValueError("no sources: list at least one input (e.g. `- path: data/raw/*.jsonl`)")
        seen: set[str] = set()
        for spec in value:
            if spec.name in seen:  # its rows would all be quarantined as duplicates of the first listing
                raise ValueError(f"{spec.name} is listed twice: remove one of the entries")
            seen.add(spec.name)
        return value

    @field_validator("max_chars")
    @classmethod
    def _max_not_below_min(cls, value: int, info: ValidationInfo) -> int:
        low = info.data.get("min_chars")
        if low is not None and low > value:
            raise ValueError(f"prep.min_chars ({low}) is above prep.max_chars ({value}): every row would be "
                             "quarantined; lower min_chars or raise max_chars")
        return value
    max_row_bytes: int = Field(
        1_000_000, ge=1, description="Rows larger than this (raw bytes) are quarantined unparsed as `too_large`."
    )
    dedup: bool = Field(True, description="Quarantine exact duplicates (after normalising case and spaces).")
    near_dup: NearDupSpec = Field(default_factory=NearDupSpec, description="Near-duplicate removal across splits.")
    pii: PiiSpec = Field(default_factory=PiiSpec, description="PII policy per type.")
    language: LanguageSpec = Field(default_factory=LanguageSpec, description="Optional language filter.")
    tokenize: TokenizeSpec = Field(default_factory=TokenizeSpec, description="Chat template and token checks.")
    splits: SplitSpec = Field(default_factory=SplitSpec, description="Deterministic hash-based splits.")
    output_dir: str = Field(
        "data/processed", description="Where train/validation/test/quarantine jsonl, parquet and the cache go."
    )
    report: str = Field("reports/prep.json", description="Prep report (counts per source, filter and split).")
    metrics_file: str = Field("metrics/prep.json", description="A small numeric summary for DVC and git: rows in, "
                                                               "per split, quarantined, duplicates removed.")

    @model_validator(mode="after")
    def _stratify_needs_a_label(self) -> PrepSection:
        if self.splits.stratify and not self.fields.label:
            raise ValueError("splits.stratify needs a label field: set prep.fields.label")
        return self
