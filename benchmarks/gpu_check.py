"""A check of the in-process engine and LoRA training on one CUDA GPU, in minutes, written to one JSON.

Here (any machine with the project installed), once: the embedded model's tokenizer and config, ~4 MB,
into a git-ignored folder the device tool can carry (its weights, a 98 MB GGUF, are over the carry limit):

    python benchmarks/gpu_check.py --prepare .gpu_check

On the GPU machine (its own torch build; nothing to install, no registry needed), from the repo root:

    PYTHONPATH=. python3 benchmarks/gpu_check.py --assets .gpu_check --out $OUT/gpu_check.json

The model is the embedded model's architecture and tokenizer with random weights (seeded), or a full model
folder given by --model. Checks, each recorded with ok/error so one failure does not hide the others:
- greedy_fp32: `engine.generate(sampling=GREEDY)` (batched, left-padded, static cache) gives the same text as
  stock transformers `generate(do_sample=False)` run prompt by prompt, in float32;
- logprobs_fp32 / logprobs_bf16: `next_token_logprobs` (shared-prefix cache) and `completion_logprobs` against
  one unpadded stock forward pass per prompt, within a tolerance per precision;
- lora_bf16: a few optimizer steps through `humpback.training.trainer.train` (bf16 autocast on the GPU): losses finite,
  adapter weights changed, base weights untouched;
- throughput (bf16): generation (prompts/s, new tokens/s) at the params' token budget and a GPU-sized one;
  curation pairs/s for the `logprob` and `pmi` methods on ~1,000-token pairs.
Without a CUDA device it writes {"skipped": "..."} and exits 0. Exit status 1 when a check fails. Checks not
started within --budget-s are recorded as skipped for time, so the run ends inside the device's limits.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

FP32_TOLERANCE = 1e-3  # float32, batched + cached vs unpadded: rounding only (~1e-5 seen on CPU)
BF16_TOLERANCE = 0.15  # bfloat16 keeps 8 bits of mantissa: ~0.4% of a logit, through every layer
GPU_TOKEN_BUDGET = 65536  # a batch size the GPU can hold for a small model (the params' budget is CPU-sized)
# Llama-3.2-1B's shape, for a throughput closer to real GPU work than a 135M model gives
LLAMA_1B = {
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
}
SEED = 0  # of the random weights, the LoRA init and the sampled generations

INSTRUCTIONS = [
    "Why is the sky blue?",
    "Write a haiku about autumn.",
    "Explain Python decorators with an example.",
    "What is the capital of Australia?",
    "Give three tips for a job interview.",
    "Summarise the plot of Hamlet.",
    "How do vaccines work?",
    "Translate 'good morning' into French and Spanish.",
    "What is a hash table?",
    "Describe the water cycle.",
    "How do I reverse a list in Python?",
    "Name five prime numbers.",
    "What causes inflation?",
    "Write a limerick about a cat.",
    "Explain recursion to a child.",
    "What is the difference between TCP and UDP?",
]
ANSWER = (
    "The answer depends on the details, but in short: start from the definition, check each step against "
    "an example, and keep what survives. "
)


def environment(device: str) -> dict:
    import transformers

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": device,
    }
    try:
        import peft

        info["peft"] = peft.__version__
    except ImportError:
        info["peft"] = None
    if device == "cuda":
        info.update(
            gpu=torch.cuda.get_device_name(0),
            capability=list(torch.cuda.get_device_capability(0)),
            bf16=torch.cuda.is_bf16_supported(),
            cuda=torch.version.cuda,
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
        )
    return info


def prepare(folder: Path, params_file: str) -> None:
    """Save the params' base model's tokenizer and config (no weights) to `folder`."""
    from transformers import AutoConfig, AutoTokenizer

    from humpback.engines.models import resolve_gguf
    from humpback.params import load_params

    ref = load_params(params_file).base.model
    if not ref.startswith("gguf:"):
        raise SystemExit(f"--prepare reads base.model as gguf:<package>/<file>; got '{ref}' (use --model there)")
    gguf_folder, filename = resolve_gguf(ref)
    AutoTokenizer.from_pretrained(gguf_folder, gguf_file=filename).save_pretrained(folder)
    AutoConfig.from_pretrained(gguf_folder, gguf_file=filename).save_pretrained(folder)
    size = sum(p.stat().st_size for p in folder.iterdir()) / 1e6
    print(f"{folder}: tokenizer and config of {ref} ({size:.1f} MB); carry it to the GPU machine")


def random_model(assets: Path, out: Path, shape: str, device: str) -> Path:
    """A seeded random-weight model with the assets' architecture (or Llama-1B's) and tokenizer, saved to `out`."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(assets)
    if shape == "1b":
        for key, value in LLAMA_1B.items():
            setattr(config, key, value)
        config.head_dim = config.hidden_size // config.num_attention_heads
    torch.manual_seed(SEED)
    with torch.device(device):  # initialising a 1B model on the CPU alone takes minutes
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(assets).save_pretrained(out)
    return out


