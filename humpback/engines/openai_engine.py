"""Any OpenAI-compatible server (a vLLM cluster, llama.cpp, TGI, ...) through its completions endpoint.

The prompt is sent already formatted with the local tokenizer's chat template (not through the chat endpoint,
whose server-side template could differ from the one the model was trained with). The API key comes from the
environment only (OPENAI_API_KEY; "EMPTY" for local servers that ignore it), never from params.
"""

from __future__ import annotations

import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm.auto import tqdm
from transformers import AutoTokenizer

from humpback.engines.tokens import encode_prompts, first_token_after
from humpback.generation import resolve_sampling
from humpback.params import GenerationParams, RuntimeParams
from humpback.prompts import end_of_turn_token

MAX_ATTEMPTS = 6  # one call plus five retries: 1+2+4+8+16 s of back-off, about half a minute
TOP_LOGPROBS = 20  # the most that OpenAI-compatible servers usually return


class OpenAIEngine:
    def __init__(self, model_dir: str | Path, params: GenerationParams, runtime: RuntimeParams, client=None,
                 backoff_s: float = 1.0):
        self.runtime = runtime
        if not runtime.base_url and client is None:
            raise ValueError("generation.engine=openai needs runtime.base_url "
                             "(e.g. http://localhost:8000/v1)")
        self.params, self.backoff_s = params, backoff_s
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        if client is None:
            import openai

            # Retries are ours (below), so the client's own are off.
            api_key = os.environ.get("OPENAI_API_KEY", "EMPTY")
            client = openai.OpenAI(base_url=runtime.base_url, api_key=api_key, max_retries=0, timeout=600)
        self.client = client
        self.model = params.api_model or self._served_model()
        self.stop = [end_of_turn_token(self.tokenizer)]

    def _served_model(self) -> str:
        models = self._call(self.client.models.list).data
        if not models:
            raise ValueError(f"{self.runtime.base_url} serves no model; set generation.api_model")
        return models[0].id

    def _call(self, fn, **kwargs):
        """Call the API; retry transient failures (connection, timeout, 429, 5xx) with growing pauses."""
        import openai

        transient = (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError)
        for attempt in range(MAX_ATTEMPTS):
            try:
                return fn(**kwargs)
            except transient:
                if attempt == MAX_ATTEMPTS - 1:
                    raise
                time.sleep(self.backoff_s * 2**attempt)

    def _map(self, fn, n: int, desc: str) -> list:
        """fn(0..n-1) with at most `concurrency` requests in flight; results in input order."""
        with ThreadPoolExecutor(max_workers=max(1, self.runtime.concurrency)) as pool:
            return list(tqdm(pool.map(fn, range(n)), total=n, desc=desc, unit="prompt", disable=not desc))

    def generate(self, prompts: list[str], max_new_tokens: int, seeds: list[int], *,
                 temperature: float | None = None, top_p: float | None = None, desc: str = "") -> list[str]:
        temperature, top_p = resolve_sampling(self.params, prompts, seeds, temperature, top_p)

        def one(i: int) -> str:
            response = self._call(self.client.completions.create, model=self.model, prompt=prompts[i],
                                  max_tokens=max_new_tokens, temperature=temperature,
                                  top_p=top_p if temperature > 0 else 1.0, seed=seeds[i], stop=self.stop)
            return response.choices[0].text

        return self._map(one, len(prompts), desc)

    def next_token_logprobs(self, prompts: list[str], candidates: list[str], *,
                            desc: str = "") -> list[list[float]]:
        """Read the candidates' first tokens among the top-20 of one greedy token; a candidate outside the
        top 20 gets -inf (its probability is negligible next to those inside)."""
        ids = encode_prompts(self.tokenizer, prompts)

        def one(i: int) -> list[float]:
            response = self._call(self.client.completions.create, model=self.model, prompt=prompts[i],
                                  max_tokens=1, temperature=0, logprobs=TOP_LOGPROBS)
            top = response.choices[0].logprobs.top_logprobs[0]
            wanted = [self.tokenizer.decode([first_token_after(self.tokenizer, prompts[i], ids[i], c)])
                      for c in candidates]
            return [float(top.get(token, -math.inf)) for token in wanted]

        return self._map(one, len(prompts), desc)

    def completion_logprobs(self, prompts: list[str], completions: list[str], *,
                            desc: str = "") -> list[list[float]]:
        raise NotImplementedError(
            "curate.method likelihood_gain / pmi need the log-probability of every answer token, which "
            "OpenAI-compatible completions endpoints do not reliably return: use generation.engine "
            "transformers or vllm for these methods, or a next-token method (logprob, rubric_calibrated, "
            "yes_no) with this engine"
        )
