"""Any OpenAI-compatible server (a vLLM cluster, llama.cpp, TGI, ...) through its completions endpoint.

- Prompts are formatted with the local tokenizer's chat template (not through the chat endpoint, whose
  server-side template could differ from the one the model was trained with) and sent as token ids, so the
  model sees exactly the tokens training made: a server that re-tokenizes text can add a second BOS
  (Llama-family templates write their own). A server that refuses token-id prompts gets text instead, with a
  warning, for generation and next-token reads; `completion_logprobs` needs the ids and says so.
- `completion_logprobs` reads the server's prompt log-probabilities for prompt + completion sent as one
  token-id prompt (`echo` with `logprobs`: vLLM answers with `prompt_logprobs` keyed by token id, the OpenAI
  shape with `logprobs.token_logprobs` by position); the prompt/completion boundary is the local tokenizer's.
- Transient failures (connection, timeout, 408/409/429/5xx, a server's Retry-After) are retried by the openai
  client itself (`max_retries`), with its exponential back-off.
- The API key comes from the environment only (OPENAI_API_KEY; "EMPTY" for local servers that ignore it).
"""

from __future__ import annotations

import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm.auto import tqdm
from transformers import AutoTokenizer

from humpback.engines.base import UNSET, Sampling, resolve_sampling
from humpback.engines.tokens import encode_completion_pairs, encode_prompts, first_token_after
from humpback.params import GenerationParams, RuntimeParams
from humpback.prompts import end_of_turn_token

# Enough of the openai client's own exponential back-off to ride out a server restart (docs/scale.md, "Retries").
MAX_RETRIES = 8
TOP_LOGPROBS = 20  # the most that OpenAI-compatible servers usually return (vLLM's default max_logprobs)
NEEDS_COMPLETION_LOGPROBS = "curate.method likelihood_gain / pmi and evaluate.judge_read likelihood_gain / pmi"

log = logging.getLogger(__name__)


class ServerCapabilityError(RuntimeError):
    """The server answered, but without what a method needs (log-probabilities, token-id prompts)."""