def engine_for(model_dir: Path, params, dtype: str, token_budget: int | None = None):
    """The in-process engine as the stages build it, in `dtype`, with the params' batch budget unless given."""
    from humpback.engines.transformers_engine import TransformersEngine

    return TransformersEngine(
        model_dir,
        dataclasses.replace(params.generation, engine="transformers", dtype=dtype),
        dataclasses.replace(params.runtime, token_budget=token_budget or params_token_budget(params)),
    )


def params_token_budget(params) -> int:
    """The batch budget the stages run with (an execution setting: where params keeps it may move)."""
    return params.runtime.token_budget


def stock_model(model_dir: Path, dtype: torch.dtype, device: str):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device).eval()


# ------------------------------------------------------------------------------------------------- checks


def check_greedy(model_dir: Path, params, device: str, n: int, new_tokens: int) -> dict:
    from humpback.engines.base import GREEDY
    from humpback.engines.tokens import encode_prompts, stop_token_ids
    from humpback.prompts import format_example

    engine = engine_for(model_dir, params, "float32")
    tok = engine.tokenizer
    prompts = [format_example(tok, user=u).prompt for u in INSTRUCTIONS[:n]]
    ours = engine.generate(prompts, new_tokens, list(range(n)), sampling=GREEDY)
    stock = stock_model(model_dir, torch.float32, device)
    expected = []
    with torch.inference_mode():
        for ids in encode_prompts(tok, prompts):
            x = torch.tensor([ids], device=device)
            out = stock.generate(
                x,
                attention_mask=torch.ones_like(x),
                max_new_tokens=new_tokens,
                do_sample=False,
                eos_token_id=stop_token_ids(tok),
                pad_token_id=engine.pad_id,
            )
            expected.append(engine._decode(out[0, len(ids) :].tolist()))
    same = [a == b for a, b in zip(ours, expected)]
    first = next((i for i, s in enumerate(same) if not s), None)
    return {
        "ok": all(same),
        "prompts": n,
        "max_new_tokens": new_tokens,
        "same_text": sum(same),
        "first_difference": None
        if first is None
        else {"prompt": INSTRUCTIONS[first], "ours": ours[first], "stock": expected[first]},
    }


def check_logprobs(model_dir: Path, params, device: str, dtype: str, tolerance: float, n: int) -> dict:
    from humpback.curation.scoring import score_read_format
    from humpback.engines.tokens import encode_prompts, first_token_after
    from humpback.prompts import curation_prompt, format_example

    engine = engine_for(model_dir, params, dtype)
    tok = engine.tokenizer
    stock = stock_model(model_dir, getattr(torch, dtype), device)

    def forward(ids: list[int]) -> torch.Tensor:
        with torch.inference_mode():
            return torch.log_softmax(stock(input_ids=torch.tensor([ids], device=device)).logits[0].float(), -1).cpu()

    # next-token reads on curation prompts (they share the rubric: the engine's shared-prefix cache path)
    suffix, candidates = score_read_format(tok)
    prompts = [
        curation_prompt(tok, q, ANSWER * (1 + i % 3), True, 2400) + suffix for i, q in enumerate(INSTRUCTIONS[:n])
    ]
    rows = engine.next_token_logprobs(prompts, candidates)
    next_diff = 0.0
    for prompt, ids, row in zip(prompts, encode_prompts(tok, prompts), rows):
        last = forward(ids)[-1]
        ref = [float(last[first_token_after(tok, prompt, ids, c)]) for c in candidates]
        next_diff = max(next_diff, *(abs(a - b) for a, b in zip(row, ref)))

    # completion log-probabilities (left-padded batches, only the completion's logits kept)
    formatted = [format_example(tok, user=q, response=ANSWER * (1 + i % 4)) for i, q in enumerate(INSTRUCTIONS[:n])]
    p_ids = encode_prompts(tok, [f.prompt for f in formatted])
    c_ids = encode_prompts(tok, [f.completion for f in formatted])
    rows = engine.completion_logprobs([f.prompt for f in formatted], [f.completion for f in formatted])
    completion_diff = 0.0
    for p, c, row in zip(p_ids, c_ids, rows):
        table = forward(p + c)
        ref = [float(table[len(p) - 1 + j, t]) for j, t in enumerate(c)]
        if len(ref) != len(row):
            return {"ok": False, "error": f"completion_logprobs returned {len(row)} values for {len(ref)} tokens"}
        completion_diff = max(completion_diff, *(abs(a - b) for a, b in zip(row, ref)))
    return {
        "ok": next_diff <= tolerance and completion_diff <= tolerance,
        "dtype": dtype,
        "tolerance": tolerance,
        "prompts": n,
        "next_token_max_abs_difference": next_diff,
        "completion_max_abs_difference": completion_diff,
    }


