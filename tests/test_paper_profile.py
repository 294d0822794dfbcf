"""The paper profile through `dvc repro` on the CPU: every stage, the paper's settings, only the machine swapped.

A copy of the repository gets `configs/profiles/paper.yaml` (humpback.profiles, as `make profile PROFILE=paper`),
then exactly the overrides a CPU run needs: the tiny test model as `base.model`, the transformers engine instead of
vLLM, small fixtures in the real formats as `data.*.path` (oasst1 parquet, a WARC, alpaca_eval JSON carrying
text-davinci-003's outputs), some size limits (each with its reason in SIZE_LIMITS), and `runtime`. The judge is
OpenAI's API as the paper profile uses it (no server URL in params: alpaca_eval's annotator and its GPT-4), here a
fake OpenAI server on 127.0.0.1 reached through OPENAI_BASE_URL. The tests read what each stage actually used from
its metrics and cards, and what the judge received from the server's side.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pytest
import yaml

from humpback.profiles import apply, leaf_keys
from tests.conftest import build_tiny_model
from tests.evaluation.test_leaderboard import RankingServer
from tests.test_pipeline import ALL_STAGES, ROOT, _dvc, _ran, _run, copy_checkout
from tests.test_profiles import limit_keys

REAL = ROOT / "tests" / "fixtures" / "real_formats"

pytestmark = pytest.mark.slow

# The size limits overridden, and why; every other limit keeps the paper profile's value (the paper's, or no cap).
SIZE_LIMITS = {
    # 12 English rank-0 first turns in the oasst1 fixture: 20 held out would leave none to train on
    "data.seed.heldout": 3,
    # the WARC fixture's sections are paragraphs of 100 to 600 characters, under the paper's 600 (real pages)
    "data.web.min_chars": 100,
    # the tiny model's context is 2,048 tokens (the profile's 4,096 is Llama-2-7B's); shorter is CPU time only.
    # In tokens of its 2,048-id vocabulary (SCRIPTED_VOCAB), which splits the fixtures' texts 1.5x as finely
    "train.max_seq_len": 288,
    "train.backward_max_output_tokens": 192,
    # "no cap" generation from a random model writes up to the context: minutes of CPU per stage
    "augment.max_new_tokens": 12,
    "curate.max_new_tokens": 12,
    "respond.max_new_tokens": 12,
}
# data.*.path: every source the DAG reads, in the format the paper profile names for it
PATHS = {
    "data.seed.path": REAL / "oasst1.parquet",
    "data.web.path": REAL / "web.warc.gz",
    "data.eval.path": REAL / "alpaca_eval.json",
    "data.other.path": ROOT / "tests" / "fixtures" / "project_faqs",
}
# How the work runs (never what it computes: no stage depends on runtime.*). The judge's URL is not here: the
# profile judges through OpenAI's API (no server URL), whose address the OpenAI client reads from OPENAI_BASE_URL;
# runtime.evaluate_base_url would switch to a generic server's judge, which sends evaluate.api_model instead of the
# annotator's GPT-4 (and needs that tracked key set).
RUNTIME = {
    # a full finetune's checkpoint (weights + AdamW state) every 2 steps was most of each train stage's time
    "runtime.save_steps": 0,
}
# The keys the CPU run may change on top of the profile, as issue 28 lists them.
ALLOWED = {"base.model", "generation.engine", *PATHS, *SIZE_LIMITS, *RUNTIME}

# The scripted base writes "Score: 5." or "Score: 3." whatever it is shown (see build_scripted_model): a text per
# step, or one of a tuple's single-token texts.
SCRIPT = ("Score", ":", " ", ("5", "3"), ".")
# SmolLM2's first ids only: the 49,152-token output layer was most of each stage's compute (training, reading)
SCRIPTED_VOCAB = 2048


def build_scripted_model(out: Path) -> Path:
    """The tiny test model (tests/conftest.py), rewired to write `SCRIPT` then end, whatever the prompt.

    A random model never writes a text that passes augment's filters (a sentence that ends), and augment
    refuses an empty result; overriding augment.filters would change the method. So the tiny model gets a script:
    attention and MLP outputs zeroed, the hidden state is the last token's embedding, and an untied output layer
    maps each script token to the next. Every instruction is "Score: 5." or "Score: 3." (sampled, one seed per
    pair), which also is what the generated rubric parses: some pairs at 5, some at 3, around the paper's 4.5.
    Training at the paper's rate (1e-5, 30 steps) moves no logit far enough to change the script."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    build_tiny_model(out, vocab_size=SCRIPTED_VOCAB)
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = LlamaForCausalLM.from_pretrained(out, tie_word_embeddings=False)

    def tokens(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False)

    steps: list[list[int]] = []
    for step in SCRIPT:
        if isinstance(step, tuple):  # one of these, each a single token
            assert all(len(tokens(t)) == 1 for t in step), step
            steps.append([tokens(t)[0] for t in step])
        else:  # a text the tokenizer may split: one step per token
            steps.extend([t] for t in tokens(step))
    steps.append([tokenizer.eos_token_id])
    # each token is a state of the chain below: one that came twice would lead two places
    assert len({t for step in steps for t in step}) == sum(len(step) for step in steps), steps
    embed = torch.zeros_like(model.model.embed_tokens.weight)
    head = torch.zeros_like(model.lm_head.weight)
    embed[:, 0] = 1.0  # every token outside the script: state 0, which starts it
    head[steps[0], 0] = 20.0  # a one-hot state normalises to 8: logits of 160 leave the others no mass
    for i, (tokens, following) in enumerate(itertools.pairwise(steps), start=1):
        for t in tokens:
            embed[t] = 0.0
            embed[t, i] = 1.0
        head[following, i] = 20.0
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(embed)
        model.lm_head.weight.copy_(head)
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
    model.save_pretrained(out)
    return out


