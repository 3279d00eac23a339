"""What a version records beyond its files: serve-readiness, and its model card rendered from the record."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmops_cli.registry.base import Version

# vLLM serves LoRA adapters only up to its max_lora_rank and cannot serve these as adapters.
_NEEDS_MERGE_KEYS = ("modules_to_save",)


def chat_template_of(model_dir: Path) -> str | None:
    template = model_dir / "chat_template.jinja"
    if template.is_file():
        return template.read_text(encoding="utf-8")
    config = model_dir / "tokenizer_config.json"
    if config.is_file():
        value = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
        return value if isinstance(value, str) else None
    return None


def serve_readiness(model_dir: Path, prep_report: dict[str, Any]) -> dict[str, Any]:
    """What a server needs to know: LoRA rank, whether a merge is required, and template/EOS agreement."""
    reasons: list[str] = []
    lora_rank = None
    requires_merge = False
    adapter_cfg = model_dir / "adapter_config.json"
    if adapter_cfg.is_file():
        adapter = json.loads(adapter_cfg.read_text(encoding="utf-8"))
        lora_rank = adapter.get("r")
        if isinstance(adapter.get("rank_pattern"), dict) and adapter["rank_pattern"]:
            lora_rank = max([lora_rank or 0, *adapter["rank_pattern"].values()])
        for key in _NEEDS_MERGE_KEYS:
            if adapter.get(key):
                requires_merge = True
                reasons.append(f"adapter has {key}={adapter[key]}: vLLM cannot serve it as a LoRA adapter; "
                               "serve a merged model (`llmops register export --merge`)")
        base_config = Path(str(adapter.get("base_model_name_or_path") or "")) / "config.json"
        vocab = _tokenizer_size(model_dir)
        if base_config.is_file() and vocab:
            base_vocab = json.loads(base_config.read_text(encoding="utf-8")).get("vocab_size")
            if base_vocab and vocab > base_vocab:
                requires_merge = True
                reasons.append(f"tokenizer has {vocab} tokens but the base embeddings {base_vocab}: resized "
                               "embeddings need a merged model")
    template = chat_template_of(model_dir)
    template_sha = hashlib.sha256(template.encode()).hexdigest() if template else None
    trained_sha = ((prep_report.get("chat_template") or {}).get("chat_template_sha256"))
    if template is None:
        reasons.append("no chat template saved with the model: the server would format prompts differently")
    elif trained_sha and trained_sha != template_sha:
        reasons.append("the chat template differs from the one prep rendered the training data with")
    eos = _eos_token(model_dir)
    trained_eos = (prep_report.get("chat_template") or {}).get("eos_token")
    if trained_eos and eos and trained_eos != eos:
        reasons.append(f"EOS token {eos!r} differs from the one used in training ({trained_eos!r})")
    return {"lora_rank": lora_rank, "requires_merge": requires_merge, "reasons": reasons, "eos_token": eos,
            "chat_template_sha256": template_sha}


def _tokenizer_size(model_dir: Path) -> int | None:
    tok = model_dir / "tokenizer.json"
    if not tok.is_file():
        return None
    data = json.loads(tok.read_text(encoding="utf-8"))
    # Added tokens usually repeat ids already in the vocab: the size is the highest id + 1.
    vocab = data.get("model", {}).get("vocab")
    ids = [*(vocab.values() if isinstance(vocab, dict) else range(len(vocab or []))),
           *(t["id"] for t in data.get("added_tokens") or [])]
    return max(ids) + 1 if ids else None


def _eos_token(model_dir: Path) -> str | None:
    config = model_dir / "tokenizer_config.json"
    if not config.is_file():
        return None
    eos = json.loads(config.read_text(encoding="utf-8")).get("eos_token")
    return eos.get("content") if isinstance(eos, dict) else eos


def model_card(version: Version) -> str:
    """The model card (Markdown) of a version, rendered from its record alone: the same record gives the
    same bytes, and nothing on disk or in the config can make the card disagree with the registry."""
    manifest = version.manifest
    lines = [f"# {version.ref}", ""]
    if version.forced:
        lines += [f"> **Registered with --force: {version.force_reason or '(no reason given)'}**", ""]
    lines += _identity(version)
    lines += ["", "## License", str(manifest.get("license") or "unknown")]
    base_id = (manifest.get("base_model") or {}).get("id")
    lines += ["", "## Intended use",
              f"A fine-tune of `{base_id}` for the task in its training data (see Data). Use it through an",
              "OpenAI-compatible endpoint (`llmops serve`) with the chat template stored in this version."]
    lines += ["", "## Base model and training", *_training(manifest)]
    lines += ["", "## Data", *_data(manifest.get("data") or {})]
    lines += ["", "## Evaluation", *_evaluation(manifest.get("eval") or {})]
    lines += ["", "## Safety", *_safety((manifest.get("eval") or {}).get("safety"))]
    lines += ["", "## Serving readiness", *_readiness(manifest.get("serve_readiness") or {})]
    lines += ["", "## Limitations", *_limitations(version)]
    return "\n".join(lines) + "\n"


def _identity(version: Version) -> list[str]:
    os_user = version.manifest.get("registered_by_os_user")
    by = version.created_by + (f" (OS user: {os_user})" if os_user and os_user != version.created_by else "")
    return [f"- registered: {version.created_at}", f"- by: {by}",
            f"- git commit: `{version.manifest.get('git_commit') or 'unknown'}`", f"- digest: `{version.digest}`"]


def _training(manifest: dict[str, Any]) -> list[str]:
    base = manifest.get("base_model") or {}
    tune_cfg = (((manifest.get("training") or {}).get("config") or {}).get("tune")) or {}
    rank = (manifest.get("serve_readiness") or {}).get("lora_rank")
    pinned = (f"content sha256 `{_short(base['content_sha256'])}`" if base.get("content_sha256")
              else f"revision {base.get('revision')}")
    lines = [f"- base: `{base.get('id')}` ({pinned})",
             f"- method: {tune_cfg.get('method', 'unknown')}" + (f", LoRA r={rank}" if rank else ""),
             f"- epochs: {tune_cfg.get('epochs')}, learning rate: {tune_cfg.get('learning_rate')}"]
    tokenizer = manifest.get("tokenizer") or {}
    if tokenizer.get("sha256"):
        lines.append(f"- tokenizer sha256 `{_short(tokenizer['sha256'])}` ({', '.join(sorted(tokenizer['files']))})")
    env = manifest.get("environment") or {}
    if env:
        torch = env.get("torch") or {}
        build = f", torch {torch.get('version')} (CUDA {torch.get('cuda')})" if torch.get("version") else ""
        lines.append(f"- environment: Python {(env.get('python') or {}).get('version')}{build}, "
                     f"{len(env.get('packages') or {})} packages recorded")
    return lines


def _data(data: dict[str, Any]) -> list[str]:
    lines = [_source_line(source) for source in data.get("sources") or []]
    splits = data.get("splits") or {}
    order = sorted(splits, key=lambda s: (("train", "validation", "test", s).index(s), s))
    lines.append("- splits: " + (", ".join(f"{s}={splits[s]}" for s in order) or "unknown"))
    prep = data.get("prep_config") or {}
    if prep:
        pii = ", ".join(f"{k}={v}" for k, v in sorted((prep.get("pii") or {}).items()))
        near_dup = prep.get("near_dup") or {}
        near = f"on (threshold {near_dup.get('threshold')})" if near_dup.get("enabled") else "off"
        lines.append(f"- prep: exact dedup={prep.get('dedup')}, near-duplicate removal {near}, "
                     f"PII: {pii or 'unchanged'}")
    lines.append(f"- prep output hashes: {len(data.get('prep_hashes') or {})} files recorded in the version manifest")
    return lines


def _source_line(source: dict[str, Any]) -> str:
    if source.get("hub"):
        return f"- source `hub:{source['hub']}`: a hub dataset, content not hashed"
    if source.get("missing"):
        return f"- source `{source.get('path')}`: missing when registered"
    rows = f", {source['rows_in']} rows in, {source.get('rows_out')} kept" if "rows_in" in source else ""
    return (f"- source `{source.get('path')}`: sha256 `{_short(source.get('sha256'))}` "
            f"({source.get('bytes')} bytes{rows})")


def _evaluation(evaluation: dict[str, Any]) -> list[str]:
    lines = [f"- examples: {evaluation.get('n')}"]
    for model in ("base", "production", "tuned"):
        shown = _metrics(evaluation.get(model) or {})
        if shown:
            lines.append(f"- {model}: {shown}")
    for key, label in (("delta", "delta vs base"), ("delta_production", "delta vs production")):
        delta = evaluation.get(key) or {}
        shown = _metrics(delta, sign=True)
        ci = delta.get("exact_match_ci") or {}
        if ci.get("ci_low") is not None and ci.get("ci_high") is not None:
            shown += f" (exact_match 95% CI [{ci['ci_low']:.4g}, {ci['ci_high']:.4g}])"
        if shown:
            lines.append(f"- {label}: {shown}")
    for gate in evaluation.get("gates") or []:
        lines.append(f"- gate `{gate.get('gate')}`: {'pass' if gate.get('passed') else 'FAIL'}")
    return lines


def _metrics(metrics: dict[str, Any], sign: bool = False) -> str:
    fmt = "{:+.4g}" if sign else "{:.4g}"
    return ", ".join(f"{k}={fmt.format(v)}" for k, v in sorted(metrics.items())
                     if isinstance(v, int | float) and not isinstance(v, bool))


def _safety(safety: dict[str, Any] | None) -> list[str]:
    if not safety:
        return ["- not run (eval.safety was off or the eval predates it)"]
    return [f"- refusal rate on harmful requests: {_num(safety.get('refusal_rate'))}",
            f"- leak rate (injection, system prompt, PII): {_num(safety.get('leak_rate'))}",
            f"- bias pairs answered differently: {_num(safety.get('bias_disparity_rate'))}",
            f"- probes: {safety.get('probes')}"]


def _readiness(readiness: dict[str, Any]) -> list[str]:
    lines = [f"- LoRA rank: {readiness.get('lora_rank')}, requires merge: {readiness.get('requires_merge')}"]
    reasons = readiness.get("reasons") or []
    return lines + ([f"- {reason}" for reason in reasons] or ["- no problems found"])


def _limitations(version: Version) -> list[str]:
    lines = []
    if version.forced:
        failed = [g.get("gate") for g in (version.manifest.get("eval") or {}).get("gates") or [] if not g.get("passed")]
        lines.append(f"- Registered with --force: {version.force_reason or '(no reason given)'}"
                     + (f"; failed gates: {', '.join(map(str, failed))}" if failed else ""))
    lines += [
        "- Measured only on the held-out split of the same data distribution; behaviour outside it is unknown.",
        "- Inherits the base model's biases and failure modes; run `llmops eval` safety probes before exposure.",
    ]
    reasons = (version.manifest.get("serve_readiness") or {}).get("reasons") or []
    return lines + [f"- serving: {reason}" for reason in reasons]


def _short(digest: Any) -> str:
    return str(digest)[:12] if digest else "unknown"


def _num(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) else "n/a"