class OpenAIEngine:
    def __init__(self, model_dir: str | Path, params: GenerationParams, runtime: RuntimeParams, client=None):
        if not runtime.base_url and client is None:
            raise ValueError(
                "the openai engine needs runtime.base_url, or the stage's own runtime.<stage>_base_url "
                "(e.g. http://localhost:8000/v1)"
            )
        # Execution settings, read once here: where they live in params is this constructor's business alone.
        self.params, self.base_url, self.concurrency = params, runtime.base_url, runtime.concurrency
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        if client is None:
            import openai

            api_key = os.environ.get("OPENAI_API_KEY", "EMPTY")
            client = openai.OpenAI(base_url=self.base_url, api_key=api_key, max_retries=MAX_RETRIES, timeout=600)
        self.client = client
        self.model = params.api_model or self._served_model()
        self.stop = [end_of_turn_token(self.tokenizer)]
        self.token_prompts = True  # False once the server has refused a token-id prompt and taken its text

    def _served_model(self) -> str:
        models = self.client.models.list().data
        if not models:
            raise ValueError(f"{self.base_url} serves no model; set generation.api_model (or <stage>.api_model)")
        return models[0].id

    def _complete(self, ids: list[int], text: str, **kwargs):
        """One completions request, the prompt as token ids; as text when the server refuses token ids (it
        then re-tokenizes the text, which can differ from `ids`, e.g. by a second BOS)."""
        import openai

        if self.token_prompts:
            try:
                return self.client.completions.create(model=self.model, prompt=ids, **kwargs)
            except (openai.BadRequestError, openai.UnprocessableEntityError) as exc:
                # Also raised for other reasons (a prompt over the context length): the text then fails too,
                # and that error is the one the user sees.
                response = self.client.completions.create(model=self.model, prompt=text, **kwargs)
                if self.token_prompts:
                    log.warning(
                        "%s refused a token-id prompt (%s); sending text, which the server "
                        "re-tokenizes: its tokens can differ from the training template's",
                        self.base_url,
                        exc,
                    )
                self.token_prompts = False
                return response
        return self.client.completions.create(model=self.model, prompt=text, **kwargs)

    def _map(self, fn, n: int, desc: str) -> list:
        """fn(0..n-1) with at most `concurrency` requests in flight; results in input order."""
        with ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as pool:
            return list(tqdm(pool.map(fn, range(n)), total=n, desc=desc, unit="prompt", disable=not desc))

    def generate(
        self, prompts: list[str], max_new_tokens: int, seeds: list[int], *, sampling: Sampling = UNSET, desc: str = ""
    ) -> list[str]:
        temperature, top_p = resolve_sampling(self.params, prompts, seeds, sampling)
        ids = encode_prompts(self.tokenizer, prompts)

        def one(i: int) -> str:
            response = self._complete(
                ids[i],
                prompts[i],
                max_tokens=max_new_tokens,
                temperature=temperature,
                top_p=top_p if temperature > 0 else 1.0,
                seed=seeds[i],
                stop=self.stop,
            )
            return response.choices[0].text

        return self._map(one, len(prompts), desc)

    def next_token_logprobs(self, prompts: list[str], candidates: list[str], *, desc: str = "") -> list[list[float]]:
        """Read the candidates' first tokens among the top-20 of one greedy token; a candidate outside the
        top 20 gets -inf (its probability is negligible next to those inside)."""
        ids = encode_prompts(self.tokenizer, prompts)

        def one(i: int) -> list[float]:
            response = self._complete(ids[i], prompts[i], max_tokens=1, temperature=0, logprobs=TOP_LOGPROBS)
            logprobs = response.choices[0].logprobs
            if logprobs is None or not logprobs.top_logprobs or not logprobs.top_logprobs[0]:
                raise ServerCapabilityError(
                    f"{self.base_url} answered a completions request with logprobs={TOP_LOGPROBS} "
                    "without top_logprobs: the next-token methods (curate.method logprob, rubric_calibrated, "
                    "yes_no) need a server that returns them (vLLM does; `transformers serve` does not)"
                )
            top = logprobs.top_logprobs[0]
            wanted = [
                self.tokenizer.decode([first_token_after(self.tokenizer, prompts[i], ids[i], c)]) for c in candidates
            ]
            return [float(top.get(token, -math.inf)) for token in wanted]

        return self._map(one, len(prompts), desc)

    def completion_logprobs(self, prompts: list[str], completions: list[str], *, desc: str = "") -> list[list[float]]:
        """log P(each completion token | prompt and the completion tokens before it), one row per pair.

        Prompt and completion are tokenized separately and concatenated, as training and the in-process
        engine tokenize an example; the server scores the joint ids as its prompt, and the completion's
        log-probabilities are the last len(completion ids) of them."""
        prompt_ids, completion_ids = encode_completion_pairs(self.tokenizer, prompts, completions)

        def one(i: int) -> list[float]:
            if not completion_ids[i]:
                return []
            joint = prompt_ids[i] + completion_ids[i]
            scored = self._prompt_logprobs(joint)
            return scored[len(prompt_ids[i]) :]

        return self._map(one, len(prompts), desc)

    def _prompt_logprobs(self, ids: list[int]) -> list[float]:
        """log P(ids[t] | ids[:t]) for t = 0..len-1 (t = 0 is NaN: nothing precedes it), from one request.

        max_tokens=1 rather than 0, which vLLM once crashed on with echo (vllm-project/vllm#6521); the one
        generated token is ignored. Echo with a token-id prompt works in vLLM since #3441 (0.4.0)."""
        import openai

        try:
            response = self.client.completions.create(
                model=self.model, prompt=ids, echo=True, logprobs=1, max_tokens=1, temperature=0
            )
        except (openai.BadRequestError, openai.UnprocessableEntityError) as exc:
            raise ServerCapabilityError(
                f"{self.base_url} refused a token-id prompt with echo=true, logprobs=1 ({exc}); "
                f"{NEEDS_COMPLETION_LOGPROBS} score exactly the training template's tokens, so they need a "
                "server that takes token ids and returns prompt log-probabilities (vLLM's completions "
                "endpoint does)"
            ) from exc
        choice = response.choices[0]
        by_id = (choice.model_extra or {}).get("prompt_logprobs")
        if by_id is not None:  # vLLM: [None, {"<token id>": {"logprob", "rank", "decoded_token"}}, ...]
            if len(by_id) < len(ids):
                raise ServerCapabilityError(
                    f"{self.base_url} returned {len(by_id)} prompt_logprobs for a prompt of {len(ids)} tokens"
                )
            out = [math.nan]
            for t in range(1, len(ids)):
                entry = by_id[t] or {}
                if str(ids[t]) not in entry:
                    raise ServerCapabilityError(
                        f"{self.base_url}: prompt_logprobs at position {t} has no entry for the prompt's "
                        f"token {ids[t]} (got {sorted(entry)}): the server did not score the ids sent"
                    )
                out.append(float(entry[str(ids[t])]["logprob"]))
            return out
        logprobs = choice.logprobs  # the OpenAI echo shape: token_logprobs by position, None first
        if logprobs is not None and logprobs.token_logprobs and len(logprobs.token_logprobs) >= len(ids):
            return [math.nan if x is None else float(x) for x in logprobs.token_logprobs[: len(ids)]]
        raise ServerCapabilityError(
            f"{self.base_url} returned no prompt log-probabilities for a completions request with "
            f"echo=true, logprobs=1 (neither `prompt_logprobs` nor `logprobs.token_logprobs` covering the "
            f"{len(ids)} prompt tokens). {NEEDS_COMPLETION_LOGPROBS} need them: serve the model with vLLM "
            "(`vllm serve`; `transformers serve` ignores logprobs), use generation.engine transformers or vllm, "
            "or a next-token method (logprob, rubric_calibrated, yes_no)"
        )
