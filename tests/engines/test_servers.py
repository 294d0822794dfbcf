"""`runtime.cluster: servers`: a model stage's work on two OpenAI-compatible servers on 127.0.0.1.

The servers are tests/engines/test_openai_engine.py's fake vLLM: log-probabilities from the tiny model itself, generated
text that shows the seed and prompt length it was sent, so a chunk sent to the wrong place, twice or not at all
changes the output. `local` is today's path: the same openai engine on one server (its base_url).
"""

from __future__ import annotations

import dataclasses
import json
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from humpback.engines.factory import engine_settings, make_engine
from humpback.engines.servers import ServedModelError, ServerPool, serve_command, served_name
from humpback.params import load_params
from stages import score as score_stage
from tests.conftest import RUNTIME, candidate_pairs, score_args
from tests.engines.test_openai_engine import PARAMS, FakeVLLM

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-servers-test-4f1d2c9e8b7a"  # what `vllm serve --api-key` would be given; must appear in no output


class Served(FakeVLLM):
    """The fake vLLM with a served-model list, `--api-key` checking, and a kill switch: after `die_after`
    completions it drops the connection of every later request and closes its socket (a node lost mid-stage)."""

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") == f"Bearer {KEY}":
            return True
        self._send(401, {"error": {"message": "Unauthorized", "type": "Unauthorized", "param": None, "code": 401}})
        return False

    def do_GET(self):
        if self._authorized():
            self._send(
                200,
                {
                    "object": "list",
                    "data": [
                        {
                            "id": name,
                            "object": "model",
                            "created": 0,
                            "owned_by": "vllm",
                            "root": name,
                            "parent": None,
                            "max_model_len": 2048,
                            "permission": [],
                        }
                        for name in self.server.served
                    ],
                },
            )

    def do_POST(self):
        if not self._authorized():
            return
        server = self.server
        with server.lock:
            server.posts += 1
            dying = server.die_after is not None and server.posts > server.die_after
        if dying:
            if not server.dead.is_set():
                server.dead.set()
                threading.Thread(target=lambda: (server.shutdown(), server.server_close()), daemon=True).start()
            self.close_connection = True  # no answer: the client sees the connection dropped
            return
        super().do_POST()


@pytest.fixture()
def start_server(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    started = []

    def score(ids: list[int]) -> torch.Tensor:
        with torch.no_grad():
            return torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)

    def start(served: list[str], die_after: int | None = None) -> ThreadingHTTPServer:
        server = ThreadingHTTPServer(("127.0.0.1", 0), Served)
        server.tokenizer, server.score, server.served = tokenizer, score, served
        server.lock, server.requests, server.failures = threading.Lock(), [], []
        server.mode, server.accepts_token_ids = "vllm", True
        server.posts, server.die_after, server.dead = 0, die_after, threading.Event()
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
        return server

    yield start
    for server in started:
        if not server.dead.is_set():
            server.shutdown()
            server.server_close()


def url(server) -> str:
    return f"http://127.0.0.1:{server.server_port}/v1"


def score_params(folder: Path, **runtime) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["curate"].update(engine="openai", method="pmi")
    params["runtime"].update(score_shard_size=4, concurrency=2, **runtime)
    path = folder / f"params-{len(list(folder.glob('params-*')))}.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def run_score(folder: Path, model: Path, params: Path, out: str) -> int:
    return score_stage.main(score_args(folder, model, params, out=out, metrics=f"{out}.metrics.json"))


@pytest.fixture()
def stage_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the resume scratch (.humpback/scratch) lands here
    monkeypatch.setenv("VLLM_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)  # `local`'s one-server engine reads the OpenAI variable
    monkeypatch.setenv("DVC_STAGE", "score@1")
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in candidate_pairs(10)))
    return tmp_path


def test_score_on_two_servers_equals_local_byte_for_byte_even_when_one_dies(
    stage_dir, tiny_model_dir, start_server, capsys, caplog
):
    name = served_name(tiny_model_dir)
    a, b = start_server([name]), start_server([name])
    assert run_score(stage_dir, tiny_model_dir, score_params(stage_dir, curate_base_url=url(a)), "local.jsonl") == 0
    a.posts = 0

    servers = {"score@1": [url(a), url(b)], "score@2": ["http://127.0.0.1:9/v1"]}
    params = score_params(stage_dir, cluster="servers", servers=servers)
    assert run_score(stage_dir, tiny_model_dir, params, "two.jsonl") == 0
    assert a.posts > 0 and b.posts > 0  # both received work
    local = (stage_dir / "local.jsonl").read_bytes()
    assert (stage_dir / "two.jsonl").read_bytes() == local

    # Server b dies after a few completions, in the middle of a shard: its chunks go to a; nothing is lost,
    # repeated or misplaced.
    c = start_server([name], die_after=3)
    params = score_params(stage_dir, cluster="servers", servers={"score@1": [url(a), url(c)]})
    assert run_score(stage_dir, tiny_model_dir, params, "killed.jsonl") == 0
    assert c.dead.is_set()
    assert (stage_dir / "killed.jsonl").read_bytes() == local
    assert f"server {url(c)} lost" in caplog.text

    # The key reached the servers (they refuse requests without it) and nothing the run wrote holds it.
    written = [p for p in stage_dir.rglob("*") if p.is_file()]
    assert written and not [p for p in written if KEY.encode() in p.read_bytes()]
    captured = capsys.readouterr()
    assert KEY not in captured.out + captured.err + caplog.text


