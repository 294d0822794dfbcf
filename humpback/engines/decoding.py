"""One batch of generation: a left-padded prefill into a static KV cache, then a decode loop that samples each
row with its own seeded generator.

Why a loop of our own and not `model.generate` with a logits processor: `generate` grows a dynamic cache with
`torch.cat` on every step and sends one-token queries to SDPA's CPU flash kernel, both slow on a CPU (the step
times, dated: docs/benchmarks.md "What bounds them"); it also can only prefill a
batch as one padded block. Here the cache is static and written in place, the engine's CPU kernels
(`cpu_kernels.py`) take the one-token attention, a CPU prefills row by row, and sampling runs softmax and top-k
once per step for the whole batch, which shortens a decode step. The per-row seeded draw
is unchanged, so a record's text does not depend on its batch.
"""

from __future__ import annotations

import copy

import torch
from transformers import StaticCache
from transformers.cache_utils import StaticLayer

# A shared prefix shorter than this is not worth a separate forward pass.
MIN_SHARED_PREFIX = 32
# Sorting a 50k vocabulary each step costs more than the model's step on CPU; a trained model's nucleus almost
# always lies in its top 256 tokens, so sort all only when it does not (the same nucleus either way).
NUCLEUS_FAST_K = 256


def draw_from_nucleus(
    sorted_probs: torch.Tensor, sorted_ids: torch.Tensor, generator: torch.Generator, top_p: float
) -> int:
    """One token from the smallest set of most likely tokens whose mass reaches top_p (the crossing one in)."""
    n_kept = max(1, int(((sorted_probs.cumsum(0) - sorted_probs) < top_p).sum()))
    cdf = sorted_probs[:n_kept].cumsum(0)
    u = torch.rand((), generator=generator).item() * cdf[-1].item()
    index = min(int(torch.searchsorted(cdf, torch.tensor(u), right=True)), n_kept - 1)
    return int(sorted_ids[index])


def sample_rows(
    logits: torch.Tensor, generators: list[torch.Generator | None], temperature: float, top_p: float
) -> list[int]:
    """Row i's next token from logits[i] with generators[i] (None: the row is finished, gets -1).

    temperature 0 is greedy. Softmax and top-k run once over the batch; only the draw is per row."""
    if temperature == 0:
        return logits.argmax(-1).tolist()
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    top_probs, top_ids = probs.topk(min(NUCLEUS_FAST_K, probs.shape[-1]), dim=-1)
    # The draws run on the CPU (one transfer of the top-k per step, not a device sync per row).
    top_probs, top_ids = top_probs.cpu(), top_ids.cpu()
    covered = (top_probs.sum(-1) >= top_p).tolist()
    tokens = []
    for row, generator in enumerate(generators):
        if generator is None:
            tokens.append(-1)
            continue
        sorted_probs, sorted_ids = top_probs[row], top_ids[row]
        if not covered[row]:
            sorted_probs, sorted_ids = (x.cpu() for x in probs[row].sort(descending=True, stable=True))
        tokens.append(draw_from_nucleus(sorted_probs, sorted_ids, generator, top_p))
    return tokens


def sample_token(logits: torch.Tensor, generator: torch.Generator, temperature: float, top_p: float) -> int:
    """Nucleus sampling of one token from one row of logits, with the row's own generator."""
    return sample_rows(logits.unsqueeze(0), [generator], temperature, top_p)[0]


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r) :] = torch.tensor(r)
            mask[i, width - len(r) :] = 1
    return ids, mask


def real_positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count a row's real tokens only, so left padding does not shift them."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def shared_prefix_length(rows: list[list[int]]) -> int:
    """Length of the longest token prefix common to all rows, leaving each row at least one own token."""
    first, n = rows[0], min(len(r) for r in rows) - 1
    for i in range(max(n, 0)):
        if any(r[i] != first[i] for r in rows):
            return i
    return max(n, 0)


def shared_prefix_cache(model, rows: list[list[int]], cache_arg: str):
    """(length, KV cache of one row) of the token prefix all rows share, computed once; (0, None) when there
    is no prefix worth a forward pass of its own. Every forward pass appends to a cache: deep-copy it per use."""
    prefix = shared_prefix_length(rows) if len(rows) > 1 else 0
    if prefix < MIN_SHARED_PREFIX:
        return 0, None
    out = model(input_ids=torch.tensor([rows[0][:prefix]], device=model.device), use_cache=True, logits_to_keep=1)
    return prefix, out[cache_arg]


