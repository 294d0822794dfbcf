"""The default engine: the model in this process with transformers, on CPU or one GPU.

- Batches are cut by a token budget from length-sorted prompts (see `token_budget_batches`), left-padded.
- Each batch runs `decoding.generate_batch`: prefill into a static KV cache, then a decode loop where each row
  draws from its own `torch.Generator` seeded with the record's seed. transformers' own sampler draws every row
  from one global generator, so a record's text would depend on its batch-mates; here it does not (up to float
  rounding, which changes a draw only at a near-tie).
- On CPU the model runs with `cpu_kernels`: packed linears and a one-token decode attention (faster decode steps;
  docs/benchmarks.md has the figures).
- `next_token_logprobs` runs one forward pass per batch, no generation. Prompts that share a long token prefix
  (every curation prompt starts with the same rubric) compute that prefix once and reuse its KV cache.
"""

from __future__ import annotations

import copy
import inspect
import logging
from pathlib import Path

import torch
from tqdm.auto import tqdm

from humpback.engines.base import UNSET, Sampling, resolve_sampling
from humpback.engines.cpu_kernels import use_cpu_kernels
from humpback.engines.decoding import generate_batch, left_pad, real_positions, shared_prefix_cache
from humpback.engines.models import load_model
from humpback.engines.tokens import (
    encode_completion_pairs,
    encode_prompts,
    first_token_after,
    stop_token_ids,
    token_budget_batches,
)
from humpback.params import GenerationParams, RuntimeParams

# On a CPU, reads that reuse a prefix cache run in batches of at most this many prompt tokens: their attention
# takes an explicit mask over prefix + suffix, and CPU's flash-attention kernel slows down as a batch's keys
# outgrow the cache (measured in docs/benchmarks.md, "curation").
CPU_PREFIX_BATCH_TOKENS = 2048

log = logging.getLogger(__name__)


