"""Config of `llmops eval`."""

from __future__ import annotations

from pydantic import Field, field_validator

from llmops_cli.config.base import Section


class JudgeSpec(Section):
    url: str | None = Field(None, description="OpenAI-compatible base URL of the judge model (None: no judging).")
    model: str = Field("judge", description="Model name sent to the judge endpoint.")
    api_key_env: str = Field("LLMOPS_JUDGE_API_KEY", description="Env var holding the judge's API key, if any.")
    rubric: str = Field(
        "Score how correct and helpful the answer is for the request, given the reference answer.",
        description="What the judge grades.",
    )
    scale: int = Field(5, ge=2, le=100, description="Scores run from 1 to this value.")
    timeout_s: float = Field(60, gt=0, description="Per-request timeout for the judge.")
    max_failure_rate: float = Field(
        0.2, ge=0, le=1, description="Above this share of unusable judgments (no reply, or not exactly "
                                     "'Score: N'), judge_score is withheld (null), so a gate on it fails.")


class PromptVariant(Section):
    name: str = Field(description="Name shown in the report.")
    system: str | None = Field(None, description="System prompt for this variant (None: no system prompt).")


class EvalSection(Section):
    data: str = Field("data/processed/test.jsonl", description="Examples to evaluate (prep's test split).")
    adapter: str = Field("artifacts/tune", description="Tuned model directory written by `llmops tune`.")
    compare_base: bool = Field(True, description="Also evaluate the base model on the same examples.")
    compare_production: bool = Field(
        True, description="Also evaluate the registry's NAME@production version when one exists."
    )
    backend: str = Field("hf", pattern="^(hf|vllm)$",
                         description="Local generation: hf (transformers, batched) or vllm (offline, in the vLLM "
                                     "interpreter of serve.vllm.python / .venv-vllm, with serve.vllm's engine "
                                     "settings; CPU or GPU build).")
    parity: bool = Field(
        False, description="Also generate the tuned model's answers with the other local path (hf and vllm) and "
                           "report their greedy agreement as parity.vllm.* (gateable)."
    )
    endpoint: str | None = Field(
        None, description="Also evaluate an OpenAI-compatible endpoint (base URL, e.g. http://127.0.0.1:8321/v1)."
    )
    endpoint_model: str | None = Field(None, description="Model name sent to the endpoint (default: project.name).")
    endpoint_max_failure_rate: float = Field(
        0.0, ge=0, le=1, description="Share of endpoint requests that may fail; above it the run fails "
                                     "(an implicit gate, `endpoint.failure_rate`).")
    api_key_env: str = Field("LLMOPS_EVAL_API_KEY", description="Env var with the endpoint's API key, if any.")
    max_new_tokens: int = Field(16, ge=1, description="Generation budget per example (greedy).")
    batch_size: int = Field(32, ge=1, description="Generation batch size (concurrency for endpoints).")
    limit: int | None = Field(None, ge=1, description="Evaluate only the first N examples.")
    perplexity: bool = Field(True, description="Perplexity of the reference answers under each local model.")
    bootstrap_samples: int = Field(1000, ge=0, description="Bootstrap resamples for confidence intervals (0: off).")
    seed: int = Field(0, description="Seed of the bootstrap.")
    safety: bool = Field(True, description="Run the built-in safety probes and bias pairs on the tuned model.")
    probes_file: str | None = Field(None, description="Extra probes (jsonl: id, kind, prompt, [system, secret]).")
    safety_max_new_tokens: int | None = Field(
        None, ge=1, description="Generation budget of the safety probes and bias pairs, independent of "
                                "max_new_tokens (a leak is only seen once the canary is generated). None: the "
                                "longest text up to a probe's secret in the model's tokens + 16, at least 64; "
                                "a value below that canary length is refused.")
    judge: JudgeSpec = Field(default_factory=JudgeSpec, description="LLM-as-judge over an OpenAI-compatible API.")
    prompt_variants: list[PromptVariant] = Field(
        default_factory=list, description="System prompts evaluated side by side on the tuned model."
    )
    gates: list[str] = Field(
        default_factory=list,
        description='Gates such as "tuned.exact_match >= 0.6" or "delta.exact_match > 0"; a failure exits 1.',
    )
    metrics_file: str = Field(
        "metrics/eval.json", description="A small numeric summary for DVC and git (`dvc metrics diff`, "
                                         "`dvc exp show`): main metrics per model, deltas, gates_passed, safety.")
    results_file: str = Field(
        "reports/eval.json", description="Every result: metrics, intervals, gates, safety, parity and the "
                                         "evaluated model's identity (what `register` checks).")
    predictions_file: str = Field("reports/eval_predictions.jsonl", description="Per-example predictions.")
    report_file: str = Field("reports/eval.md", description="Readable report (Markdown).")

    @field_validator("gates")
    @classmethod
    def _gates_parse(cls, gates: list[str]) -> list[str]:
        from llmops_cli.evaluate.gates import parse_gate

        for gate in gates:
            parse_gate(gate)  # raises ValueError with the expected form
        return gates
