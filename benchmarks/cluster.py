"""What a shard costs on `runtime.cluster: servers` and `ray` beyond `local`: the augment stage's own work
(`humpback.augmentation.augment`, the shard runner, per-record seeds) on the same model and segments, three ways.

    python benchmarks/cluster.py --model models/base --web data/web.jsonl --n 16 --out cluster.json

- `local`: the transformers engine in this process (today's default).
- `servers`: one OpenAI-compatible server on 127.0.0.1, in this process, answering each request with that same
  engine (so it computes what `local` computes), through `ServerPool` and the openai client: HTTP, JSON, token
  ids and the client's bookkeeping are the overhead.
- `ray`: one Ray actor holding that engine (`RayPool`), fed the shards through Ray's ActorPool: the task
  round trip and pickling of the work and rows are the overhead. A local Ray is started here unless one runs.

One record per shard and one server or actor, so each shard is one engine call of one prompt everywhere: the
differences are what each path adds per shard, not parallelism or batching. Start-up (the server's engine,
the actor with its engine) is timed apart, and each path's shards are timed on their second pass. `ratio` is
each path's seconds per shard over `local`'s (> 1: slower); `overhead_ms` the difference per shard.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import socket
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import torch

from humpback.augmentation import augment
from humpback.engines.base import Sampling
from humpback.engines.factory import engine_settings, make_engine
from humpback.engines.servers import ServerPool, served_name
from humpback.params import DEFAULT_PARAMS_FILE, load_params
from humpback.storage.records import read_jsonl, write_json
from humpback.storage.shards import ShardedRun


class Completions(BaseHTTPRequestHandler):
    """/v1/models and /v1/completions (generation only) in vLLM's shapes, computed by `server.engine`."""

    def log_message(self, *args):
        pass

    def _send(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._send(
            {"object": "list", "data": [{"id": self.server.name, "object": "model", "created": 0, "owned_by": "vllm"}]}
        )

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        engine = self.server.engine
        prompt = body["prompt"]  # token ids, as the openai engine sends them
        text = engine.tokenizer.decode(prompt) if isinstance(prompt, list) else prompt
        with self.server.lock:  # one engine call at a time, as `local` makes them
            torch.set_num_threads(self.server.threads)  # OpenMP's thread count is per calling thread
            sampling = Sampling(temperature=body["temperature"], top_p=body["top_p"])
            (out,) = engine.generate([text], body["max_tokens"], [body["seed"]], sampling=sampling)
        self._send(
            {
                "id": "cmpl-0",
                "object": "text_completion",
                "created": 0,
                "model": self.server.name,
                "choices": [{"index": 0, "text": out, "logprobs": None, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": len(prompt), "completion_tokens": 0, "total_tokens": len(prompt)},
            }
        )


def timed_augment(engine, segments: list[dict], params, scratch: Path, name: str) -> tuple[float, list[dict]]:
    """Seconds of augment's shards on `engine`, and the pairs kept, after one untimed pass over the same
    segments: an engine's first call at each prompt length allocates and packs what later calls reuse, and
    `servers` shares `local`'s engine, so only warm passes compare."""
    for label, rows in (("warm", segments), ("timed", segments)):
        run = ShardedRun(f"bench-{name}-{label}", "0" * 64, root=scratch)
        start = time.perf_counter()
        kept, _ = augment(engine, rows, params, run)
        seconds = time.perf_counter() - start
        run.clear()
    return seconds, kept


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/base")
    ap.add_argument("--web", default="data/web.jsonl")
    ap.add_argument("--n", type=int, default=16, help="segments, one shard each")
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads on every path (on 2 shared cores, 2 threads waiting on each other can "
        "make a small model's call ten times slower, and a new thread does not inherit the count)",
    )
    ap.add_argument("--params", default=DEFAULT_PARAMS_FILE)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    import ray

    torch.set_num_threads(args.threads)
    base = load_params(args.params)
    params = dataclasses.replace(
        base,
        augment=dataclasses.replace(base.augment, max_new_tokens=args.max_new_tokens, filters=[]),
        runtime=dataclasses.replace(base.runtime, augment_shard_size=1),
    )
    generation = dataclasses.replace(base.generation, engine="transformers", dtype="float32")
    segments = read_jsonl(args.web)[: args.n]
    result: dict = {
        "shards": len(segments),
        "records_per_shard": 1,
        "max_new_tokens": args.max_new_tokens,
        "threads": args.threads,
        "host": socket.gethostname(),
    }
    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        local = make_engine(args.model, engine_settings(generation, params.runtime))
        local_start = time.perf_counter() - start
        seconds, expected = timed_augment(local, segments, params, Path(scratch), "local")
        result["local"] = {"startup_s": local_start, "seconds": seconds}

        server = ThreadingHTTPServer(("127.0.0.1", 0), Completions)
        server.engine, server.lock, server.name = local, threading.Lock(), served_name(args.model)
        server.threads = args.threads
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            os.environ.setdefault("VLLM_API_KEY", "EMPTY")
            runtime = dataclasses.replace(params.runtime, concurrency=1)
            start = time.perf_counter()
            pool = ServerPool(
                args.model,
                dataclasses.replace(generation, engine="openai"),
                runtime,
                [f"http://127.0.0.1:{server.server_port}/v1"],
            )
            servers_start = time.perf_counter() - start
            seconds, kept = timed_augment(pool, segments, params, Path(scratch), "servers")
            result["servers"] = {"startup_s": servers_start, "seconds": seconds, "same_output": kept == expected}
        finally:
            server.shutdown()
            server.server_close()

        started_ray = not ray.is_initialized()
        if started_ray:
            ray.init(num_cpus=1, include_dashboard=False, configure_logging=False)
        try:
            runtime = dataclasses.replace(
                params.runtime,
                cluster="ray",
                ray=dataclasses.replace(params.runtime.ray, actors=1, num_cpus=1, threads=args.threads),
            )
            start = time.perf_counter()
            pool = make_engine(args.model, engine_settings(generation, runtime))
            pool.start()
            ray_start = time.perf_counter() - start
            seconds, kept = timed_augment(pool, segments, params, Path(scratch), "ray")
            result["ray"] = {
                "startup_s": ray_start,
                "seconds": seconds,
                "same_output": kept == expected,
                "ray_version": ray.__version__,
            }
            pool.close()
        finally:
            if started_ray:
                ray.shutdown()

    n = len(segments)
    local_per_shard = result["local"]["seconds"] / n
    print(f"{'path':<10}{'start-up s':>12}{'s / shard':>12}{'overhead ms':>13}{'ratio':>8}{'same output':>13}")
    for name in ("local", "servers", "ray"):
        r = result[name]
        r["seconds_per_shard"] = r["seconds"] / n
        r["overhead_ms"] = (r["seconds_per_shard"] - local_per_shard) * 1000
        r["ratio"] = r["seconds_per_shard"] / local_per_shard
        print(
            f"{name:<10}{r['startup_s']:>12.2f}{r['seconds_per_shard']:>12.4f}{r['overhead_ms']:>13.1f}"
            f"{r['ratio']:>8.2f}{r.get('same_output', '')!s:>13}"
        )
    result["ratio"] = result["ray"]["ratio"]  # the path this benchmark was written for: ray / local per shard
    print(
        f"ratio (ray / local, per shard): {result['ray']['ratio']:.2f}x; servers / local: "
        f"{result['servers']['ratio']:.2f}x"
    )
    write_json(args.out, result)


if __name__ == "__main__":
    main()