def prefill_batch(
    model, input_ids: torch.Tensor, mask: torch.Tensor, cache: StaticCache, cache_arg: str
) -> torch.Tensor:
    """All rows in one left-padded forward pass; returns each row's last logits."""
    out = model(
        input_ids=input_ids.to(model.device),
        attention_mask=mask.to(model.device),
        position_ids=real_positions(mask).to(model.device),
        use_cache=True,
        logits_to_keep=1,
        **{cache_arg: cache},
    )
    return out.logits[:, -1]


def prefill_row_by_row(model, rows: list[list[int]], cache: StaticCache, cache_arg: str) -> torch.Tensor:
    """Each row alone (no padding to compute, SDPA's causal kernel), after a token prefix shared by all rows
    computed once; each row's keys and values are then copied into its slots of the left-padded static cache.

    On a CPU this beats one padded batch: it computes no padding and uses the causal kernel (the generation
    benchmark's figures, dated: docs/benchmarks.md "What bounds them"). A GPU
    keeps the batched prefill, which fills it better."""
    width = max(len(r) for r in rows)
    prefix, prefix_cache = shared_prefix_cache(model, rows, cache_arg)
    logits = []
    for row_index, row in enumerate(rows):
        out = model(
            input_ids=torch.tensor([row[prefix:]], device=model.device),
            use_cache=True,
            logits_to_keep=1,
            **{cache_arg: copy.deepcopy(prefix_cache)},
        )
        for layer, row_layer in zip(cache.layers, out[cache_arg].layers):
            if not layer.is_initialized:
                shape = (len(rows), *row_layer.keys.shape[1:])
                layer.lazy_initialization(row_layer.keys.expand(shape), row_layer.values.expand(shape))
            layer.keys[row_index, :, width - len(row) : width] = row_layer.keys[0]
            layer.values[row_index, :, width - len(row) : width] = row_layer.values[0]
        logits.append(out.logits[0, -1])
    for layer in cache.layers:
        layer.cumulative_length.fill_(width)
    return torch.stack(logits)


def generate_batch(
    model,
    rows: list[list[int]],
    seeds: list[int],
    max_new_tokens: int,
    *,
    stop_ids: list[int],
    pad_id: int,
    temperature: float,
    top_p: float,
    cache_arg: str = "cache",
    row_by_row: bool = False,
) -> list[list[int]]:
    """New token ids for each prompt row (ending with the stop token when one was drawn).

    Rows are left-padded to the longest in a cache of prompt + max_new_tokens slots; a finished row is fed
    padding until the batch ends. `row_by_row` prefills each row alone (see `prefill_row_by_row`); it applies
    where every cache layer is a plain full-attention one, and the batch is prefilled at once otherwise."""
    device = model.device
    input_ids, prompt_mask = left_pad(rows, pad_id)
    width = input_ids.shape[1]
    cache = StaticCache(config=model.config, max_cache_len=width + max_new_tokens)
    if row_by_row and all(type(layer) is StaticLayer for layer in cache.layers):
        logits = prefill_row_by_row(model, rows, cache, cache_arg)
    else:
        logits = prefill_batch(model, input_ids, prompt_mask, cache, cache_arg)
    # One mask for the decode steps: padding is never attended, every later slot is (causality masks the future).
    mask = torch.ones((len(rows), width + max_new_tokens), dtype=torch.long)
    mask[:, :width] = prompt_mask
    mask = mask.to(device)
    next_position = torch.tensor([len(r) for r in rows]).unsqueeze(1).to(device)
    generators = [torch.Generator().manual_seed(s) for s in seeds] if temperature > 0 else [None] * len(rows)
    active = [True] * len(rows)
    out: list[list[int]] = [[] for _ in rows]
    stops = set(stop_ids)
    for step in range(max_new_tokens):
        drawn = sample_rows(logits, [g if a else None for g, a in zip(generators, active)], temperature, top_p)
        for row, token in enumerate(drawn):
            if active[row]:
                out[row].append(token)
                active[row] = token not in stops
        if step == max_new_tokens - 1 or not any(active):
            break
        fed = torch.tensor([[t if a else pad_id] for t, a in zip(drawn, active)], device=device)
        logits = model(
            input_ids=fed,
            attention_mask=mask[:, : width + step + 1],
            position_ids=next_position + step,
            use_cache=True,
            **{cache_arg: cache},
        ).logits[:, -1]
    return out
