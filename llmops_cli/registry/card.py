"""What a version records beyond its files: serve-readiness and a generated model card."""

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
    """A model card (Markdown) from the version record alone: intended use, data, training, metrics."""
    name, manifest = version.ref, version.manifest
    base = manifest.get("base_model") or {}
    training = manifest.get("training") or {}
    tune_cfg = ((training.get("config") or {}).get("tune")) or {}
    evaluation = manifest.get("eval") or {}
    data = manifest.get("data") or {}
    readiness = manifest.get("serve_readiness") or {}
    lines = [
        f"# {name}",
        "",
        "## Intended use",
        f"A fine-tune of `{base.get('id')}` for the task in its training data (see Data). Use it through an",
        "OpenAI-compatible endpoint (`llmops serve`) with the chat template stored in this version.",
        "",
        "## Base model and training",
        f"- base: `{base.get('id')}`" + (f" (content sha256 `{base.get('content_sha256', '')[:16]}`)"
                                        if base.get("content_sha256") else f" (revision {base.get('revision')})"),
        f"- method: {tune_cfg.get('method', 'unknown')}"
        + (f", LoRA r={readiness.get('lora_rank')}" if readiness.get("lora_rank") else ""),
        f"- epochs: {tune_cfg.get('epochs')}, learning rate: {tune_cfg.get('learning_rate')}",
        "",
        "## Data",
        f"- splits: {json.dumps(data.get('splits'))}",
        f"- prep output hashes: {len(data.get('prep_hashes') or {})} files recorded in the version manifest",
        "",
        "## Evaluation",
        f"- examples: {evaluation.get('n')}",
    ]
    for model in ("base", "tuned"):
        metrics = evaluation.get(model) or {}
        shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, int | float))
        if shown:
            lines.append(f"- {model}: {shown}")
    for gate in evaluation.get("gates") or []:
        lines.append(f"- gate `{gate.get('gate')}`: {'pass' if gate.get('passed') else 'FAIL'}")
    lines += [
        "",
        "## Limitations",
        "- Measured only on the held-out split of the same data distribution; behaviour outside it is unknown.",
        "- Inherits the base model's biases and failure modes; run `llmops eval` safety probes before exposure.",
    ]
    lines += [f"- serving: {reason}" for reason in readiness.get("reasons") or []]
    return "\n".join(lines) + "\n"