def _set(tree: dict, key: str, value) -> None:
    *parents, leaf = key.split(".")
    for part in parents:
        tree = tree[part]
    tree[leaf] = value


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The paper profile, the CPU overrides, `dvc repro` once with the fake judge; yields (repo, judge requests,
    {key: (profile value, value run)})."""
    work = tmp_path_factory.mktemp("paper")
    dest = copy_checkout(work / "repo")
    params = dest / "params.yaml"
    apply("paper", params)
    profiled = yaml.safe_load(params.read_text())
    raw = yaml.safe_load(params.read_text())
    _set(raw, "base.model", str(build_scripted_model(work / "scripted-base")))
    _set(raw, "generation.engine", "transformers")
    for key, path in PATHS.items():
        _set(raw, key, str(path))
    for key, value in {**SIZE_LIMITS, **RUNTIME}.items():
        _set(raw, key, value)
    params.write_text(yaml.safe_dump(raw))
    before, after = leaf_keys(profiled), leaf_keys(raw)
    changed = {k: (before[k], after[k]) for k in after if after[k] != before[k]}
    _run(["git", "init", "-q", "-b", "main"], dest)
    _run(["git", "add", "-A"], dest)
    _run(["git", "commit", "-qm", "paper profile on the CPU"], dest)
    server = RankingServer()
    try:
        log = _dvc("repro", cwd=dest, OPENAI_API_KEY="sk-fake", OPENAI_BASE_URL=server.url)
    finally:
        server.close()
    (work / "repro.log").write_text(log)
    yield dest, server.requests, changed, log


def test_the_cpu_run_changes_only_the_machine(run):
    """On top of the profile: the base, the engine, the sources' paths, size limits and runtime; nothing else."""
    _, _, changed, _ = run
    assert set(changed) == ALLOWED
    limits = limit_keys(yaml.safe_load((ROOT / "params.yaml").read_text()))
    assert set(SIZE_LIMITS) <= limits and all(k.startswith("runtime.") for k in RUNTIME)
    assert changed["generation.engine"] == ("vllm", "transformers")
    assert {k for k in changed if k.startswith("data.") and k.endswith(".path")} == set(PATHS)


def test_every_stage_runs_on_the_real_formats(run):
    repo, _, _, log = run
    assert _ran(log) == ALL_STAGES
    sources = {name: _metrics(repo, f"{name}.json") for name in ("prepare_seed", "prepare_web", "prepare_eval")}
    assert [sources[n]["source"] for n in sources] == ["oasst1", "warc", "alpaca-eval"]
    assert sources["prepare_seed"]["kept"] == 12  # the fixture's English rank-0 first turns, 3 of them held out
    eval_rows = [json.loads(line) for line in (repo / "data" / "eval.jsonl").read_text().splitlines()]
    assert {r["reference_generator"] for r in eval_rows} == {"text_davinci_003"}


def _metrics(repo: Path, name: str) -> dict:
    return json.loads((repo / "metrics" / name).read_text())


def test_training_follows_the_papers_table_and_batch_rule(run):
    """train.epochs 0 and train.batch_size 0: each model's steps come from the paper's steps-by-data-size table,
    its batch is 8 under 3,000 examples; the rate decays 1e-5 -> 9e-6; full finetuning."""
    from humpback.training.plan import paper_batch_size, paper_steps

    repo = run[0]
    for role in ("backward", "m0", "m1", "m2"):
        card = json.loads((repo / "models" / role / "card.json").read_text())
        n = card["examples"]
        assert card["method"] == "full"
        assert card["params"]["train.epochs"] == 0 and card["params"]["train.batch_size"] == 0
        assert card["plan"]["steps"] == card["steps"] == paper_steps(n) == 30, role  # the table's first row
        assert card["plan"]["batch_size"] == paper_batch_size(n) == 8, role
        assert card["plan"]["micro_batch_size"] * card["plan"]["grad_accum"] == 8
        assert _metrics(repo, f"train/{role}.json")["final_learning_rate"] == pytest.approx(9e-6), role
        assert card["params"]["train.learning_rate"] == pytest.approx(1e-5)
    assert paper_steps(3200) == 500 and paper_batch_size(3200) == 32  # the profile's 3,200 pairs, for contrast


