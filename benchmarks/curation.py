"""Curation cost per pair: our `logprob` mode (one forward pass, shared rubric prefix computed once) against
generate-and-parse scoring done the plain way (transformers `generate`, fp32, batch 8, reasoning then
"Score: N", parsed from the last line), on ~1,000-token pairs.

    python benchmarks/curation.py --model models/base --pairs data/augmented.jsonl --n 16 --out cur.json

Both run in this process on the same model and pairs; `ratio` = our pairs per second / plain pairs per second
(target ≥ 7×). Ours runs with the score stage's engine settings (`stage_settings(params, "curate")` for reads:
`generation.dtype: auto` is bfloat16 where this machine's bf16 matmuls are fast); the plain way loads the model
as peers do, in float32. Also reports:
- the share of this machine's matmul rate (in our dtype) that scoring reaches: 2 · parameters · tokens
  actually computed per second, attention ignored; the rubric prefix every prompt shares is computed once, so
  it is counted once;
- agreement of our dtype's scores with float32's, for the `logprob` read and the default `pmi` method: Spearman
  rank correlation, the largest difference, and the share of keep/drop decisions at the configured threshold
  that are the same (bf16 is kept only where they agree).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch
from scipy.stats import spearmanr

from humpback.curation.scoring import is_selected, parse_score, score_pairs
from humpback.engines.decoding import shared_prefix_length
from humpback.engines.factory import engine_settings, make_engine, stage_settings
from humpback.engines.models import DTYPES, load_model
from humpback.engines.tokens import encode_prompts, stop_token_ids
from humpback.params import DEFAULT_PARAMS_FILE, load_params
from humpback.prompts import curation_prompt
from humpback.storage.records import read_jsonl, write_json


def matmul_gflops(dtype: torch.dtype, n: int = 1024, repeats: int = 20) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/base")
    ap.add_argument("--pairs", default="data/augmented.jsonl")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--pair-chars", type=int, default=2400, help="pair text cut to this (≈1,000-token prompts)")
    ap.add_argument("--baseline-new-tokens", type=int, default=96)
    ap.add_argument("--params", default=DEFAULT_PARAMS_FILE)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    params = load_params(args.params)
    curate = dataclasses.replace(params.curate, method="logprob", max_pair_chars=args.pair_chars)
    settings = stage_settings(params, "curate", reads_only=True)  # logprob and pmi only read
    dtype = settings.generation.dtype  # `auto` resolved for reads
    engine = make_engine(args.model, settings)
    fp32 = (
        engine
        if dtype == "float32"
        else make_engine(
            args.model, engine_settings(dataclasses.replace(settings.generation, dtype="float32"), settings.runtime)
        )
    )
    # The plain way gets the model as peers load it: stock transformers modules, none of the engine's CPU kernels.
    tok, model = engine.tokenizer, load_model(args.model, "float32")[0]
    pairs = read_jsonl(args.pairs)[: args.n]
    prompts = [
        curation_prompt(tok, p["instruction"], p["output"], params.train.tagging, args.pair_chars) for p in pairs
    ]
    ids = encode_prompts(tok, prompts)
    prompt_tokens = sum(map(len, ids))
    shared = shared_prefix_length(ids)  # what the engine computes once
    computed_tokens = shared + sum(len(x) - shared for x in ids)

    start = time.perf_counter()
    ours = score_pairs(engine, pairs, curate, tagging=params.train.tagging, seed=params.seeds.generation)
    ours_s = time.perf_counter() - start

    # The plain way: left-padded batches of 8, sample reasoning + "Score: N", parse the last line.
    tok.padding_side = "left"
    parsed, start = [], time.perf_counter()
    for i in range(0, len(prompts), 8):
        batch = tok(prompts[i : i + 8], add_special_tokens=False, padding=True, return_tensors="pt")
        torch.manual_seed(params.seeds.generation + i)
        out = model.generate(
            **batch,
            do_sample=True,
            temperature=0.7,
            top_p=0.9,
            max_new_tokens=args.baseline_new_tokens,
            eos_token_id=stop_token_ids(tok),
            pad_token_id=tok.pad_token_id,
        )
        texts = tok.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
        parsed += [parse_score(t) for t in texts]
    plain_s = time.perf_counter() - start

    agreement = {}
    for method in ("logprob", "pmi"):
        check = dataclasses.replace(curate, method=method)
        seed = params.seeds.generation
        a = ours if method == "logprob" else score_pairs(engine, pairs, check, params.train.tagging, seed)
        b = score_pairs(fp32, pairs, check, params.train.tagging, seed)
        x, y = [s.score for s in a], [s.score for s in b]
        threshold = getattr(params.curate.threshold, method)
        agreement[method] = {
            "spearman": float(spearmanr(x, y).statistic),
            "max_abs_difference": max(abs(u - v) for u, v in zip(x, y)),
            "same_decision": sum(is_selected(u, threshold) == is_selected(v, threshold) for u, v in zip(a, b)) / len(a),
            "threshold": threshold,
        }

    n_params = sum(p.numel() for p in model.parameters())
    achieved = 2 * n_params * computed_tokens / ours_s / 1e9
    peak = matmul_gflops(DTYPES[dtype])
    result = {
        "n_pairs": len(pairs),
        "mean_prompt_tokens": prompt_tokens / len(pairs),
        "shared_prefix_tokens": shared,
        "computed_tokens": computed_tokens,
        "threads": torch.get_num_threads(),
        "dtype": dtype,
        "baseline_dtype": "float32",
        "ours_logprob": {
            "seconds": ours_s,
            "seconds_per_pair": ours_s / len(pairs),
            "parsed": sum(s.parsed for s in ours),
        },
        "plain_generate_parse": {
            "seconds": plain_s,
            "seconds_per_pair": plain_s / len(pairs),
            "parsed": sum(p is not None for p in parsed),
            "batch_size": 8,
            "max_new_tokens": args.baseline_new_tokens,
        },
        "ratio": plain_s / ours_s,
        "achieved_gflops": achieved,
        "matmul_peak_gflops": peak,
        "matmul_share": achieved / peak,
        "agreement_with_float32": agreement,
    }
    print(f"{'method':<24}{'s/pair':>8}{'parsed':>8}")
    ours = result["ours_logprob"]
    print(f"{'ours (logprob)':<24}{ours['seconds_per_pair']:>8.2f}{ours['parsed']:>8}")
    print(
        f"{'plain generate+parse':<24}{result['plain_generate_parse']['seconds_per_pair']:>8.2f}"
        f"{result['plain_generate_parse']['parsed']:>8}"
    )
    print(
        f"ratio (ours / plain, per pair): {result['ratio']:.2f}x; scoring reaches {achieved:.0f} GFLOP/s "
        f"= {100 * result['matmul_share']:.0f}% of {dtype} matmul ({peak:.0f} GFLOP/s)"
    )
    for method, a in agreement.items():
        print(
            f"{dtype} vs float32, {method}: Spearman {a['spearman']:.3f}, largest difference "
            f"{a['max_abs_difference']:.3f}, same keep/drop decision {100 * a['same_decision']:.0f}%"
        )
    write_json(args.out, result)
    print(json.dumps({k: result[k] for k in ("ratio", "matmul_share", "n_pairs", "dtype")}))


if __name__ == "__main__":
    main()
