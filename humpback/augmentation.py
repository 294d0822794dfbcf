"""Self-augmentation: the backward model writes one instruction per web segment → candidate pairs.

The prompt is exactly the backward model's training prefix (`prompts.backward_example`: the segment, cut to
`train.backward_max_output_tokens` as training answers were, in the user turn, no system prompt), sampled
with `generation` settings and a seed per segment, in resumable shards.
Generated instructions then pass four filters, each counted in the metrics (read = kept + sum(dropped)):
  empty            nothing left after stripping whitespace
  echo             the model copied the segment instead of asking for it: the instruction is a prefix of the
                   segment, or at least `augment.echo_overlap` of its word trigrams (words, for instructions
                   under three words) occur in the segment
  too_long         over `augment.max_instruction_chars`
  not_instruction  no letters; mostly symbols (under half of its non-space characters are letters: code,
                   tables); or it stops mid-sentence (does not end with ? . ! or :, optionally followed by a
                   closing quote or bracket), which is how a generation cut by max_new_tokens ends
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from statistics import fmean

from humpback.params import AugmentParams
from humpback.prompts import backward_example

log = logging.getLogger("augment")

DROP_REASONS = ("empty", "echo", "too_long", "not_instruction")
WORD = re.compile(r"\w+")
ENDS_SENTENCE = re.compile(r"[?.!:][\"'”’)\]`*]*$")


def _ngrams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def is_echo(instruction: str, segment: str, overlap: float) -> bool:
    """Did the model copy the segment? Word trigrams, not single words: a good question about a segment
    shares most of its words with it ("What does str.split do?"), rarely three in a row."""
    words, seg_words = WORD.findall(instruction.lower()), WORD.findall(segment.lower())
    if not words:
        return False
    if " ".join(seg_words[: len(words)]) == " ".join(words):
        return True
    n = min(3, len(words))
    grams = _ngrams(words, n)
    return len(grams & _ngrams(seg_words, n)) / len(grams) >= overlap


def is_instruction_like(instruction: str) -> bool:
    letters = sum(c.isalpha() for c in instruction)
    visible = sum(not c.isspace() for c in instruction)
    return letters > 0 and letters >= visible / 2 and bool(ENDS_SENTENCE.search(instruction))


def drop_reason(instruction: str, segment: str, params: AugmentParams) -> str | None:
    """Why a generated instruction is not kept (None: kept). The filters named in `augment.filters` are
    checked in the order of DROP_REASONS; an empty instruction is never kept."""
    checks = {
        "empty": lambda: not instruction,
        "echo": lambda: is_echo(instruction, segment, params.echo_overlap),
        "too_long": lambda: len(instruction) > params.max_instruction_chars,
        "not_instruction": lambda: not is_instruction_like(instruction),
    }
    for reason in DROP_REASONS:
        if (reason == "empty" or reason in params.filters) and checks[reason]():
            return reason
    return None


def augment(engine, segments: list[dict], params, run) -> tuple[list[dict], dict]:
    """Generate (in `run`'s shards), filter; return the kept pairs and the metrics."""
    from humpback.engines.base import record_seed

    tokenizer, size = engine.tokenizer, params.runtime.augment_shard_size

    def work(shard: list[dict]) -> list[dict]:
        # Runs where the shard's work runs: here, or on a Ray actor (`engine` is then the actor's own engine), so
        # it keeps no state between shards.
        cut = params.train.backward_max_output_tokens
        prompts = [backward_example(engine.tokenizer, s["text"], cut).prompt for s in shard]
        seeds = [record_seed(params.seeds.generation, s["id"]) for s in shard]
        texts = engine.generate(prompts, params.augment.max_new_tokens, seeds)
        return [{"segment_id": s["id"], "generated": t} for s, t in zip(shard, texts)]

    start = time.perf_counter()
    generated = run.map(segments, size, work, desc="augment", hand_out=getattr(engine, "map_shards", None))
    seconds = time.perf_counter() - start
    new_tokens = sum(
        len(tokenizer.encode(row["generated"], add_special_tokens=False))
        for k in run.worked
        for row in generated[k * size : (k + 1) * size]
    )

    kept, dropped = [], Counter({reason: 0 for reason in DROP_REASONS})
    for segment, row in zip(segments, generated):
        instruction = row["generated"].strip()
        reason = drop_reason(instruction, segment["text"], params.augment)
        if reason:
            dropped[reason] += 1
            continue
        kept.append(
            {
                "id": f"aug-{segment['id']}",
                "segment_id": segment["id"],
                "instruction": instruction,
                "output": segment["text"],
            }
        )
    metrics = {
        "read": len(segments),
        "kept": len(kept),
        "dropped": dict(dropped),
        "seconds": round(seconds, 2),
        "new_tokens": new_tokens,  # generated in this run (resumed shards are not counted)
        "tokens_per_s": round(new_tokens / seconds, 2) if seconds > 0 else None,
        "mean_instruction_chars": round(fmean(len(k["instruction"]) for k in kept), 1) if kept else 0.0,
    }
    return kept, metrics