def test_the_generated_rubric_keeps_pairs_at_4_5(run):
    """Each iteration's curator writes the rubric's reasoning and "Score: N"; the selection keeps the pairs at or
    above 4.5 (here the 5s, not the 3s), at no rank level and no cap, and M1/M2 train on the seed plus them."""
    repo = run[0]
    for iteration, curator, trained in ((1, "models/m0", "m1"), (2, "models/m1", "m2")):
        score = _metrics(repo, f"score/{iteration}.json")
        assert (score["method"], score["curator"], score["parse_failure_rate"]) == ("generate", curator, 0.0)
        select = _metrics(repo, f"select/{iteration}.json")
        assert (select["method"], select["threshold"], select["top_share"], select["cap"]) == ("generate", 4.5, 1.0, 0)
        histogram = select["histogram"]
        assert histogram["5"] > 0 and histogram["3"] > 0 and histogram["5"] + histogram["3"] == select["n"]
        assert select["selected"] == select["at_threshold"] == histogram["5"]
        kept = [
            json.loads(line)
            for line in (repo / "data" / "curated" / str(iteration) / "selected.jsonl").read_text().splitlines()
        ]
        assert len(kept) == histogram["5"] and all(r["score"] >= 4.5 for r in kept)
        card = json.loads((repo / "models" / trained / "card.json").read_text())
        assert card["examples_augmented"] == select["selected"] and card["params"]["train.tagging"] is True


def test_inference_uses_s_a_and_s_w(run):
    """respond.system_prompt S_a+S_w: every model answers under both tags (the stage's own log line: respond
    writes alpaca_eval's model_outputs, which have no place for it)."""
    log = run[3]
    for model in ("base", "m0", "m1", "m2"):
        assert f"respond: {model}: 6 answers (0 empty), system prompt S_a+S_w -> data/responses/{model}.json" in log


def test_the_judge_is_alpaca_eval_gpt4_against_text_davinci_003(run):
    """The server saw alpaca_eval_gpt4's prompt template filled with AlpacaEval's prompt, text-davinci-003's
    reference answer and the model's answer, sent to gpt-4 (the annotator's model) at temperature 0; the
    metrics name that judge and the reference, and hold alpaca_eval's leaderboard row."""
    from humpback.evaluation.judges import alpaca_eval_config

    repo, requests, _, _ = run
    assert requests and {r["model"] for r in requests} == {"gpt-4"}
    assert {r["temperature"] for r in requests} == {0} and {r["max_tokens"] for r in requests} == {100}
    template = Path(alpaca_eval_config("alpaca_eval_gpt4")["prompt_template"]).read_text()
    reference = {r["instruction"]: r for r in json.loads((REAL / "alpaca_eval.json").read_text())}
    answer = json.loads((repo / "data" / "responses" / "m2.json").read_text())[0]
    filled = (
        template.replace("{instruction}", answer["instruction"])
        .replace("{output_1}", reference[answer["instruction"]]["output"])
        .replace("{output_2}", answer["output"])
    )
    expected = [
        {"role": role, "content": text.strip()}
        for role, text in re.findall(r"<\|im_start\|>(\w+)\n(.*?)<\|im_end\|>", filled, re.DOTALL)
    ]
    sent = [[{"role": m["role"], "content": m["content"].strip()} for m in r["messages"]] for r in requests]
    assert len(expected) == 2 and expected in sent
    evaluate = _metrics(repo, "evaluate.json")
    assert evaluate["judge"]["model"] == "gpt-4" and evaluate["judge"]["kind"] == "openai"
    assert evaluate["judge"]["annotator"] == "alpaca_eval alpaca_eval_gpt4, both orders"
    board = evaluate["leaderboard"]
    assert (board["annotator"], board["reference"]) == ("alpaca_eval_gpt4", "text_davinci_003")
    assert {row["n_total"] for row in board["models"].values()} == {6}
    # one call per distinct comparison (alpaca_eval's cache answers a repeated one), every AlpacaEval prompt judged
    assert len({json.dumps(m) for m in sent}) == len(sent)
    assert {p for p in reference if any(f'"""{p}"""' in m[-1]["content"] for m in sent)} == set(reference)
