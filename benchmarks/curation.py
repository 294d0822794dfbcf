"""Curation cost per pair: our `logprob` mode (one forward pass, shared rubric prefix computed once) against
generate-and-parse scoring done the plain way (transformers `generate`, fp32, batch 8, reasoning then
"Score: N", parsed from the last line), on ~1,000-token pairs.

    python benchmarks/curation.py --model models/base --pairs data/augmented.jsonl --n 16 --out cur.json

Both run in this process on the same model and pairs; `ratio` = our pairs per second / plain pairs per second
(target ≥ 7×). Also reports the share of this machine's fp32 matmul rate that scoring reaches
(2 · parameters · tokens actually computed per second, attention ignored; the rubric prefix that every
prompt shares is computed once, so it is counted once).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

from humpback.engines.tokens import encode_prompts, stop_token_ids
from humpback.generation import make_engine
from humpback.params import DEFAULT_PARAMS_FILE, load_params
from humpback.records import read_jsonl, write_json
from humpback.scoring import curation_prompt, parse_score, score_pairs


def matmul_gflops(n: int = 1024, repeats: int = 20) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/base")
    ap.add_argument("--pairs", default="data/augmented.jsonl")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--pair-chars", type=int, default=2400, help="pair text cut to this (≈1,000-token prompts)")
    ap.add_argument("--baseline-new-tokens", type=int, default=96)
    ap.add_argument("--params", default=DEFAULT_PARAMS_FILE)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    params = load_params(args.params)
    curate = dataclasses.replace(params.curate, method="logprob", max_pair_chars=args.pair_chars)
    engine = make_engine(args.model, params.generation)
    tok, model = engine.tokenizer, engine.model
    pairs = read_jsonl(args.pairs)[: args.n]
    prompts = [curation_prompt(tok, p["instruction"], p["output"], params.train.tagging, args.pair_chars) for p in pairs]
    ids = encode_prompts(tok, prompts)
    prompt_tokens = sum(map(len, ids))
    shared = next((i for i, col in enumerate(zip(*ids)) if len(set(col)) > 1), min(map(len, ids)))
    computed_tokens = shared + sum(len(x) - shared for x in ids)

    start = time.perf_counter()
    ours = score_pairs(engine, pairs, curate, tagging=params.train.tagging, seed=params.base.seed)
    ours_s = time.perf_counter() - start

    # The plain way: left-padded batches of 8, sample reasoning + "Score: N", parse the last line.
    tok.padding_side = "left"
    parsed, start = [], time.perf_counter()
    for i in range(0, len(prompts), 8):
        batch = tok(prompts[i:i + 8], add_special_tokens=False, padding=True, return_tensors="pt")
        torch.manual_seed(params.base.seed + i)
        out = model.generate(**batch, do_sample=True, temperature=0.7, top_p=0.9,
                             max_new_tokens=args.baseline_new_tokens, eos_token_id=stop_token_ids(tok),
                             pad_token_id=tok.pad_token_id)
        texts = tok.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        parsed += [parse_score(t) for t in texts]
    plain_s = time.perf_counter() - start

    n_params = sum(p.numel() for p in model.parameters())
    achieved = 2 * n_params * computed_tokens / ours_s / 1e9
    peak = matmul_gflops()
    result = {
        "n_pairs": len(pairs),
        "mean_prompt_tokens": prompt_tokens / len(pairs),
        "shared_prefix_tokens": shared,
        "computed_tokens": computed_tokens,
        "threads": torch.get_num_threads(),
        "dtype": params.generation.dtype,
        "ours_logprob": {"seconds": ours_s, "seconds_per_pair": ours_s / len(pairs),
                         "parsed": sum(s.parsed for s in ours)},
        "plain_generate_parse": {"seconds": plain_s, "seconds_per_pair": plain_s / len(pairs),
                                 "parsed": sum(p is not None for p in parsed), "batch_size": 8,
                                 "max_new_tokens": args.baseline_new_tokens},
        "ratio": plain_s / ours_s,
        "achieved_gflops": achieved,
        "matmul_peak_gflops": peak,
        "matmul_share": achieved / peak,
    }
    print(f"{'method':<24}{'s/pair':>8}{'parsed':>8}")
    print(f"{'ours (logprob)':<24}{result['ours_logprob']['seconds_per_pair']:>8.2f}{result['ours_logprob']['parsed']:>8}")
    print(f"{'plain generate+parse':<24}{result['plain_generate_parse']['seconds_per_pair']:>8.2f}"
          f"{result['plain_generate_parse']['parsed']:>8}")
    print(f"ratio (ours / plain, per pair): {result['ratio']:.2f}x; scoring reaches {achieved:.0f} GFLOP/s "
          f"= {100 * result['matmul_share']:.0f}% of fp32 matmul ({peak:.0f} GFLOP/s)")
    write_json(args.out, result)
    print(json.dumps({k: result[k] for k in ("ratio", "matmul_share", "n_pairs")}))


if __name__ == "__main__":
    main()
