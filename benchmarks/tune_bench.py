"""`llmops tune` vs a plain transformers Trainer + PEFT baseline, on the same variable-length SFT data.

    python benchmarks/tune_bench.py --device cpu --tiny                 # logic check here (2 cores, ~2 min)
    python3 benchmarks/tune_bench.py --device cuda --methods lora qlora  # GPU: 1B Llama-3.2 shape (one device call)

Both sides train the same random-weight Llama-architecture model with the same LoRA (all linear layers,
r=16), batch size and number of optimizer steps, each in its own process (clean peak-memory figures):
- baseline: transformers Trainer + peft, pad to the longest example of each batch, no packing;
- llmops: `run_tune` (TRL SFTTrainer, padding-free bfd packing, completion-only loss).
Reported per side: effective (non-padding) tokens/s, peak memory (GPU: torch.cuda.max_memory_allocated;
CPU: max RSS), and for llmops the pre-flight estimate next to the measured peak. Lengths follow a
log-normal like real SFT sets (mean ~350 tokens, tail to 2048; scaled down with --tiny).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = ("order refund package delivery account password invoice charge return exchange app error crash "
         "subscription cancel billing tracking courier login email update screen payment card address label "
         "size colour replacement warranty store manager weekend monday customer support please thanks").split()


def make_rows(n: int, mean_tokens: int, max_tokens: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    sigma = 0.8
    mu = math.log(mean_tokens) - sigma**2 / 2  # log-normal with the requested mean
    rows = []
    for i in range(n):
        length = max(8, min(max_tokens, int(rng.lognormvariate(mu, sigma))))
        prompt_len = max(4, int(length * 0.7))
        rows.append({"id": str(i), "prompt": " ".join(rng.choice(WORDS) for _ in range(prompt_len)),
                     "completion": " ".join(rng.choice(WORDS) for _ in range(length - prompt_len))})
    return rows


def write_project(work: Path, args: argparse.Namespace) -> Path:
    """Corpus, scaffolded model, splits and a project config, all under `work`."""
    import yaml

    from llmops_cli.config.loader import load_config
    from llmops_cli.model.scaffold import scaffold_model

    rows = make_rows(args.examples, args.mean_tokens, args.max_tokens, seed=0)
    data = work / "data"
    data.mkdir(parents=True)
    for split, part in (("train", rows), ("validation", rows[:32])):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    (work / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:2000]))
    cfg = {
        "model": {"base": str(work / "base")},
        "scaffold": {"output": str(work / "base"), "corpus": [str(work / "corpus.jsonl")], "vocab_size": args.vocab,
                     "hidden_size": args.hidden, "num_layers": args.layers, "num_heads": args.heads,
                     "intermediate_size": args.intermediate, "max_position_embeddings": max(2048, args.max_tokens)},
        "tune": {"data_dir": str(data), "output_dir": str(work / "llmops"), "metrics_file": str(work / "m.json"),
                 "plots_file": str(work / "loss.csv"), "max_steps": args.steps, "batch_size": args.batch_size,
                 "max_seq_length": args.max_tokens, "packing": True, "learning_rate": 1e-4, "logging_steps": 5,
                 "gradient_checkpointing": args.gradient_checkpointing, "lora": {"r": 16},
                 "warmup_ratio": 0.0},
    }
    path = work / "bench.yaml"
    path.write_text(yaml.safe_dump(cfg))
    scaffold_model(load_config(path).scaffold)
    return path


def peak_memory_gib(device: str) -> float:
    if device == "cuda":
        import torch

        return torch.cuda.max_memory_allocated() / 1024**3
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB -> GiB


def worker_llmops(config: Path, method: str, device: str) -> dict:
    from llmops_cli.config.loader import load_config
    from llmops_cli.tune.train import preflight, run_tune

    cfg = load_config(config, [f"tune.method={method}"])
    estimate, _ = preflight(cfg)
    started = time.perf_counter()
    result = run_tune(cfg)
    return {"side": "llmops", "method": method, "tokens_per_second": result.tokens_per_second,
            "seconds": time.perf_counter() - started, "peak_gib": peak_memory_gib(device),
            "estimate_gib": estimate.total_gib, "steps": result.steps}


def worker_baseline(config: Path, method: str, device: str) -> dict:
    """Plain Trainer + PEFT: chat template, completion-only labels, pad to longest, no packing."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from llmops_cli.config.loader import load_config
    from llmops_cli.model.loading import load_causal_lm, load_tokenizer
    from llmops_cli.tune.data import prompt_messages, read_jsonl
    from llmops_cli.tune.train import quantization_config

    cfg = load_config(config, [f"tune.method={method}"])
    tok = load_tokenizer(cfg.model)
    model = load_causal_lm(cfg.model, device=device, quantization_config=quantization_config(cfg.tune))
    if method == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.tune.gradient_checkpointing)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))

    def encode(row: dict) -> dict:
        prompt = tok.apply_chat_template(prompt_messages(row), tokenize=False, add_generation_prompt=True)
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        c_ids = tok(row["completion"] + tok.eos_token, add_special_tokens=False)["input_ids"]
        ids = (p_ids + c_ids)[: cfg.tune.max_seq_length]
        return {"input_ids": ids, "labels": ([-100] * len(p_ids) + c_ids)[: len(ids)]}

    rows = read_jsonl(Path(cfg.tune.data_dir) / "train.jsonl")
    dataset = Dataset.from_list([encode(r) for r in rows])
    bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
    args = TrainingArguments(
        output_dir=str(Path(cfg.tune.output_dir).parent / "baseline"), max_steps=cfg.tune.max_steps,
        per_device_train_batch_size=cfg.tune.batch_size, learning_rate=1e-4, logging_steps=5, save_strategy="no",
        report_to="none", use_cpu=device == "cpu", bf16=bf16, disable_tqdm=True,
        gradient_checkpointing=cfg.tune.gradient_checkpointing, include_num_input_tokens_seen="non_padding",
        optim="paged_adamw_8bit" if method == "qlora" else "adamw_torch", remove_unused_columns=False,
    )
    trainer = Trainer(model=model, args=args, train_dataset=dataset,
                      data_collator=DataCollatorForSeq2Seq(tok, padding="longest", label_pad_token_id=-100))
    started = time.perf_counter()
    out = trainer.train()
    seconds = time.perf_counter() - started
    return {"side": "baseline", "method": method, "seconds": seconds, "peak_gib": peak_memory_gib(device),
            "tokens_per_second": trainer.state.num_input_tokens_seen / out.metrics["train_runtime"],
            "steps": out.global_step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--tiny", action="store_true", help="small model and short sequences (CPU logic check)")
    parser.add_argument("--methods", nargs="+", default=["lora"], choices=["lora", "qlora"])
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--json", default=None, help="write the results here too")
    parser.add_argument("--worker", choices=["llmops", "baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        fn = worker_llmops if args.worker == "llmops" else worker_baseline
        print("RESULT " + json.dumps(fn(Path(args.config), args.method, args.device)), flush=True)
        return
    if args.tiny:
        sizes = dict(hidden=128, layers=2, heads=2, intermediate=256, vocab=2048, examples=400, mean_tokens=60,
                     max_tokens=256, batch_size=8, steps=args.steps or 20)
    else:  # Llama-3.2-1B shape
        sizes = dict(hidden=2048, layers=16, heads=32, intermediate=8192, vocab=32000, examples=4000,
                     mean_tokens=350, max_tokens=2048, batch_size=8, steps=args.steps or 60)
    for key, value in sizes.items():
        setattr(args, key, value)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        config = write_project(Path(tmp), args)
        for method in args.methods:
            for side in ("baseline", "llmops"):
                cmd = [sys.executable, __file__, "--worker", side, "--config", str(config), "--method", method,
                       "--device", args.device]
                out = subprocess.run(cmd, capture_output=True, text=True, env=env)
                line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
                if line is None:
                    print(f"{side}/{method} failed:\n{out.stderr[-3000:]}", file=sys.stderr)
                    continue
                results.append(json.loads(line[7:]))
    print(f"model: hidden {args.hidden}, {args.layers} layers; {args.examples} examples, mean ~{args.mean_tokens} "
          f"tokens (max {args.max_tokens}); batch {args.batch_size}; {args.steps} steps; device {args.device}")
    for method in args.methods:
        by_side = {r["side"]: r for r in results if r["method"] == method}
        for r in by_side.values():
            est = f", estimate {r['estimate_gib']:.2f} GiB" if "estimate_gib" in r else ""
            print(f"{method:6s} {r['side']:9s} {r['tokens_per_second']:10.0f} effective tok/s  "
                  f"peak {r['peak_gib']:.2f} GiB{est}")
        if len(by_side) == 2:
            ratio = by_side["llmops"]["tokens_per_second"] / by_side["baseline"]["tokens_per_second"]
            print(f"{method:6s} llmops / baseline effective tokens/s: {ratio:.2f}x; peak memory "
                  f"{by_side['llmops']['peak_gib']:.2f} vs {by_side['baseline']['peak_gib']:.2f} GiB")
    if args.json:
        Path(args.json).write_text(json.dumps({"sizes": sizes, "results": results}, indent=2))


if __name__ == "__main__":
    main()
