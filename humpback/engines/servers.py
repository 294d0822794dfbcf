"""`runtime.cluster: servers`: one model stage's work spread over several OpenAI-compatible servers.

- Which servers: `runtime.servers[<DVC stage instance>]` (DVC names the instance in $DVC_STAGE: `score@1`,
  `respond@m2`, `evaluate`); a stage instance not listed runs on its one `base_url` as with `local`.
- Which model: every server must serve the stage's model under a name made from the model's content
  (`served_name`: the fingerprint the resume scratch already uses), checked on the server's /v1/models before
  any work; a server holding another model (a stale M0 where score@2 needs M1) stops the stage, naming the
  server and both models. vLLM serves a full model under that name with `--served-model-name` and a LoRA
  adapter with `--lora-modules <name>=<folder>` (docs/scale.md "Many servers").
- How the work is spread: each engine call (one resumable shard's prompts, or a whole non-sharded stage's) is
  cut into contiguous chunks, one per live server, sent concurrently; each chunk goes through the one-server
  `OpenAIEngine`, so prompts, token ids and per-record seeds are exactly those of one server and the results
  come back in input order: the shard runner writes the same rows whatever the number of servers.
- A lost server (connection refused or dropped, timeout, 5xx after the client's retries): its chunk is sent
  again, whole, to a live server, and the server gets no more work in this stage. A shard is written only once
  every chunk has answered, so a partial shard is never taken as done; with no server left the stage stops.
- The servers' key (`vllm serve --api-key`) comes from $VLLM_API_KEY (vLLM's own variable), never from params;
  nothing here writes it anywhere.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from humpback.engines.base import UNSET, Sampling
from humpback.engines.openai_engine import OpenAIEngine
from humpback.params import GenerationParams, RuntimeParams
from humpback.storage.hashing import hash_json

API_KEY_ENV = "VLLM_API_KEY"
STAGE_ENV = "DVC_STAGE"  # set by DVC for every stage command: the stage's address, `score@1`
# Fewer retries than one server's MAX_RETRIES: another server can take the chunk, so a dead one should not
# hold the stage for half a minute of back-off first.
MAX_RETRIES = 2

log = logging.getLogger(__name__)


class ServedModelError(ValueError):
    """A server that does not serve the model the stage needs (a user's setup error: the stage stops)."""


class NoServerLeft(RuntimeError):
    """Every server of the stage was lost: nothing can finish the work."""


def served_name(model_dir: str | Path) -> str:
    """The name a server must serve `model_dir` under: its content fingerprint (and its base's, for an adapter),
    so a server started from another training run, iteration or base never matches."""
    from humpback.engines.models import model_identity

    return f"humpback-{hash_json(model_identity(model_dir))[:16]}"


def serve_command(model_dir: str | Path, port: int = 8000) -> str:
    """The `vllm serve` line that serves `model_dir` under its `served_name` (a hash: printed, never typed): a
    full model folder by `--served-model-name`; a LoRA adapter as a module on its base (rank from its config,
    since vLLM's `--max-lora-rank` defaults below common ranks). The key is $VLLM_API_KEY, which vLLM reads."""
    import json

    from humpback.engines.models import ADAPTER_CONFIG, adapter_base, is_adapter

    name = served_name(model_dir)
    if not is_adapter(model_dir):
        return f"vllm serve {model_dir} --served-model-name {name} --port {port}"
    base = adapter_base(model_dir)
    rank = json.loads((Path(model_dir) / ADAPTER_CONFIG).read_text()).get("r", 16)
    return (
        f"vllm serve {base} --served-model-name {served_name(base)} --enable-lora --max-lora-rank {rank} "
        f"--lora-modules {name}={model_dir} --port {port}"
    )


def stage_servers(runtime: RuntimeParams) -> list[str] | None:
    """This stage instance's servers under `runtime.cluster: servers`; None for `local` or an unlisted stage."""
    if runtime.cluster != "servers":
        return None
    # `score@1`; `<path>/dvc.yaml:score@1` when dvc runs from another folder (stage names hold no colon)
    instance = os.environ.get(STAGE_ENV, "").rsplit(":", 1)[-1]
    urls = runtime.servers.get(instance) if instance else None
    if not urls:
        log.info(
            "runtime.cluster is servers but runtime.servers lists none for stage '%s' (listed: %s): "
            "running on its base_url",
            instance or "(not run by dvc)",
            ", ".join(runtime.servers) or "none",
        )
        return None
    if len(set(urls)) != len(urls):
        raise ValueError(f"runtime.servers['{instance}'] lists a server twice: {urls}")
    return list(urls)


def _lost_errors() -> tuple[type[BaseException], ...]:
    """What makes a server lost: the openai client's own failures after its retries (APITimeoutError is an
    APIConnectionError)."""
    import openai

    return openai.APIConnectionError, openai.InternalServerError


class ServerPool:
    """The `Engine` protocol over several servers (see the module docstring); `tokenizer` is the model
    folder's, as for one server."""

    def __init__(
        self,
        model_dir: str | Path,
        params: GenerationParams,
        runtime: RuntimeParams,
        urls: Sequence[str],
        clients: dict[str, Any] | None = None,
    ):
        import openai

        self.model = params.api_model or served_name(model_dir)
        self.model_dir = str(model_dir)
        api_key = os.environ.get(API_KEY_ENV, "EMPTY")
        params = dataclasses.replace(params, api_model=self.model)
        self.engines: dict[str, OpenAIEngine] = {}
        for url in urls:
            client = (clients or {}).get(url) or openai.OpenAI(
                base_url=url, api_key=api_key, max_retries=MAX_RETRIES, timeout=600
            )
            self._check_model(url, client)
            self.engines[url] = OpenAIEngine(model_dir, params, dataclasses.replace(runtime, base_url=url), client)
        self.tokenizer = next(iter(self.engines.values())).tokenizer
        self.lost: dict[str, str] = {}  # url -> why
        self._lock = threading.Lock()
        self._turn = 0
        log.info("%d servers serving %s (%s): %s", len(urls), self.model, self.model_dir, ", ".join(urls))

    def _check_model(self, url: str, client) -> None:
        import openai

        try:
            served = [m.id for m in client.models.list().data]
        except _lost_errors() as exc:
            raise ServedModelError(f"server {url} did not answer /v1/models ({type(exc).__name__}: {exc})") from exc
        except openai.APIStatusError as exc:  # 401/403: the key ($VLLM_API_KEY) is missing or not the server's
            raise ServedModelError(
                f"server {url} refused /v1/models (HTTP {exc.status_code}); its key comes from ${API_KEY_ENV}"
            ) from exc
        if self.model not in served:
            raise ServedModelError(
                f"server {url} serves {served or 'no model'}, not {self.model} (the stage's model {self.model_dir}): "
                f"start it with --served-model-name {self.model}, or --lora-modules {self.model}=<folder> for an "
                'adapter (docs/scale.md, "Many servers")'
            )

    def live(self) -> list[str]:
        with self._lock:
            return [url for url in self.engines if url not in self.lost]

    def _lose(self, url: str, exc: BaseException) -> None:
        with self._lock:
            if url not in self.lost:
                self.lost[url] = f"{type(exc).__name__}: {exc}"
                log.warning("server %s lost (%s); its work goes to the others", url, self.lost[url])

    def _next_live(self) -> str:
        with self._lock:
            live = [url for url in self.engines if url not in self.lost]
            if not live:
                raise NoServerLeft(
                    "every server of this stage was lost: " + "; ".join(f"{u} ({why})" for u, why in self.lost.items())
                )
            self._turn += 1
            return live[self._turn % len(live)]

    def _spread(self, n: int, call: Callable[[OpenAIEngine, int, int], list]) -> list:
        """call(engine, start, stop) over contiguous chunks of range(n), one per live server, concurrently;
        a chunk whose server is lost goes whole to another live server. Results in input order."""
        if n == 0:
            return []
        urls = self.live() or [self._next_live()]
        k = min(len(urls), n)
        bounds = [(i * n // k, (i + 1) * n // k) for i in range(k)]
        results: list[list | None] = [None] * k
        with ThreadPoolExecutor(max_workers=len(self.engines)) as pool:
            pending: dict[Future, tuple[int, str]] = {
                pool.submit(call, self.engines[url], *bounds[i]): (i, url) for i, url in enumerate(urls[:k])
            }
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    i, url = pending.pop(future)
                    try:
                        results[i] = future.result()
                    except _lost_errors() as exc:
                        self._lose(url, exc)
                        other = self._next_live()
                        pending[pool.submit(call, self.engines[other], *bounds[i])] = (i, other)
        return [row for chunk in results for row in chunk]  # type: ignore[union-attr]

    def generate(
        self, prompts: list[str], max_new_tokens: int, seeds: list[int], *, sampling: Sampling = UNSET, desc: str = ""
    ) -> list[str]:
        if len(seeds) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        return self._spread(
            len(prompts), lambda e, a, b: e.generate(prompts[a:b], max_new_tokens, seeds[a:b], sampling=sampling)
        )

    def next_token_logprobs(self, prompts: list[str], candidates: list[str], *, desc: str = "") -> list[list[float]]:
        return self._spread(len(prompts), lambda e, a, b: e.next_token_logprobs(prompts[a:b], candidates))

    def completion_logprobs(self, prompts: list[str], completions: list[str], *, desc: str = "") -> list[list[float]]:
        return self._spread(len(prompts), lambda e, a, b: e.completion_logprobs(prompts[a:b], completions[a:b]))


if __name__ == "__main__":  # python -m humpback.engines.servers models/m0 models/m1: the lines to start servers
    import sys

    for folder in sys.argv[1:]:
        print(serve_command(folder))