def check_lora(model_dir: Path, params, device: str, steps: int) -> dict:
    from transformers import AutoTokenizer

    from humpback.training.examples import build_dataset, forward_examples
    from humpback.training.plan import TrainPlan
    from humpback.training.trainer import compute_dtype, load_trainable, train

    tp = dataclasses.replace(params.train, method="lora", batch_size=8, micro_batch_size=4, warmup_steps=0)
    tok = AutoTokenizer.from_pretrained(model_dir)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    pairs = [{"instruction": q, "output": ANSWER * (1 + i % 4)} for i, q in enumerate(INSTRUCTIONS)]
    dataset, _ = build_dataset(
        tok, forward_examples(tok, pairs[:8], pairs[8:], tp.tagging), tp.max_seq_len, tp.overlong
    )
    model = load_trainable(model_dir, tp, seed=SEED)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    with tempfile.TemporaryDirectory() as scratch:
        plan = TrainPlan(steps=steps, batch_size=8, micro_batch_size=4, grad_accum=2)  # exactly `steps` steps
        result = train(model, dataset, tok.pad_token_id, tp, plan, SEED, scratch)
    after = dict(result.model.named_parameters())
    lora_changed = sum(
        not torch.equal(before[k], after[k].detach().to(before[k].device)) for k in before if "lora_" in k
    )
    base_changed = sum(
        not torch.equal(before[k], after[k].detach().to(before[k].device)) for k in before if "lora_" not in k
    )
    n_lora = sum("lora_" in k for k in before)
    trained_on = next(iter(after.values())).device.type
    expected_precision = "bf16" if compute_dtype(tp) == "bfloat16" else "fp32"  # train.dtype, as resolved here
    losses = [loss for _, loss in result.losses]
    ok = (
        result.steps == steps
        and all(math.isfinite(x) for x in losses)
        and lora_changed > 0
        and base_changed == 0
        and result.precision == expected_precision
    )
    return {
        "ok": ok,
        "steps": result.steps,
        "precision": result.precision,
        "trained_on": trained_on,
        "losses": losses,
        "lora_tensors_changed": lora_changed,
        "lora_tensors": n_lora,
        "base_tensors_changed": base_changed,
        "seconds": result.seconds,
        "steps_per_second": result.steps / result.seconds if result.seconds else None,
        "tokens_per_second": result.tokens / result.seconds if result.seconds else None,
    }


def check_throughput(model_dir: Path, params, n_prompts: int, new_tokens: int, n_pairs: int) -> dict:
    from humpback.curation.scoring import score_pairs
    from humpback.engines.tokens import encode_prompts
    from humpback.prompts import format_example

    dtype = "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float32"
    out: dict = {"dtype": dtype, "generation": [], "curation": {}}
    users = [INSTRUCTIONS[i % len(INSTRUCTIONS)] + f" (variant {i})" for i in range(n_prompts)]
    for budget in sorted({params_token_budget(params), GPU_TOKEN_BUDGET}):
        engine = engine_for(model_dir, params, dtype, budget)
        prompts = [format_example(engine.tokenizer, user=u).prompt for u in users]
        warm = prompts[:2]
        engine.generate(warm, 4, list(range(len(warm))))  # warm-up: CUDA context, kernels picked on first use
        _sync()
        start = time.perf_counter()
        texts = engine.generate(prompts, new_tokens, list(range(n_prompts)))
        _sync()
        seconds = time.perf_counter() - start
        # Re-encoding the decoded text approximates the tokens generated (a random model rarely stops early).
        new = sum(map(len, encode_prompts(engine.tokenizer, texts)))
        out["generation"].append(
            {
                "token_budget": budget,
                "prompts": n_prompts,
                "max_new_tokens": new_tokens,
                "seconds": seconds,
                "prompts_per_second": n_prompts / seconds,
                "new_tokens_per_second_approx": new / seconds,
            }
        )
    pairs = [
        {"id": str(i), "instruction": INSTRUCTIONS[i % len(INSTRUCTIONS)], "output": (ANSWER + f"Point {i}. ") * 12}
        for i in range(n_pairs)
    ]  # ~1,000-token prompts
    for method in ("logprob", "pmi"):
        curate = dataclasses.replace(params.curate, method=method, max_pair_chars=2400)
        score_pairs(engine, pairs[:2], curate, tagging=params.train.tagging, seed=0)  # warm-up
        _sync()
        start = time.perf_counter()
        scores = score_pairs(engine, pairs, curate, tagging=params.train.tagging, seed=0)
        _sync()
        seconds = time.perf_counter() - start
        out["curation"][method] = {
            "pairs": n_pairs,
            "seconds": seconds,
            "pairs_per_second": n_pairs / seconds,
            "parsed": sum(s.parsed for s in scores),
            "token_budget": GPU_TOKEN_BUDGET,
        }
    out["ok"] = all(c["parsed"] == n_pairs for c in out["curation"].values())
    return out


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


