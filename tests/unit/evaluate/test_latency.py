"""Per-request latency: a batched row's latency is the time to its own last token, not the batch's wall
time copied to every row, so p50 at batch 1 and at batch 64 measure the same thing."""

import time
from types import SimpleNamespace

import pytest
import torch

from llmops_cli.evaluate.generate import generate
from llmops_cli.evaluate.metrics import percentiles_ms
from llmops_cli.evaluate.vllm_offline import request_timings

STEP_S = 0.005


class StandInModel:
    """Decodes like `model.generate` (one token per step for every unfinished row, stopping criteria called
    after each step, EOS then padding) but each row's answer length is given: row k of the run gets
    lengths[k] tokens (the last one EOS). Each step costs STEP_S whatever the batch size."""

    device = torch.device("cpu")

    def __init__(self, lengths: list[int], eos: int, pad: int, word: int) -> None:
        self.lengths, self.eos, self.pad, self.word = lengths, eos, pad, word
        self.seen = 0

    def generate(self, input_ids, attention_mask, max_new_tokens, stopping_criteria=None, **_kwargs):
        lengths = self.lengths[self.seen : self.seen + input_ids.shape[0]]
        self.seen += input_ids.shape[0]
        ids = input_ids
        for step in range(1, max_new_tokens + 1):
            time.sleep(STEP_S)
            column = [self.word if step < n else self.eos if step == n else self.pad for n in lengths]
            ids = torch.cat([ids, torch.tensor(column).unsqueeze(1)], dim=1)
            for criterion in stopping_criteria or []:
                criterion(ids, None)
            if step >= max(lengths):
                break
        return ids


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def _stand_in(tokenizer, lengths: list[int]) -> StandInModel:
    return StandInModel(lengths, tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.convert_tokens_to_ids("a"))


def test_rows_of_one_batch_get_the_time_to_their_own_last_token(tokenizer):
    lengths = [6, 1, 12, 3, 9, 2, 4, 7]
    gens = generate(_stand_in(tokenizer, lengths), tokenizer, [f"prompt {i}" for i in range(8)], 16, 8)
    assert len(gens.latencies) == 8
    assert len(set(gens.latencies)) == 8  # not one batch time copied to each row
    by_length = [latency for _, latency in sorted(zip(lengths, gens.latencies, strict=True))]
    assert by_length == sorted(by_length)  # a row that stops earlier has a shorter latency
    for n, latency in zip(lengths, gens.latencies, strict=True):
        assert latency >= n * STEP_S
    assert max(gens.latencies) <= gens.seconds
    assert len(set(gens.ttft)) == 1 and gens.ttft[0] <= min(gens.latencies)  # one first step for the batch
    assert gens.texts[1] == "" and gens.new_tokens == sum(lengths) - len(lengths)  # EOS is not text


def test_a_row_cut_at_max_new_tokens_ends_with_the_last_step(tokenizer):
    gens = generate(_stand_in(tokenizer, [3, 50]), tokenizer, ["x", "y"], 5, 2)
    assert gens.latencies[0] < gens.latencies[1] <= gens.seconds
    assert gens.latencies[1] >= 5 * STEP_S


def test_p50_at_batch_1_and_batch_64_measure_the_same_thing(tokenizer):
    # Most answers are short, a few long: the batch's wall time is the longest row's, the median row's is not.
    lengths = [2] * 60 + [30] * 4
    prompts = [f"prompt {i}" for i in range(64)]
    one = generate(_stand_in(tokenizer, lengths), tokenizer, prompts, 32, 1)
    many = generate(_stand_in(tokenizer, lengths), tokenizer, prompts, 32, 64)
    p50_one = percentiles_ms(one.latencies)["latency_p50_ms"]
    p50_many = percentiles_ms(many.latencies)["latency_p50_ms"]
    assert p50_many < 0.5 * 1000 * max(many.latencies)  # the copied batch time made p50 the slowest row's
    assert p50_many < 3 * p50_one + 20 and p50_one < 3 * p50_many + 20


def test_real_model_rows_that_stop_early_report_shorter_latencies(tiny_model, tokenizer):
    """The same measurement through transformers' own generate loop: make one row stop at its first token
    by declaring that token EOS, and check it is timed before a row that runs to max_new_tokens."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": m}], tokenize=False,
                                             add_generation_prompt=True)
               for m in ("my package has not arrived", "I was charged twice", "I forgot my password", "hello")]
    tokenizer.padding_side = "left"
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                             eos_token_id=tokenizer.eos_token_id)[:, enc["input_ids"].shape[1]:].tolist()
    pair = next(((i, j) for i in range(4) for j in range(4) if out[i][0] not in out[j]), None)
    if pair is None:
        pytest.skip("the random tiny model answers every prompt with the same tokens")
    early, late = pair
    tok = tokenizer.__class__.from_pretrained(tiny_model)
    tok.eos_token = tok.convert_ids_to_tokens(out[early][0])  # the early row now stops after one token
    gens = generate(model, tok, prompts, 6, 4)
    assert gens.latencies[early] < gens.latencies[late] <= gens.seconds


def test_vllm_request_timings_come_from_the_request_metrics_or_are_absent():
    v1 = SimpleNamespace(metrics=SimpleNamespace(arrival_time=1e9, queued_ts=100.0, scheduled_ts=100.1,
                                                 first_token_ts=100.25, last_token_ts=100.75))
    assert request_timings(v1) == pytest.approx((0.75, 0.25))
    v0 = SimpleNamespace(metrics=SimpleNamespace(arrival_time=50.0, first_token_time=50.5, last_token_time=51.0,
                                                 finished_time=51.5))
    assert request_timings(v0) == pytest.approx((1.5, 0.5))
    assert request_timings(SimpleNamespace(metrics=None)) is None  # stats off: absent, not the batch's time
    assert request_timings(SimpleNamespace()) is None
    unset = SimpleNamespace(metrics=SimpleNamespace(queued_ts=0.0, first_token_ts=0.0, last_token_ts=0.0))
    assert request_timings(unset) is None


def test_vllm_runs_without_timings_report_latency_as_absent_not_the_batch_time():
    from llmops_cli.evaluate.backends import offline_generations

    timed = {"texts": ["billing", "shipping"], "seconds": 2.0, "new_tokens": 4, "latencies": [0.5, 1.5],
             "ttft": [0.1, 0.2], "latency_measure": "vllm offline: engine queue to the request's last token"}
    gens = offline_generations(timed)
    assert gens.latencies == [0.5, 1.5] and gens.ttft == [0.1, 0.2]
    assert percentiles_ms(gens.latencies)["latency_p50_ms"] == pytest.approx(1000.0)
    untimed = offline_generations({**timed, "latencies": None, "ttft": None, "latency_measure": "absent: none"})
    # absent (eval's latency_p50_ms/p95 null), not 2000 ms copied to each request
    assert untimed.latencies == [] and percentiles_ms(untimed.latencies)["latency_p50_ms"] is None
    assert untimed.latency_measure == "absent: none"
    assert offline_generations({**timed, "latencies": None, "latency_measure": None}).latency_measure.startswith(
        "absent")