def test_a_server_serving_another_model_is_refused_naming_it_and_both_models(
    stage_dir, tiny_model_dir, start_server, capsys
):
    """score@2 needs M1; a server still holding M0 (the stale server of a second iteration) stops the stage."""
    name = served_name(tiny_model_dir)
    stale = "humpback-0123456789abcdef"
    good, bad = start_server([name]), start_server([stale])
    params = score_params(stage_dir, cluster="servers", servers={"score@1": [url(good), url(bad)]})
    assert run_score(stage_dir, tiny_model_dir, params, "out.jsonl") == 1
    error = capsys.readouterr().err
    assert url(bad) in error and stale in error and name in error and str(tiny_model_dir) in error
    assert good.posts == 0 and bad.posts == 0  # refused before any work
    assert not (stage_dir / "out.jsonl").exists()


def test_generation_is_spread_in_order_with_each_prompt_s_seed(tiny_model_dir, start_server, monkeypatch):
    """Generated text carries the seed and prompt length each server was sent: two servers (one of them lost
    after one request) return exactly one server's answers, in input order."""
    monkeypatch.setenv("VLLM_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    name = served_name(tiny_model_dir)
    one, two, dying = start_server([name]), start_server([name]), start_server([name], die_after=1)
    runtime = dataclasses.replace(RUNTIME, concurrency=2)
    prompts = [f"Prompt number {i} " * (1 + i % 4) for i in range(9)]
    seeds = [1000 + 7 * i for i in range(9)]
    single = make_engine(tiny_model_dir, engine_settings(PARAMS, dataclasses.replace(runtime, base_url=url(one))))
    expected = single.generate(prompts, 8, seeds)
    assert len(set(expected)) == len(prompts)
    for urls in ([url(one), url(two)], [url(two), url(dying)]):
        pool = ServerPool(tiny_model_dir, PARAMS, runtime, urls)
        assert pool.generate(prompts, 8, seeds) == expected
        assert pool.generate([], 8, []) == []
    assert dying.dead.is_set() and pool.live() == [url(two)]
    with pytest.raises(ServedModelError, match=r"127\.0\.0\.1:9/v1 did not answer /v1/models"):
        ServerPool(tiny_model_dir, PARAMS, runtime, [url(one), "http://127.0.0.1:9/v1"])
    monkeypatch.setenv("VLLM_API_KEY", "not-the-key")
    with pytest.raises(ServedModelError, match=r"refused /v1/models \(HTTP 401\).*\$VLLM_API_KEY"):
        ServerPool(tiny_model_dir, PARAMS, runtime, [url(one)])


def test_make_engine_picks_the_stage_instance_s_servers(tiny_model_dir, start_server, monkeypatch):
    monkeypatch.setenv("VLLM_API_KEY", KEY)
    name = served_name(tiny_model_dir)
    server = start_server([name])
    runtime = dataclasses.replace(
        RUNTIME, cluster="servers", servers={"respond@m2": [url(server)]}, base_url="http://127.0.0.1:9/v1"
    )
    monkeypatch.setenv("DVC_STAGE", "respond@m2")
    assert isinstance(make_engine(tiny_model_dir, engine_settings(PARAMS, runtime)), ServerPool)
    monkeypatch.setenv("DVC_STAGE", "../dvc.yaml:respond@m2")  # dvc run from a subfolder names the file too
    assert isinstance(make_engine(tiny_model_dir, engine_settings(PARAMS, runtime)), ServerPool)
    monkeypatch.setenv("DVC_STAGE", "respond@m1")  # not listed: its base_url, as with `local`
    named = engine_settings(dataclasses.replace(PARAMS, api_model="x"), runtime)
    assert not isinstance(make_engine(tiny_model_dir, named), ServerPool)
    monkeypatch.setenv("DVC_STAGE", "respond@m2")
    with pytest.raises(ValueError, match="servers run the openai engine"):
        make_engine(tiny_model_dir, engine_settings(dataclasses.replace(PARAMS, engine="transformers"), runtime))


def test_served_names_follow_the_model_content_and_the_serve_lines_use_them(tiny_model_dir, tmp_path):
    """An adapter is served on its base as a LoRA module named from both; another adapter on the same base (m0
    and m1) gets another name, so a server left on M0 cannot answer for M1."""
    name = served_name(tiny_model_dir)
    assert serve_command(tiny_model_dir) == f"vllm serve {tiny_model_dir} --served-model-name {name} --port 8000"
    adapters = []
    for weights in (b"m0", b"m1"):
        folder = tmp_path / weights.decode()
        folder.mkdir()
        (folder / "adapter_config.json").write_text(
            json.dumps({"base_model_name_or_path": str(tiny_model_dir), "r": 64})
        )
        (folder / "adapter_model.safetensors").write_bytes(weights)
        adapters.append(folder)
    m0, m1 = (served_name(a) for a in adapters)
    assert len({name, m0, m1}) == 3
    assert serve_command(adapters[1], port=8001) == (
        f"vllm serve {tiny_model_dir} --served-model-name {name} --enable-lora --max-lora-rank 64 "
        f"--lora-modules {m1}={adapters[1]} --port 8001"
    )


def test_runtime_cluster_keys_parse_and_are_checked(tmp_path):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert raw["runtime"]["cluster"] == "local" and raw["runtime"]["servers"] == {}  # the default run: no servers
    raw["runtime"].update(cluster="servers", servers={"score@1": ["http://a:8000/v1", "http://b:8000/v1"]})
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert load_params(path).runtime.servers == {"score@1": ["http://a:8000/v1", "http://b:8000/v1"]}
    raw["runtime"]["servers"] = {"score@1": "http://a:8000/v1"}
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match=r"runtime\.servers\.score@1' must be a list"):
        load_params(path)