# --------------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="the JSON to write")
    ap.add_argument("--prepare", metavar="DIR", help="save the base model's tokenizer and config to DIR, then stop")
    ap.add_argument("--assets", default=".gpu_check", help="a folder written by --prepare")
    ap.add_argument("--model", help="a full model folder to check instead of random weights on the assets")
    ap.add_argument(
        "--shape",
        choices=["assets", "1b"],
        default="assets",
        help="random weights in the assets' shape, or Llama-1B's (throughput nearer real GPU work)",
    )
    ap.add_argument(
        "--device",
        choices=["cuda", "cpu"],
        default="cuda",
        help="cpu: the same checks on this CPU (a smoke test of this script, not a GPU check)",
    )
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--prompts", type=int, default=64, help="generation throughput prompts")
    ap.add_argument("--new-tokens", type=int, default=256, help="generation throughput new tokens per prompt")
    ap.add_argument("--pairs", type=int, default=128, help="curation throughput pairs")
    ap.add_argument("--check-prompts", type=int, default=8, help="prompts in the equality checks")
    ap.add_argument("--train-steps", type=int, default=6)
    ap.add_argument("--budget-s", type=float, default=480, help="start no check after this many seconds")
    args = ap.parse_args(argv)
    if args.prepare:
        prepare(Path(args.prepare), args.params)
        return 0
    if not args.out:
        ap.error("--out is required")

    from humpback.storage.records import write_json

    if args.device == "cuda" and not torch.cuda.is_available():
        reason = f"no CUDA device (torch {torch.__version__}, cuda {torch.version.cuda}): nothing checked"
        write_json(args.out, {"skipped": reason, "environment": environment("cpu")})
        print(f"gpu_check: skipped, {reason}")
        return 0

    from humpback.params import load_params

    t0 = time.perf_counter()
    params = load_params(args.params)
    result: dict = {"skipped": None, "environment": environment(args.device), "checks": {}}
    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            model_dir, result["model"] = Path(args.model), {"path": args.model, "weights": "as given"}
        else:
            model_dir = random_model(Path(args.assets), Path(tmp) / "model", args.shape, args.device)
            result["model"] = {"assets": args.assets, "shape": args.shape, "weights": f"random, seed {SEED}"}
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(model_dir)
        result["model"].update(layers=config.num_hidden_layers, hidden=config.hidden_size, vocab=config.vocab_size)
        n = min(args.check_prompts, len(INSTRUCTIONS))
        checks = {
            "greedy_fp32": lambda: check_greedy(model_dir, params, args.device, n, 32),
            "logprobs_fp32": lambda: check_logprobs(model_dir, params, args.device, "float32", FP32_TOLERANCE, n),
            "logprobs_bf16": lambda: check_logprobs(model_dir, params, args.device, "bfloat16", BF16_TOLERANCE, n),
            "lora_bf16": lambda: check_lora(model_dir, params, args.device, args.train_steps),
            "throughput": lambda: check_throughput(model_dir, params, args.prompts, args.new_tokens, args.pairs),
        }
        for name, run in checks.items():
            if time.perf_counter() - t0 > args.budget_s:
                result["checks"][name] = {"ok": None, "skipped": f"time budget of {args.budget_s:.0f} s spent"}
                continue
            start = time.perf_counter()
            try:
                result["checks"][name] = run()
            except Exception as exc:  # noqa: BLE001 - recorded: one failure must not hide the other checks
                result["checks"][name] = {
                    "ok": False,
                    "error": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc(limit=6),
                }
            result["checks"][name]["check_seconds"] = time.perf_counter() - start
            print(
                f"gpu_check: {name}: ok={result['checks'][name]['ok']} "
                f"({result['checks'][name]['check_seconds']:.0f} s)",
                flush=True,
            )
            if args.device == "cuda":
                torch.cuda.empty_cache()
    result["seconds"] = time.perf_counter() - t0
    result["ok"] = all(c["ok"] is not False for c in result["checks"].values())
    write_json(args.out, result)
    print(f"gpu_check: {'all checks passed' if result['ok'] else 'FAILED'}; wrote {args.out}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
