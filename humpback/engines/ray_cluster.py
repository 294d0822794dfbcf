"""`runtime.cluster: ray`: a model stage's shards on Ray actors, each holding the stage's own engine.

- Who works: `runtime.ray.actors` actors (0 = as many as the cluster's GPUs, or CPUs, fit at `num_gpus` /
  `num_cpus` each). Each builds the stage's engine once, with the factory the local path uses
  (`factory.make_engine`: transformers or vLLM), and sets torch's thread count (`runtime.ray.threads`; Ray
  starts workers with OMP_NUM_THREADS=1, so a local run and an actor would otherwise compute with different
  thread counts).
- How shards reach them: the shard runner (humpback/storage/shards.py) hands its missing shards to `map_shards`, which
  runs the stage's own per-shard `work` on the actors through Ray's `ActorPool` (as many shards in flight as
  actors, results in input order). A shard is one engine call, whole, exactly the call the local run makes,
  so batches, per-record seeds and so bytes are the same; this process still writes every finished shard
  (resume, counts). `work` is shipped to the actors once per stage; inside an actor, the pool it refers to is
  the actor's own engine (`RayPool.__reduce__`).
- Lost actors: Ray restarts an actor whose process or node dies (`max_restarts`: its engine is built again)
  and retries the shard it held (`max_task_retries=-1`: as long as the actor can come back). Past that the
  stage fails, and a rerun resumes from the shards already written.
- The shared-path requirement: every node must read the model folders (and, for relative paths, the stage's
  working directory, where `models/` lies) at the same path as this process, e.g. the checkout on a shared
  filesystem mounted at the same place. Each actor checks this before loading anything; one that cannot read
  a path stops the stage, naming its host and the path.
- Stages that make one engine call (respond, score_dev, likelihood, a local judge) run it whole on one actor:
  the model then loads where the cluster's GPUs are, not in the DVC process.
- The cluster's auth token is Ray's own ($RAY_AUTH_TOKEN or $RAY_AUTH_TOKEN_PATH, with RAY_AUTH_MODE=token);
  nothing here reads or writes it.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import socket
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from humpback.engines.base import UNSET, EngineSettings, Sampling
from humpback.params import RayParams

SHARED_PATHS = (
    ". Under runtime.cluster ray every node must read the model folders, and the stage's working "
    'directory, at the same path (docs/scale.md, "Ray cluster")'
)
# How long to wait for actors to start before the log says what they wait for (a busy or scaling cluster).
READY_WAIT_S = 60

log = logging.getLogger(__name__)

# The engine of this process when it is one of a RayPool's actors.
_held: Any = None


class ClusterError(ValueError):
    """The Ray cluster named cannot be joined (a user's setup error: the stage stops, naming the address)."""


class ModelPathError(ValueError):
    """A Ray worker that cannot read the stage's model folder (a user's setup error: the stage stops)."""


def ray_module() -> Any:
    """Ray, imported here only (the default run never imports it), or an error that says how to install it."""
    try:
        import ray
        import ray.util
    except ImportError as exc:
        raise ImportError(
            f"runtime.cluster ray needs Ray ({exc}): pip install -e '.[cluster]' (make setup does; "
            "pyproject.toml pins the version)"
        ) from exc
    return ray


def held_engine() -> Any:
    """This actor's engine: what a RayPool becomes when a shard's work is unpickled inside one of its actors."""
    if _held is None:
        raise RuntimeError("a RayPool was unpickled outside its actors: only a shard's work travels to them")
    return _held


def unreadable(paths: Iterable[str | Path]) -> str | None:
    """The first path this process cannot read, with why; None when it reads them all. A folder's files are
    opened (one byte each), so a folder listed but not readable (permissions, a stale mount) is caught too."""
    for path in paths:
        path = Path(path)
        try:
            if not path.exists():
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))
            for file in sorted(path.iterdir()) if path.is_dir() else [path]:
                if file.is_file():
                    with open(file, "rb") as f:
                        f.read(1)
        except OSError as exc:
            return f"{path.absolute()} ({exc.strerror or exc})"
    return None


