"""Generation throughput: the `transformers` engine (token-budget batches, per-record seeds) against a naive
loop of batch-1 `model.generate`, on augment-like prompts (the backward prompt around real web segments).

    python benchmarks/generation.py --model models/base --web data/web.jsonl --n 16 --out gen.json

Both sides run in this process on the same model, prompts, sampling (temperature 0.7, top-p 0.9) and
max_new_tokens; `ratio` = ours / naive in new tokens per second. Target: ≥ 5×. Ours runs with the augment
stage's engine settings (`stage_settings(params, "augment")`: `generation.dtype: auto` is bfloat16 where this
machine has bf16 kernels); the naive loop loads the model as peers do, in float32.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

from humpback.engines.base import record_seed
from humpback.engines.factory import make_engine, stage_settings
from humpback.engines.models import load_model
from humpback.engines.tokens import encode_prompts, stop_token_ids
from humpback.params import DEFAULT_PARAMS_FILE, load_params
from humpback.prompts import backward_example
from humpback.storage.records import read_jsonl, write_json


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/base")
    ap.add_argument("--web", default="data/web.jsonl")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--params", default=DEFAULT_PARAMS_FILE)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    params = load_params(args.params)
    settings = stage_settings(params, "augment")  # the engine augment runs: what this measures
    generation, runtime = settings.generation, settings.runtime
    engine = make_engine(args.model, settings)
    tok = engine.tokenizer
    segments = read_jsonl(args.web)[: args.n]
    prompts = [backward_example(tok, s["text"], params.train.backward_max_output_tokens).prompt for s in segments]
    seeds = [record_seed(params.seeds.generation, s["id"]) for s in segments]

    start = time.perf_counter()
    ours = engine.generate(prompts, args.max_new_tokens, seeds)
    ours_s = time.perf_counter() - start
    ours_tokens = sum(len(tok.encode(t, add_special_tokens=False)) for t in ours)

    model, stops = load_model(args.model, "float32")[0], stop_token_ids(tok)
    naive_tokens, start = 0, time.perf_counter()
    for ids, seed in zip(encode_prompts(tok, prompts), seeds):
        torch.manual_seed(seed)
        out = model.generate(
            input_ids=torch.tensor([ids]),
            do_sample=True,
            temperature=params.generation.temperature,
            top_p=params.generation.top_p,
            max_new_tokens=args.max_new_tokens,
            eos_token_id=stops,
            pad_token_id=tok.pad_token_id,
        )
        naive_tokens += out.shape[1] - len(ids)
    naive_s = time.perf_counter() - start

    result = {
        "n_prompts": len(prompts),
        "mean_prompt_tokens": sum(map(len, encode_prompts(tok, prompts))) / len(prompts),
        "max_new_tokens": args.max_new_tokens,
        "dtype": generation.dtype,
        "naive_dtype": "float32",
        "token_budget": runtime.token_budget,
        "threads": torch.get_num_threads(),
        "ours": {"seconds": ours_s, "new_tokens": ours_tokens, "tokens_per_second": ours_tokens / ours_s},
        "naive_batch1": {"seconds": naive_s, "new_tokens": naive_tokens, "tokens_per_second": naive_tokens / naive_s},
        "params": dataclasses.asdict(generation),
    }
    result["ratio"] = result["ours"]["tokens_per_second"] / result["naive_batch1"]["tokens_per_second"]
    print(f"{'engine':<16}{'seconds':>10}{'new tokens':>12}{'tokens/s':>10}")
    for name in ("ours", "naive_batch1"):
        r = result[name]
        print(f"{name:<16}{r['seconds']:>10.1f}{r['new_tokens']:>12}{r['tokens_per_second']:>10.1f}")
    print(f"ratio (ours / naive): {result['ratio']:.2f}x")
    write_json(args.out, result)
    print(json.dumps({k: result[k] for k in ("ratio", "n_prompts", "max_new_tokens")}))


if __name__ == "__main__":
    main()
