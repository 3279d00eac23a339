"""Config of the base model and of `llmops model scaffold`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from llmops_cli.config.base import Section


class ModelSection(Section):
    base: str = Field(
        "models/base",
        description="Base model: a Hugging Face hub id (e.g. Qwen/Qwen2.5-0.5B) or a local directory.",
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) to pin the base model.")
    trust_remote_code: bool = Field(
        False, description="Run model code shipped with the checkpoint. Off by default: it executes remote code."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weight dtype; auto picks bfloat16 on a capable GPU and float32 on CPU."
    )
    token_env: str = Field("HF_TOKEN", description="Environment variable holding a hub token for gated models.")


class ScaffoldSection(Section):
    output: str = Field("models/base", description="Directory the scaffolded base model is written to.")
    corpus: list[str] = Field(
        default_factory=lambda: ["data/raw/*.jsonl", "data/raw/*.csv"],
        description="Text files (globs allowed) the BPE tokenizer is trained on.",
    )
    vocab_size: int = Field(2048, ge=256, description="Tokenizer vocabulary size.")
    hidden_size: int = Field(128, ge=16, description="Hidden size of the random-initialised Llama.")
    num_layers: int = Field(2, ge=1, description="Number of decoder layers.")
    num_heads: int = Field(2, ge=1, description="Attention heads (head_dim = hidden_size / num_heads).")
    intermediate_size: int = Field(256, ge=16, description="MLP intermediate size.")
    max_position_embeddings: int = Field(1024, ge=64, description="Context length of the scaffolded model.")
    seed: int = Field(0, description="Seed for the random weights.")

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> ScaffoldSection:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})"
            )
        return self