def actor_count(settings: RayParams, cluster: dict[str, float]) -> int:
    """`runtime.ray.actors`, or (0) as many actors as the cluster's GPUs (CPUs, for CPU actors) fit."""
    if settings.actors:
        return settings.actors
    kind, each = ("GPU", settings.num_gpus) if settings.num_gpus > 0 else ("CPU", settings.num_cpus)
    if each <= 0:
        raise ValueError("runtime.ray: actors 0 (as many as fit) needs num_cpus or num_gpus above 0")
    count = int(cluster.get(kind, 0) // each)
    if count < 1:
        raise ValueError(
            f"runtime.ray: the Ray cluster has {cluster.get(kind, 0):g} {kind}s, not enough for one "
            f"actor of {each:g} (runtime.ray.num_{kind.lower()}s)"
        )
    return count


class EngineActor:
    """One Ray actor (made remote by RayPool with the stage's resources): the stage's engine, built once."""

    def __init__(
        self,
        model_dir: str,
        settings: EngineSettings,
        threads: int,
        cwd: str,
        factory: Callable[[str, EngineSettings], Any],
    ):
        global _held
        self.host, self.works = socket.gethostname(), {}
        self.problem: str | None = None
        try:
            os.chdir(cwd)  # relative model paths (models/m0, an adapter's base) mean what they mean to the stage
        except OSError as exc:
            self.problem = f"{cwd} ({exc.strerror or exc}; the stage's working directory)"
            return
        self.problem = unreadable([model_dir])  # before the imports below: a node without the folder says so fast
        if self.problem:
            return
        import torch

        from humpback.engines.models import adapter_base, is_adapter

        self.problem = unreadable([adapter_base(model_dir)] if is_adapter(model_dir) else [])
        if self.problem is None:
            torch.set_num_threads(threads)
            _held = factory(model_dir, settings)

    def info(self) -> dict[str, Any]:
        """Where it runs, what it could not read (None: it holds the engine), torch's thread count."""
        threads = None
        if self.problem is None:
            import torch

            threads = torch.get_num_threads()
        return {
            "host": self.host,
            "pid": os.getpid(),
            "problem": self.problem,
            "threads": threads,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        }

    def run(self, work: list, shard: list) -> Any:
        """work(shard) for one shard; `work` is [a reference to the stage's work function], fetched once."""
        ray = ray_module()
        key = work[0].hex()
        if key not in self.works:
            self.works = {key: ray.get(work[0])}  # one stage's work at a time
        return self.works[key](shard)

    def call(self, method: str, args: tuple, kwargs: dict) -> Any:
        return getattr(held_engine(), method)(*args, **kwargs)


class RayPool:
    """The `Engine` protocol on Ray actors (see the module docstring): `map_shards` for the shard runner, the
    engine methods whole on one actor; `tokenizer` is the model folder's, read here."""

    def __init__(
        self,
        model_dir: str | Path,
        engine: EngineSettings,
        factory: Callable[[str, EngineSettings], Any],
    ):
        import torch
        from transformers import AutoTokenizer

        ray = ray_module()
        self.model_dir, settings = str(model_dir), engine.runtime.ray
        problem = unreadable([self.model_dir])  # this process reads the tokenizer; the actors check their own
        if problem:
            raise ModelPathError(f"this process (host {socket.gethostname()}) cannot read {problem}{SHARED_PATHS}")
        if not ray.is_initialized():
            try:
                ray.init(address=settings.address or None)
            except ConnectionError as exc:  # no cluster there, or one whose token is not $RAY_AUTH_TOKEN's
                raise ClusterError(
                    f"runtime.ray.address {settings.address or '(Ray default)'}: {exc}. A cluster "
                    "with token authentication takes its token from $RAY_AUTH_TOKEN (or the file "
                    "$RAY_AUTH_TOKEN_PATH names), as `ray start` did"
                ) from exc
        self.size = actor_count(settings, ray.cluster_resources())
        self.threads = settings.threads or torch.get_num_threads()
        self.settings = settings
        self._remote = ray.remote(EngineActor).options(
            num_cpus=settings.num_cpus,
            num_gpus=settings.num_gpus,
            max_restarts=settings.max_restarts,
            max_task_retries=-1,
            scheduling_strategy="SPREAD",
        )
        self._arguments = (
            self.model_dir,
            dataclasses.replace(engine, runtime=dataclasses.replace(engine.runtime, cluster="local")),
            self.threads,
            os.getcwd(),
            factory,
        )
        self.actors: list = []  # started at the first use: all of them for shards, one for a single call
        self.infos: list[dict[str, Any]] = []
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)

    def __reduce__(self):
        return held_engine, ()

    def _grow(self, n: int) -> None:
        """Start actors until there are `n` (together: each loads the model), and wait until each has read the
        model folder and built its engine: the shared-path check, before any work."""
        ray = ray_module()
        new = [self._remote.remote(*self._arguments) for _ in range(n - len(self.actors))]
        if not new:
            return
        pending = [actor.info.remote() for actor in new]
        while True:
            ready, _ = ray.wait(pending, num_returns=len(pending), timeout=READY_WAIT_S)
            if len(ready) == len(pending):
                break
            log.warning(
                "waiting for %d of %d Ray actors (%g CPUs, %g GPUs each); the cluster has %s available",
                len(pending) - len(ready),
                len(pending),
                self.settings.num_cpus,
                self.settings.num_gpus,
                ray.available_resources(),
            )
        infos = ray.get(pending)
        problems = [f"Ray actor on host {i['host']} cannot read {i['problem']}" for i in infos if i["problem"]]
        if problems:
            for actor in self.actors + new:
                ray.kill(actor, no_restart=True)
            self.actors = []
            raise ModelPathError("; ".join(problems) + f" (the stage's model: {self.model_dir}){SHARED_PATHS}")
        self.actors += new
        self.infos += infos
        log.info(
            "%d Ray actors hold %s, %d torch threads each, on %s",
            len(self.actors),
            self.model_dir,
            self.threads,
            ", ".join(sorted({i["host"] for i in self.infos})),
        )

    def start(self) -> None:
        """Start every actor now (the shard hand-out does so at its first shard): to time start-up apart."""
        self._grow(self.size)

    def map_shards(self, work: Callable[[Any], Any], shards: Iterator[Any]) -> Iterator[Any]:
        """The shard runner's hand-out: work(shard) on the actors, as many shards in flight as actors, pulled
        lazily; results in the shards' order."""
        ray = ray_module()
        self._grow(self.size)
        ref = [ray.put(work)]  # shipped once; a list, so that Ray passes the reference, not the function
        pool = ray.util.ActorPool(self.actors)
        for shard in shards:
            if not pool.has_free():
                yield pool.get_next()
            pool.submit(lambda actor, value: self._submit(actor, ref, value), shard)
        while pool.has_next():
            yield pool.get_next()

    def _submit(self, actor: Any, work: list, shard: Any) -> Any:
        return actor.run.remote(work, shard)

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        ray = ray_module()
        self._grow(1)
        return ray.get(self.actors[0].call.remote(method, args, kwargs))

    def generate(
        self, prompts: list[str], max_new_tokens: int, seeds: list[int], *, sampling: Sampling = UNSET, desc: str = ""
    ) -> list[str]:
        return self._call("generate", prompts, max_new_tokens, seeds, sampling=sampling, desc=desc)

    def next_token_logprobs(self, prompts: list[str], candidates: list[str], *, desc: str = "") -> list[list[float]]:
        return self._call("next_token_logprobs", prompts, candidates, desc=desc)

    def completion_logprobs(self, prompts: list[str], completions: list[str], *, desc: str = "") -> list[list[float]]:
        return self._call("completion_logprobs", prompts, completions, desc=desc)

    def close(self) -> None:
        """Stop the actors now (Ray also stops them once no handle to them is left)."""
        ray = ray_module()
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors = []
