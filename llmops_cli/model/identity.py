"""What exactly a model is, as content hashes: eval records it, register and serve check it."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from llmops_cli.model.config import ModelSection
from llmops_cli.utils import hash_tree, tree_digest


def base_model_identity(base: str, revision: str | None) -> dict[str, Any]:
    """A content hash for a local directory, id + revision for the hub."""
    path = Path(base)
    if path.is_dir():
        files = {k: v for k, v in hash_tree(path).items() if k != "scaffold.json"}
        return {"id": base, "local": True, "content_sha256": tree_digest(files)}
    return {"id": base, "local": False, "revision": revision}


def evaluated_model_identity(model_dir: str | Path, model: ModelSection) -> dict[str, Any]:
    """The identity eval records: the content digest of the directory it evaluated (the registry's
    version digest is computed over the same files), the base it was applied to (for an adapter) and
    the chat template its prompts were rendered with."""
    from llmops_cli.model.loading import is_adapter_dir
    from llmops_cli.registry.base import model_digest
    from llmops_cli.registry.card import chat_template_of

    digest, _files = model_digest(model_dir)
    adapter = is_adapter_dir(model_dir)
    template = chat_template_of(Path(model_dir))
    return {
        "dir": str(model_dir), "digest": digest, "adapter": adapter,
        "base": base_model_identity(model.base, model.revision) if adapter else None,
        "chat_template_sha256": hashlib.sha256(template.encode()).hexdigest() if template else None,
    }


def same_base(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """Whether two base identities name the same weights (content hash when both have one)."""
    if not a or not b:
        return True  # nothing recorded on one side: nothing to contradict
    if a.get("content_sha256") and b.get("content_sha256"):
        return a["content_sha256"] == b["content_sha256"]
    return (a.get("id"), a.get("revision")) == (b.get("id"), b.get("revision"))