class TransformersEngine:
    def __init__(self, model_dir: str | Path, params: GenerationParams, runtime: RuntimeParams):
        self.params, self.runtime = params, runtime
        self.model, self.tokenizer = load_model(model_dir, params.dtype)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device)
        if self.device.type == "cpu":
            log.info("CPU inference with %s", ", ".join(use_cpu_kernels(self.model)) or "stock kernels")
        self.stop_ids = stop_token_ids(self.tokenizer)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.stop_ids[0]
        # transformers 5.x renamed the forward argument `past_key_values` to `cache`; accept either release.
        forward_args = inspect.signature(self.model.forward).parameters
        self.cache_arg = "cache" if "cache" in forward_args else "past_key_values"

    @torch.inference_mode()
    def generate(
        self, prompts: list[str], max_new_tokens: int, seeds: list[int], *, sampling: Sampling = UNSET, desc: str = ""
    ) -> list[str]:
        temperature, top_p = resolve_sampling(self.params, prompts, seeds, sampling)
        ids = encode_prompts(self.tokenizer, prompts)
        texts: list[str] = [""] * len(prompts)
        with tqdm(total=len(prompts), desc=desc, unit="prompt", disable=not desc) as bar:
            for batch in token_budget_batches([len(x) for x in ids], max_new_tokens, self.runtime.token_budget):
                new_ids = generate_batch(
                    self.model,
                    [ids[i] for i in batch],
                    [seeds[i] for i in batch],
                    max_new_tokens,
                    stop_ids=self.stop_ids,
                    pad_id=self.pad_id,
                    temperature=temperature,
                    top_p=top_p,
                    cache_arg=self.cache_arg,
                    row_by_row=self.device.type == "cpu",
                )
                for row, i in enumerate(batch):
                    texts[i] = self._decode(new_ids[row])
                bar.update(len(batch))
        return texts

    def _decode(self, new_ids: list[int]) -> str:
        for k, token in enumerate(new_ids):
            if token in self.stop_ids:
                new_ids = new_ids[:k]
                break
        return self.tokenizer.decode(new_ids, skip_special_tokens=True)

    @torch.inference_mode()
    def next_token_logprobs(self, prompts: list[str], candidates: list[str], *, desc: str = "") -> list[list[float]]:
        ids = encode_prompts(self.tokenizer, prompts)
        wanted = [[first_token_after(self.tokenizer, p, x, c) for c in candidates] for p, x in zip(prompts, ids)]
        prefix, prefix_cache = shared_prefix_cache(self.model, ids, self.cache_arg)
        rows: list[list[float]] = [[] for _ in prompts]
        with tqdm(total=len(prompts), desc=desc, unit="prompt", disable=not desc) as bar:
            budget = self.runtime.token_budget
            if prefix_cache is not None and self.device.type == "cpu":
                budget = min(budget, CPU_PREFIX_BATCH_TOKENS)
            for batch in token_budget_batches([len(x) for x in ids], 0, budget):
                logprobs = self._last_logprobs([ids[i][prefix:] for i in batch], prefix, prefix_cache)
                for row, i in enumerate(batch):
                    rows[i] = [float(logprobs[row, t]) for t in wanted[i]]
                bar.update(len(batch))
        return rows

    def _last_logprobs(self, suffixes: list[list[int]], prefix: int, prefix_cache) -> torch.Tensor:
        """log-softmax at the last position of [shared prefix][left padding][suffix] rows."""
        input_ids, mask = left_pad(suffixes, self.pad_id)
        cache = None
        if prefix_cache is not None:
            # The forward pass appends to the cache in place: each batch gets its own copy, one per row.
            cache = copy.deepcopy(prefix_cache)
            cache.batch_repeat_interleave(len(suffixes))
            mask = torch.cat([torch.ones((len(suffixes), prefix), dtype=torch.long), mask], dim=1)
        positions = real_positions(mask)[:, -input_ids.shape[1] :]
        out = self.model(
            input_ids=input_ids.to(self.device),
            attention_mask=mask.to(self.device),
            position_ids=positions.to(self.device),
            use_cache=cache is not None,
            logits_to_keep=1,
            **{self.cache_arg: cache},
        )
        return torch.log_softmax(out.logits[:, -1].float(), dim=-1).cpu()

    # ---- appended for curate.method likelihood_gain / pmi (kept at the end of the class for clean merges)

    COMPLETION_LOGITS_BYTES = 512 << 20  # the most memory completion_logprobs' fp32 logits take at once

    @torch.inference_mode()
    def completion_logprobs(self, prompts: list[str], completions: list[str], *, desc: str = "") -> list[list[float]]:
        """log P(each completion token | prompt and the completion tokens before it), one row per pair.

        Prompt and completion are tokenized separately and concatenated, as training tokenizes an example, so
        the scored tokens are the ones a model was trained on. Rows are left-padded, so every completion ends
        at the last position and only the last (longest completion + 1) positions' logits are computed; a
        batch is cut further so those logits stay under COMPLETION_LOGITS_BYTES (a 150k vocabulary times a
        few thousand positions is gigabytes)."""
        prompt_ids, completion_ids = encode_completion_pairs(self.tokenizer, prompts, completions)
        rows = [p + c for p, c in zip(prompt_ids, completion_ids)]
        vocab = self.model.get_output_embeddings().out_features
        out: list[list[float]] = [[] for _ in prompts]
        with tqdm(total=len(prompts), desc=desc, unit="pair", disable=not desc) as bar:
            for batch in token_budget_batches([len(r) for r in rows], 0, self.runtime.token_budget):
                keep = max(len(completion_ids[i]) for i in batch) + 1
                per_row = max(1, self.COMPLETION_LOGITS_BYTES // (keep * vocab * 4))
                for start in range(0, len(batch), per_row):
                    sub = batch[start : start + per_row]
                    keep = max(len(completion_ids[i]) for i in sub) + 1
                    input_ids, mask = left_pad([rows[i] for i in sub], self.pad_id)
                    positions = real_positions(mask)
                    logits = self.model(
                        input_ids=input_ids.to(self.device),
                        attention_mask=mask.to(self.device),
                        position_ids=positions.to(self.device),
                        use_cache=False,
                        logits_to_keep=keep,
                    ).logits
                    # Position t predicts token t + 1: the kept positions but the last predict the last keep-1.
                    logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
                    targets = input_ids[:, input_ids.shape[1] - (keep - 1) :].to(logprobs.device)
                    token_lp = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1).cpu()
                    for row, i in enumerate(sub):
                        n = len(completion_ids[i])
                        out[i] = token_lp[row, token_lp.shape[1] - n :].tolist() if n else []
                bar.update(len(batch))
        return out
