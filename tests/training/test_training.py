"""Training data (masking, templates, truncation), the plan and schedule, and training on the tiny model."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, TrainerCallback

from humpback.engines.models import adapter_base, load_model
from humpback.params import Params, ParamsError, parse_params
from humpback.prompts import (
    S_A,
    S_W,
    backward_example,
    backward_instruction,
    format_example,
    system_for_training,
)
from humpback.training.examples import (
    IGNORE_INDEX,
    PadCollator,
    backward_examples,
    build_dataset,
    forward_examples,
    tokenize_example,
)
from humpback.training.lora_forward import _plain, fused_lora_forward, lora_layers
from humpback.training.loss import (
    can_defer,
    deferred_head,
    head_cross_entropy,
    labelled_cross_entropy,
    logits_mask,
)
from humpback.training.plan import TrainPlan, linear_to_final, paper_batch_size, paper_steps, steps_for_epochs
from humpback.training.role import TrainJob, train_role
from humpback.training.trainer import EpochSeededLengthSampler, load_trainable, train
from stages import train as train_stage
from tests.conftest import seed_pairs

REPO = Path(__file__).resolve().parents[2]

SEED_PAIRS = seed_pairs(12)
AUGMENTED_PAIRS = [
    {"id": f"a{i}", "instruction": f"Explain module {i}.", "output": f"Module {i} provides tools. " * (1 + i % 2)}
    for i in range(4)
]


@pytest.fixture(autouse=True)
def one_thread():
    """The tiny model gains nothing from threads, and on a busy 2-core machine OpenMP threads waiting for
    each other made these tests 3x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_params(save_steps: int = 2, **train) -> Params:
    """The repo's params.yaml with small, fast training settings (override any train key)."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["train"].update(
        {
            "max_seq_len": 96,
            "epochs": 1.0,
            "batch_size": 4,
            "micro_batch_size": 2,
            "learning_rate": 1e-2,
            "final_learning_rate": 1e-3,
            "dtype": "float32",
            **train,
        }
    )
    raw["runtime"]["save_steps"] = save_steps
    raw["train"]["lora"]["dropout"] = 0.1  # the resume test relies on dropout's RNG state being restored
    return parse_params(raw)


def prompt_ids(tokenizer, prompt: str) -> list[int]:
    """What generation feeds the model: the formatted prefix, no extra special tokens."""
    return tokenizer(prompt, add_special_tokens=False)["input_ids"]


# ------------------------------------------------------------------------------------------ examples


def test_backward_pairs_are_output_to_instruction(tiny_tokenizer):
    (ex,) = backward_examples(tiny_tokenizer, SEED_PAIRS[:1])
    expected = format_example(
        tiny_tokenizer, user=backward_instruction(SEED_PAIRS[0]["output"]), response=SEED_PAIRS[0]["instruction"]
    )
    assert ex.formatted == expected and ex.origin == "seed"
    assert SEED_PAIRS[0]["output"] in ex.formatted.prompt
    assert ex.formatted.completion.startswith(SEED_PAIRS[0]["instruction"])
    assert S_A not in ex.formatted.prompt


def test_backward_outputs_are_cut_to_a_token_budget_not_dropped(tiny_tokenizer):
    long_pair = {"instruction": "Explain it.", "output": "word " * 600}
    uncut, _ = build_dataset(tiny_tokenizer, backward_examples(tiny_tokenizer, [long_pair]), 256, "truncate")
    assert len(uncut) == 0  # without the cut, the prompt alone exceeds max_seq_len and the pair is lost
    (ex,) = backward_examples(tiny_tokenizer, [long_pair], max_output_tokens=100)
    dataset, report = build_dataset(tiny_tokenizer, [ex], 256, "truncate")
    assert len(dataset) == 1 and report.truncated == 0
    assert ex.formatted.prompt.count("word") == 100 and ex.formatted.completion.startswith("Explain it.")
    assert ex.formatted.prompt == backward_example(tiny_tokenizer, long_pair["output"], 100).prompt
    short = backward_examples(tiny_tokenizer, SEED_PAIRS[:1], max_output_tokens=100)
    assert short == backward_examples(tiny_tokenizer, SEED_PAIRS[:1])  # short outputs are untouched


@pytest.mark.parametrize("tagging", [True, False])
def test_forward_pairs_carry_their_origin_tag(tiny_tokenizer, tagging):
    examples = forward_examples(tiny_tokenizer, SEED_PAIRS[:2], AUGMENTED_PAIRS[:3], tagging)
    assert [e.origin for e in examples] == ["seed"] * 2 + ["augmented"] * 3
    assert (S_A in examples[0].formatted.prompt) == tagging
    assert (S_W in examples[-1].formatted.prompt) == tagging
    assert S_W not in examples[0].formatted.prompt and S_A not in examples[-1].formatted.prompt


def test_labels_mask_exactly_the_prompt(tiny_tokenizer):
    (ex,) = forward_examples(tiny_tokenizer, SEED_PAIRS[:1], [], tagging=True)
    item, status = tokenize_example(tiny_tokenizer, ex.formatted, max_seq_len=1000, overlong="truncate")
    p = prompt_ids(tiny_tokenizer, ex.formatted.prompt)
    c = tiny_tokenizer(ex.formatted.completion, add_special_tokens=False)["input_ids"]
    assert status == "ok"
    assert item["input_ids"] == p + c
    assert item["labels"] == [IGNORE_INDEX] * len(p) + c
    assert IGNORE_INDEX not in c and c[-1] == tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")


@pytest.mark.parametrize("role", ["backward", "m0", "m1", "m2"])
def test_training_prompt_ids_are_the_generation_prefix(tiny_tokenizer, role):
    """For every role, the ids trained on up to the response are exactly what generation will be given."""
    tok = tiny_tokenizer
    if role == "backward":
        # cut to 6 tokens, as augment cuts web segments (stages/augment.py builds its prompt the same way)
        examples = backward_examples(tok, SEED_PAIRS[:3], max_output_tokens=6)
        prefixes = [backward_example(tok, p["output"], 6).prompt for p in SEED_PAIRS[:3]]
    else:
        augmented = AUGMENTED_PAIRS[:2] if role in ("m1", "m2") else []
        examples = forward_examples(tok, SEED_PAIRS[:3], augmented, tagging=True)
        prefixes = [
            format_example(tok, user=p["instruction"], system=system_for_training(o, True)).prompt
            for o, pairs in (("seed", SEED_PAIRS[:3]), ("augmented", augmented))
            for p in pairs
        ]
    dataset, _ = build_dataset(tok, examples, max_seq_len=1000, overlong="truncate")
    for item, prefix in zip(dataset.items, prefixes, strict=True):
        n = item["labels"].count(IGNORE_INDEX)
        assert item["input_ids"][:n] == prompt_ids(tok, prefix)


def test_overlong_examples_are_truncated_or_dropped_and_counted(tiny_tokenizer):
    tok = tiny_tokenizer
    long_pair = {"instruction": "Tell me everything.", "output": "word " * 300}
    huge_prompt = {"instruction": "question " * 300, "output": "ok"}
    examples = forward_examples(tok, SEED_PAIRS[:2] + [long_pair, huge_prompt], [], tagging=True)
    prefix_len = len(prompt_ids(tok, examples[2].formatted.prompt))

    dataset, report = build_dataset(tok, examples, max_seq_len=prefix_len + 10, overlong="truncate")
    assert report.truncated >= 1 and report.dropped == {"overlong": 0, "prompt_too_long": 1}
    assert report.kept["seed"] == 3 and report.read["seed"] == 4
    cut = dataset.items[2]
    assert len(cut["input_ids"]) == prefix_len + 10 and cut["labels"].count(IGNORE_INDEX) == prefix_len

    _, report = build_dataset(tok, examples, max_seq_len=prefix_len + 10, overlong="drop")
    assert report.truncated == 0 and report.kept["seed"] == 4 - sum(report.dropped.values())
    assert report.dropped["overlong"] >= 1 and report.dropped["prompt_too_long"] == 1


def test_collator_pads_to_longest_with_masked_labels():
    batch = PadCollator(pad_token_id=0)(
        [
            {"input_ids": [5, 6, 7], "labels": [IGNORE_INDEX, 6, 7]},
            {"input_ids": [8], "labels": [8]},
        ]
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 6, 7], [8, IGNORE_INDEX, IGNORE_INDEX]]


# ------------------------------------------------------------------------------------ plan, schedule


def test_paper_steps_and_batch_rule():
    assert [paper_steps(n) for n in (10, 100, 799, 800, 1700, 3200, 6000, 30000, 10**6)] == [
        30,
        30,
        30,
        300,
        600,
        500,
        500,
        1200,
        1600,
    ]
    assert (paper_batch_size(2999), paper_batch_size(3000)) == (8, 32)
    tp = make_params(epochs=0, batch_size=0, micro_batch_size=4).train
    assert TrainPlan.from_params(tp, 1600) == TrainPlan(steps=600, batch_size=8, micro_batch_size=4, grad_accum=2)
    assert TrainPlan.from_params(tp, 3200).grad_accum == 8
    with pytest.raises(ParamsError, match="multiple"):
        TrainPlan.from_params(make_params(batch_size=6, micro_batch_size=4).train, 100)


def test_epochs_give_whole_passes_rounded_up():
    # 159 seed pairs at batch 8: 19 full steps and a short one make a pass; 194 (seed + 35 selected): 25.
    assert [steps_for_epochs(1.0, n, 8) for n in (159, 160, 161, 194)] == [20, 20, 21, 25]
    assert steps_for_epochs(1.5, 159, 8) == 30 and steps_for_epochs(0.1, 300, 10) == 3
    assert steps_for_epochs(0.01, 16, 8) == 1  # never zero steps
    tp = make_params(epochs=2.0, batch_size=8, micro_batch_size=4).train
    assert TrainPlan.from_params(tp, 159) == TrainPlan(steps=40, batch_size=8, micro_batch_size=4, grad_accum=2)
    with pytest.raises(ParamsError, match="epochs"):
        TrainPlan.from_params(make_params(epochs=-1.0).train, 100)


def test_schedule_decays_linearly_to_the_final_rate():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-5)
    sched = linear_to_final(opt, 1e-5, 9e-6, warmup_steps=2, total_steps=10)
    lrs = []
    for _ in range(10):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[:3] == pytest.approx([0.0, 5e-6, 1e-5])
    assert all(a >= b for a, b in itertools.pairwise(lrs[2:]))
    assert sched.get_last_lr()[0] == pytest.approx(9e-6)


def hand_written_factor(step: int, floor: float, warmup: int, total: int) -> float:
    """The schedule as first written here, before transformers' polynomial schedule replaced it."""
    if step < warmup:
        return step / warmup
    return 1.0 - (1.0 - floor) * min(1.0, (step - warmup) / max(1, total - warmup))


# (lr, final, warmup, total): no warmup, and a warmup shorter than, as long as and longer than the run
SCHEDULES = [
    (1e-5, 9e-6, 0, 20),
    (1e-3, 1e-4, 0, 7),
    (1e-3, 1e-4, 3, 10),
    (1e-3, 1e-4, 5, 5),
    (1e-3, 1e-4, 8, 5),
    (2e-4, 2e-5, 2, 37),
    (1e-2, 1e-3, 0, 12),
]


# final = lr, a constant rate after warmup, too (transformers' polynomial schedule refuses it)
@pytest.mark.parametrize(("lr", "final", "warmup", "total"), [*SCHEDULES, (1e-3, 1e-3, 2, 6)])
def test_schedule_equals_the_hand_written_linear_decay(lr, final, warmup, total):
    """Every step's rate, the one after the last update and past it included (a resumed run may ask)."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = linear_to_final(opt, lr, final, warmup_steps=warmup, total_steps=total)
    for step in range(total + 3):
        assert sched.get_last_lr()[0] == pytest.approx(
            lr * hand_written_factor(step, final / lr, warmup, total), rel=1e-12, abs=1e-18
        ), step
        opt.step()
        sched.step()
    with pytest.raises(ParamsError, match="final_learning_rate"):
        linear_to_final(opt, 1e-4, 1e-3, warmup_steps=0, total_steps=5)


@pytest.mark.parametrize(("lr", "final", "warmup", "total"), SCHEDULES)
def test_schedule_is_transformers_polynomial_one_bit_for_bit(lr, final, warmup, total):
    """Our factor (DeepSpeed's optimizer has no `defaults` for transformers' schedule to read) gives the very
    rates transformers' polynomial schedule gave before, so a single-process run trains exactly as it did."""
    from transformers import get_polynomial_decay_schedule_with_warmup

    ours_opt, theirs_opt = (torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr) for _ in range(2))
    ours = linear_to_final(ours_opt, lr, final, warmup_steps=warmup, total_steps=total)
    theirs = get_polynomial_decay_schedule_with_warmup(theirs_opt, warmup, max(total, warmup + 1), lr_end=final)
    for _ in range(total + 3):
        assert ours.get_last_lr() == theirs.get_last_lr()
        for x in (ours_opt, theirs_opt, ours, theirs):
            x.step()


def padding_fraction(order: list[int], lengths: list[int], micro: int) -> float:
    batches = [order[k : k + micro] for k in range(0, len(order), micro)]
    real = sum(lengths[i] for b in batches for i in b)
    return 1 - real / sum(max(lengths[i] for i in b) * len(b) for b in batches)


def test_sampler_groups_lengths_and_reshuffles_per_epoch():
    lengths = [(i * 37) % 467 + 45 for i in range(159)]  # 45..511, as the seed pairs' token counts spread
    sampler = EpochSeededLengthSampler(lengths, micro_batch_size=4, seed=0)
    first = list(sampler)
    assert sorted(first) == list(range(159)) and first == list(sampler)  # a permutation, reproducible
    assert list(EpochSeededLengthSampler(lengths, 4, seed=1)) != first
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first and sorted(second) == list(range(159))
    assert padding_fraction(first, lengths, 4) < 0.10 and padding_fraction(second, lengths, 4) < 0.10
    random_order = torch.randperm(159, generator=torch.Generator().manual_seed(0)).tolist()
    assert padding_fraction(random_order, lengths, 4) > 0.25  # what a plain random sampler pads
    # micro-batches are shuffled, not run from short to long: their lengths do not rise through the epoch
    widths = [max(lengths[i] for i in first[k : k + 4]) for k in range(0, 156, 4)]
    assert widths != sorted(widths) and widths != sorted(widths, reverse=True)


# ------------------------------------------------------------------------------------------ training


def tiny_dataset(tokenizer, params: Params):
    examples = forward_examples(tokenizer, SEED_PAIRS, AUGMENTED_PAIRS, params.train.tagging)
    return build_dataset(tokenizer, examples, params.train.max_seq_len, params.train.overlong)[0]


def run_training(model_dir, tokenizer, params: Params, scratch: Path, callbacks=()):
    tp = params.train
    model = load_trainable(model_dir, tp, seed=params.seeds.training)
    dataset = tiny_dataset(tokenizer, params)
    plan = TrainPlan.from_params(tp, len(dataset))
    return train(
        model,
        dataset,
        tokenizer.pad_token_id,
        tp,
        plan,
        params.seeds.training,
        scratch,
        callbacks,
        save_steps=params.runtime.save_steps,
    )


def test_lora_changes_adapter_weights_only(tiny_model_dir, tiny_tokenizer, tmp_path):
    original = load_file(tiny_model_dir / "model.safetensors")
    result = run_training(tiny_model_dir, tiny_tokenizer, make_params(method="lora"), tmp_path / "scratch")
    changed_lora = 0
    for name, param in result.model.named_parameters():
        if "lora_" in name:
            changed_lora += int(param.detach().abs().sum() > 0 and "lora_B" in name)
            continue
        key = name.removeprefix("base_model.model.").replace(".base_layer", "")
        assert torch.equal(param.detach(), original[key]), f"base weight {key} changed"
    assert changed_lora > 0  # lora_B starts at zero: non-zero means the adapter learned
    assert result.steps == 4 and result.final_learning_rate == pytest.approx(1e-3)
    assert result.trained_tokens > 0 and result.tokens > result.trained_tokens
    # one pass (the default): every example's every token, once
    assert result.epochs == 1.0 and result.tokens == sum(tiny_dataset(tiny_tokenizer, make_params()).lengths)
    assert result.padded_tokens >= result.tokens and result.precision == "fp32"


def test_lora_layers_adapts_the_top_layers_and_no_gradient_runs_below(tiny_model_dir):
    """train.lora.layers = 1 of the tiny model's 2: adapters only in the top layer, and the bottom layer's
    output needs no gradient (autograd stops there: no backward matmuls, no saved activations below)."""
    tp = make_params(method="lora").train
    tp = dataclasses.replace(tp, lora=dataclasses.replace(tp.lora, layers=1))
    model = load_trainable(tiny_model_dir, tp, seed=0)
    adapted = {name.split(".layers.")[1].split(".")[0] for name, _ in model.named_parameters() if "lora_" in name}
    assert adapted == {"1"}
    out = model(input_ids=torch.tensor([[1, 2, 3, 4]]), output_hidden_states=True)
    below, top = out.hidden_states[1], out.hidden_states[2]  # after layer 0, after layer 1
    assert not below.requires_grad and top.requires_grad
    everywhere = load_trainable(tiny_model_dir, make_params(method="lora").train, seed=0)  # 15 >= 2: all
    layers = {n.split(".layers.")[1].split(".")[0] for n, _ in everywhere.named_parameters() if "lora_" in n}
    assert layers == {"0", "1"}


def test_first_logged_loss_is_the_stock_mean_over_the_step(tiny_model_dir, tiny_tokenizer, tmp_path, monkeypatch):
    """The Trainer wiring (labelled-token count over the step, gradient accumulation over 2 micro-batches of
    different widths) gives the stock loss: the mean cross-entropy over the step's labelled tokens. At step 1
    LoRA's B is zero, so the model is the base. The float32 head is computed inside the loss, every micro-batch."""
    params = make_params()
    calls = []
    monkeypatch.setattr(
        "humpback.training.trainer.head_cross_entropy", lambda *args: calls.append(1) or head_cross_entropy(*args)
    )
    result = run_training(tiny_model_dir, tiny_tokenizer, params, tmp_path / "s")
    assert len(calls) == 2 * result.steps  # 2 micro-batches per step
    dataset = tiny_dataset(tiny_tokenizer, params)
    first_step = list(EpochSeededLengthSampler(dataset.lengths, 2, params.seeds.training))[:4]
    batch = PadCollator(tiny_tokenizer.pad_token_id)([dataset[i] for i in first_step])
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        stock = base(**batch).loss.item()
    assert result.losses[0][1] == pytest.approx(stock, rel=1e-4)


def test_bf16_training_keeps_a_bf16_base_and_trains_a_float32_adapter(
    tiny_model_dir, tiny_tokenizer, tmp_path, monkeypatch
):
    """...and computes the frozen bf16 head inside the loss, every micro-batch, as in float32."""
    original = load_file(tiny_model_dir / "model.safetensors")
    calls = []
    monkeypatch.setattr(
        "humpback.training.trainer.head_cross_entropy", lambda *args: calls.append(1) or head_cross_entropy(*args)
    )
    result = run_training(tiny_model_dir, tiny_tokenizer, make_params(dtype="bfloat16"), tmp_path / "s")
    assert len(calls) == 2 * result.steps  # 2 micro-batches per step
    monkeypatch.undo()
    fp32 = run_training(tiny_model_dir, tiny_tokenizer, make_params(), tmp_path / "f")
    assert result.precision == "bf16"
    for name, param in result.model.named_parameters():
        if "lora_" in name:
            assert param.dtype == torch.float32 and param.requires_grad
            continue
        key = name.removeprefix("base_model.model.").replace(".base_layer", "")
        assert param.dtype == torch.bfloat16 and torch.equal(param.detach(), original[key].to(torch.bfloat16))
    assert all(torch.isfinite(torch.tensor(loss)) for _, loss in result.losses)
    assert result.losses[0][1] == pytest.approx(fp32.losses[0][1], rel=0.02)  # same step, bf16 rounding


# ------------------------------------------------------------------------------------------ the loss


def tiny_batch(tokenizer, rows: slice = slice(None)) -> dict[str, torch.Tensor]:
    """Prompt-masked, right-padded rows of different lengths (seed and augmented pairs)."""
    examples = forward_examples(tokenizer, SEED_PAIRS[:3], AUGMENTED_PAIRS[:2], tagging=True)
    dataset, _ = build_dataset(tokenizer, examples, 96, "truncate")
    return PadCollator(tokenizer.pad_token_id)(dataset.items[rows])


def gradients(model) -> dict[str, torch.Tensor]:
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    return grads


def ours(model, batch, num_items=None) -> torch.Tensor:
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs, logits_to_keep=logits_mask(batch["labels"])).logits
    return labelled_cross_entropy(logits, batch["labels"], num_items)


def ours_with_the_head_in_the_loss(model, batch, num_items=None) -> torch.Tensor:
    """The trainer's path for a plain float32 head: the forward hands back hidden rows, the loss projects them."""
    head = model.get_output_embeddings()
    assert can_defer(head)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with deferred_head(head):
        hidden = model(**inputs, logits_to_keep=logits_mask(batch["labels"])).logits
    assert "forward" not in vars(head)  # restored
    assert hidden.shape == (int((batch["labels"][:, 1:] != IGNORE_INDEX).sum()), model.config.hidden_size)
    return head_cross_entropy(hidden, head, batch["labels"], num_items)


@pytest.mark.parametrize("loss_path", [ours, ours_with_the_head_in_the_loss])
def test_labelled_loss_and_gradients_equal_the_stock_loss(tiny_model_dir, tiny_tokenizer, monkeypatch, loss_path):
    """Every parameter trains here, the tied head/embedding included, so the head's weight gradient is checked
    too (the loss path adds it to the embedding lookup's)."""
    ours = loss_path
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    vocab = model.config.vocab_size
    monkeypatch.setattr("humpback.training.loss.CHUNK_ELEMENTS", 7 * vocab)  # several chunks, the last one short
    batch = tiny_batch(tiny_tokenizer)
    n_labelled = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    assert n_labelled > 7 * 3 and n_labelled < batch["labels"][:, 1:].numel()  # prompts and padding masked

    stock = model(**batch).loss
    stock.backward()
    expected = gradients(model)
    loss = ours(model, batch)
    loss.backward()
    got = gradients(model)
    assert loss.item() == pytest.approx(stock.item(), rel=1e-6)
    assert got.keys() == expected.keys()
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-4, atol=1e-7, msg=name)

    # a loss scaled after ours (grad_output != 1), backward twice through one retained graph
    loss = ours(model, batch)
    (3 * loss).backward(retain_graph=True)
    (3 * loss).backward()
    for name, grad in gradients(model).items():
        torch.testing.assert_close(grad, 6 * expected[name], rtol=1e-4, atol=6e-6, msg=name)

    # gradient accumulation: two micro-batches, each padded to its own width, normalized by the step's count
    parts = [tiny_batch(tiny_tokenizer, slice(0, 2)), tiny_batch(tiny_tokenizer, slice(2, None))]
    total = sum(ours(model, part, torch.tensor(n_labelled)) for part in parts)
    total.backward()
    assert total.item() == pytest.approx(stock.item(), rel=1e-6)
    for name, grad in gradients(model).items():
        torch.testing.assert_close(grad, expected[name], rtol=1e-4, atol=1e-7, msg=name)


def test_fused_lora_forward_equals_peft_and_steps_aside_when_it_would_not(tiny_model_dir, tiny_tokenizer):
    tp = make_params(method="lora").train
    tp = dataclasses.replace(tp, lora=dataclasses.replace(tp.lora, dropout=0.0, layers=0))
    model = load_trainable(tiny_model_dir, tp, seed=0)
    layers = lora_layers(model)
    with torch.no_grad():  # lora_B starts at zero: give every adapter something to add
        for layer in layers:
            for b in layer.lora_B.values():
                b.weight.normal_(std=0.1)
    batch = tiny_batch(tiny_tokenizer)

    def loss_and_gradients():
        loss = ours(model, batch)
        loss.backward()
        return loss.detach(), gradients(model)

    expected_loss, expected = loss_and_gradients()
    x = torch.zeros(1, model.config.hidden_size)
    with fused_lora_forward(model) as patched:
        assert patched == len(layers) > 0 and all(_plain(layer, x) for layer in layers)  # the fused path runs
        loss, got = loss_and_gradients()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not any(_plain(layer, x) for layer in layers)  # autocast: peft's own forward
    assert not any("forward" in layer.__dict__ for layer in layers)  # restored
    torch.testing.assert_close(loss, expected_loss, rtol=1e-6, atol=0)
    assert got.keys() == expected.keys() and any("lora_A" in name for name in got)
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-4, atol=1e-7, msg=name)

    dropped = load_trainable(tiny_model_dir, make_params(method="lora").train, seed=0)  # LoRA dropout 0.1
    assert not any(_plain(layer, x) for layer in lora_layers(dropped))


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got.float() - expected.float()).norm() / expected.float().norm())


def test_fused_lora_forward_under_bf16_autocast_equals_peft_there(tiny_model_dir, tiny_tokenizer):
    """The trainer's bf16 path (a LoRA base held in bf16, float32 adapters, bf16 autocast) takes the fused
    forward, and it gives peft's loss and gradients under the same autocast up to bf16 rounding (peft rounds
    after each adapter matmul, the fused sum rounds once)."""
    tp = make_params(method="lora", dtype="bfloat16").train
    tp = dataclasses.replace(tp, lora=dataclasses.replace(tp.lora, dropout=0.0, layers=0))
    model = load_trainable(tiny_model_dir, tp, seed=0)
    layers = lora_layers(model)
    with torch.no_grad():
        for layer in layers:
            for b in layer.lora_B.values():
                b.weight.normal_(std=0.1)
    batch = tiny_batch(tiny_tokenizer)

    def loss_and_gradients():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = ours(model, batch)
        loss.backward()
        return loss.detach().float(), gradients(model)

    expected_loss, expected = loss_and_gradients()
    x = torch.zeros(1, model.config.hidden_size, dtype=torch.bfloat16)
    with fused_lora_forward(model):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert all(_plain(layer, x) for layer in layers)
            assert not any(_plain(layer, x.float()) for layer in layers)  # an input autocast would cast
        assert not any(_plain(layer, x) for layer in layers)  # no autocast: peft's adapter runs in float32
        loss, got = loss_and_gradients()
    assert loss.item() == pytest.approx(expected_loss.item(), rel=1e-2)
    assert got.keys() == expected.keys() and all(g.dtype == torch.float32 for g in got.values())
    errors = {name: relative_error(got[name], grad) for name, grad in expected.items()}
    assert max(errors.values()) < 0.05, errors


def test_bf16_head_in_the_loss_equals_the_chunked_loss_on_its_own_logits(tiny_model_dir, tiny_tokenizer, monkeypatch):
    """A frozen bf16 head under bf16 autocast (a LoRA base in bf16) is computed inside the loss: bf16 logits,
    a float32 log-softmax, the gradient back in bf16 — what the head's own forward and the chunked loss give,
    here split into several chunks."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).requires_grad_(False)
    head, batch = model.get_output_embeddings(), tiny_batch(tiny_tokenizer)
    with torch.no_grad():
        states = model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    rows = states[logits_mask(batch["labels"])]
    monkeypatch.setattr("humpback.training.loss.CHUNK_ELEMENTS", 5 * model.config.vocab_size)  # 5 rows a chunk
    results = []
    for loss_of in (
        lambda h: head_cross_entropy(h, head, batch["labels"], 7),
        lambda h: labelled_cross_entropy(head(h), batch["labels"], 7),
    ):
        hidden = rows.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert can_defer(head)
            loss = loss_of(hidden)
        loss.backward()
        results.append((loss.item(), hidden.grad))
    (ours_loss, ours_grad), (stock_loss, stock_grad) = results
    assert rows.shape[0] > 5 and ours_grad.dtype == torch.bfloat16
    assert ours_loss == pytest.approx(stock_loss, rel=1e-5)
    assert relative_error(ours_grad, stock_grad) < 1e-2
    head.weight.requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not can_defer(head)  # a trainable bf16 head: its gradient would be summed in bf16


def test_head_in_the_loss_steps_aside_where_it_would_not_compute_the_same(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    head = model.get_output_embeddings()
    assert can_defer(head)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not can_defer(head)  # bf16 logits: the chunked loss on the head's own output
    handle = head.register_forward_hook(lambda module, args, out: out)
    assert not can_defer(head)  # somebody reads the head's output
    handle.remove()
    assert not can_defer(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).lm_head)
    # a micro-batch without one labelled token: zero loss, zero gradients, no error
    hidden = torch.zeros(0, model.config.hidden_size, requires_grad=True)
    loss = head_cross_entropy(hidden, head, torch.full((1, 4), IGNORE_INDEX))
    loss.backward()
    assert loss.item() == 0 and head.weight.grad is not None and not head.weight.grad.any()


def test_loss_picks_labelled_rows_from_full_logits(tiny_model_dir, tiny_tokenizer):
    """A model whose forward ignores a boolean logits_to_keep returns every position: same loss, from logits or
    from hidden states (the head in the loss)."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    batch = tiny_batch(tiny_tokenizer)
    with torch.no_grad():
        full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        assert labelled_cross_entropy(full, batch["labels"]).item() == pytest.approx(
            model(**batch).loss.item(), rel=1e-6
        )
        hidden = model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        assert head_cross_entropy(hidden, model.lm_head, batch["labels"]).item() == pytest.approx(
            model(**batch).loss.item(), rel=1e-6
        )
    with pytest.raises(ValueError, match="labelled tokens"):
        labelled_cross_entropy(full[:, :3].reshape(-1, full.shape[-1]), batch["labels"])


def test_no_float32_vocabulary_wide_tensor_is_kept_for_backward(tiny_model_dir, tiny_tokenizer):
    """Under bf16 autocast, what autograd keeps of vocabulary width is bf16 and has one row per labelled
    token; the stock loss keeps float32 rows for every position."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    vocab, hidden, batch = model.config.vocab_size, model.config.hidden_size, tiny_batch(tiny_tokenizer)
    n_labelled = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())

    def kept(run) -> list[tuple[torch.dtype, tuple[int, ...]]]:
        saved = []

        def pack(t):
            saved.append((t.dtype, tuple(t.shape)))
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", torch.bfloat16):
            run().backward()
        # of vocabulary width, the (tied) head weight aside
        return [(dtype, shape) for dtype, shape in saved if shape and shape[-1] == vocab and shape != (hidden, vocab)]

    wide = kept(lambda: ours(model, batch))
    assert wide and all(dtype == torch.bfloat16 and shape[0] == n_labelled for dtype, shape in wide)
    stock = kept(lambda: model(**batch).loss)
    assert any(
        dtype == torch.float32 and shape[:-1] in (batch["input_ids"].shape, (batch["input_ids"].numel(),))
        for dtype, shape in stock
    )


def test_full_finetuning_changes_weights_with_paper_dropout(tiny_model_dir, tiny_tokenizer, tmp_path):
    original = load_file(tiny_model_dir / "model.safetensors")
    result = run_training(tiny_model_dir, tiny_tokenizer, make_params(method="full", dropout=0.1), tmp_path / "s")
    assert result.model.config.attention_dropout == 0.1
    state = result.model.state_dict()
    changed = [k for k in original if not torch.equal(state[k], original[k])]
    assert "model.layers.0.self_attn.q_proj.weight" in changed and len(changed) > len(original) // 2


class Interrupt(Exception):
    pass


class InterruptAfterSave(TrainerCallback):
    """A kill right after the checkpoint at `step` was written."""

    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise Interrupt


def test_resume_equals_uninterrupted(tiny_model_dir, tiny_tokenizer, tmp_path, caplog):
    # 6 steps of 4 over 16 examples: the interruption falls mid-epoch, the run crosses an epoch boundary,
    # and LoRA dropout exercises the restored RNG state.
    params = make_params(epochs=1.5, save_steps=2)
    straight = run_training(tiny_model_dir, tiny_tokenizer, params, tmp_path / "straight")
    with pytest.raises(Interrupt):
        run_training(tiny_model_dir, tiny_tokenizer, params, tmp_path / "resumed", [InterruptAfterSave(2)])
    assert [p.name for p in (tmp_path / "resumed").iterdir()] == ["checkpoint-2"]
    (tmp_path / "resumed" / "checkpoint-4").mkdir()  # a kill during the next save: no trainer_state.json
    resumed = run_training(tiny_model_dir, tiny_tokenizer, params, tmp_path / "resumed")

    assert resumed.resumed_from_step == 2 and resumed.steps == straight.steps == 6
    assert "removing incomplete checkpoint" in caplog.text
    assert [p.name for p in (tmp_path / "resumed").iterdir()] == ["checkpoint-6"]  # save_total_limit=1
    assert [s for s, _ in resumed.losses] == [1, 2, 3, 4, 5, 6]
    for (_, a), (_, b) in zip(straight.losses, resumed.losses):
        assert a == pytest.approx(b, abs=1e-4)
    assert (resumed.tokens, resumed.trained_tokens) == (straight.tokens, straight.trained_tokens)
    sa, sb = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.allclose(sa[k], sb[k], atol=1e-5) for k in sa)


# ------------------------------------------------------------------------------------------ the stage


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def stage_paths(role: str) -> dict[str, str]:
    return {"out": f"models/{role}", "metrics": f"metrics/train/{role}.json", "live": f"metrics/train/live_{role}"}


def test_stage_writes_a_loadable_adapter_card_and_metrics(tiny_model_dir, tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)  # relative paths, as dvc runs it from the repo root
    shutil.copytree(tiny_model_dir, "models/base")
    seed = write_jsonl(tmp_path / "seed.jsonl", SEED_PAIRS)
    empty = write_jsonl(tmp_path / "selected.jsonl", [])
    summary = train_role(TrainJob("m1", "models/base", seed, empty, **stage_paths("m1")), make_params())

    assert "has no rows" in caplog.text
    assert adapter_base("models/m1") == "models/base"
    model, tokenizer = load_model("models/m1")  # the adapter, merged into the base it names
    assert tokenizer.chat_template
    base_q = load_file("models/base/model.safetensors")["model.layers.0.self_attn.q_proj.weight"]
    assert not torch.equal(model.model.layers[0].self_attn.q_proj.weight, base_q)
    card = json.loads(Path("models/m1/card.json").read_text())
    assert card["data"]["kept"] == {"seed": 12, "augmented": 0} and card["role"] == "m1"
    assert card["steps"] == 3 and card["final_loss"] == summary["final_loss"]  # 12 examples, batch 4, 1 pass
    assert summary["epochs"] == 1.0 and 0 <= summary["padding_fraction"] < 0.5
    assert card["params"]["train.method"] == "lora" and card["precision"] == "fp32"
    assert card["engine"] == {"kind": "single", "processes": 1}  # what trained, read from the trainer
    assert "train.backward_max_output_tokens" not in card["params"]
    assert json.loads(Path("metrics/train/m1.json").read_text()) == summary
    # The folder is a function of the weights: no timings in the card, peft's module set written sorted
    assert "seconds" in summary and "seconds" not in card and "seconds_per_step" not in card
    target_modules = json.loads(Path("models/m1/adapter_config.json").read_text())["target_modules"]
    assert target_modules == sorted(target_modules) and len(target_modules) > 1
    # DVCLive's per-step curves, written while training ran: one row per optimizer step
    loss = Path("metrics/train/live_m1/plots/metrics/loss.tsv").read_text().splitlines()
    assert loss[0].split("\t") == ["step", "loss"] and len(loss) == 1 + 3
    assert float(loss[-1].split("\t")[1]) == pytest.approx(summary["final_loss"], abs=1e-4)
    assert Path("metrics/train/live_m1/plots/metrics/learning_rate.tsv").is_file()
    assert not any(Path(".humpback/scratch/train").iterdir())  # scratch removed after success
    assert sorted(p.name for p in Path("models").iterdir()) == ["base", "m1"]  # no temp folder left


def test_stage_refuses_empty_data_and_wrong_inputs(tiny_model_dir, tmp_path, capsys):
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(dataclasses.asdict(make_params())))
    seed = write_jsonl(tmp_path / "seed.jsonl", [])
    common = [
        "--base",
        str(tiny_model_dir),
        "--seed-pairs",
        seed,
        "--out",
        str(tmp_path / "m0"),
        "--metrics",
        str(tmp_path / "m.json"),
        "--live",
        str(tmp_path / "live"),
        "--params",
        str(params_file),
    ]
    assert train_stage.main(["--role", "m0", *common]) == 1
    assert "no training examples" in capsys.readouterr().err
    assert train_stage.main(["--role", "m1", *common]) == 1
    assert "--augmented is required" in capsys.readouterr().err
    assert train_stage.main(["--role", "backward", "--augmented", seed, *common]) == 1
    assert "not used" in capsys.readouterr().err
    assert not (tmp_path / "m0").exists()


@pytest.mark.slow
def test_stage_runs_under_accelerate_launch_single_process(tiny_model_dir, tmp_path):
    """The train stage started by `accelerate launch` with the single-process CPU config writes its model."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["train"].update({"epochs": 0.34, "batch_size": 2, "micro_batch_size": 2, "max_seq_len": 128})
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    seed = write_jsonl(tmp_path / "seed.jsonl", SEED_PAIRS[:6])
    out = tmp_path / "m0"
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            "configs/accelerate/single_process.yaml",
            "-m",
            "stages.train",
            "--role",
            "m0",
            "--base",
            str(tiny_model_dir),
            "--seed-pairs",
            seed,
            "--out",
            str(out),
            "--metrics",
            str(tmp_path / "m0.json"),
            "--live",
            str(tmp_path / "live"),
            "--params",
            str(params_file),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (out / "adapter_config.json").is_file() and (out / "card.json").is_file()
    card = json.loads((out / "card.json").read_text())
    assert card["role"] == "m0" and card["steps"] == 2 and card["engine"] == {"kind": "single", "processes": 1}


# ------------------------------------------------------------------------------------- a seed per model


def params_with_seeds(**seeds) -> Params:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["seeds"].update(seeds)
    return parse_params(raw)


def test_each_role_has_its_own_training_seed_and_default_is_the_pipeline_seed():
    from humpback.params import ROLES
    from humpback.training.role import training_seed

    shipped = params_with_seeds(training=7)  # every role key at `default`: today's runs, seed for seed
    assert {role: training_seed(shipped.seeds, role) for role in ROLES} == dict.fromkeys(ROLES, 7)
    m2 = params_with_seeds(training=7, training_m2=3)
    assert {role: training_seed(m2.seeds, role) for role in ROLES} == {"backward": 7, "m0": 7, "m1": 7, "m2": 3}
    assert training_seed(params_with_seeds(training=7, training_m2=0).seeds, "m2") == 0  # 0 is a seed, not unset
    with pytest.raises(ParamsError, match="seeds.training_m1"):
        params_with_seeds(training_m1="random")


def test_a_roles_seed_key_is_a_dependency_of_its_train_stage_only():
    """`-S seeds.training_m2=0,1,2` reruns train@m2 and what follows it, never the stages before: dvc.yaml lists
    each role's key for that role's train stage alone, as the role's card and resume fingerprint record it."""
    from humpback.training.role import ROLE_KEYS

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    declared = {
        "backward": stages["train_backward"]["params"],
        **{
            role: [
                key.replace("${key}", role).replace("${item.mix}", item["mix"])
                for key in stages["train"]["do"]["params"]
            ]
            for role, item in stages["train"]["foreach"].items()
        },
    }
    assert set(declared) == set(ROLE_KEYS)
    for role, keys in declared.items():
        assert set(keys) == set(ROLE_KEYS[role]), role  # m0 declares no train.mix: a mix sweep never retrains it
        seeds = {key for key in keys if key.startswith("seeds.")}
        assert seeds == {key for key in ROLE_KEYS[role] if key.startswith("seeds.")}
        assert seeds == {"seeds.training", f"seeds.training_{role}"}


def test_train_role_trains_with_the_roles_own_seed(tiny_model_dir, tmp_path, monkeypatch):
    """The role's seed reaches the Trainer's arguments and the adapter's initialisation (training stops there);
    another role's key moves neither."""

    class Stop(Exception):
        pass

    seen = {}

    def arguments(tp, plan, seed, scratch, save_steps):
        seen["arguments"] = seed

    def load(base, tp, seed):
        seen["model"] = seed
        raise Stop

    monkeypatch.setattr("humpback.training.role.training_arguments", arguments)
    monkeypatch.setattr("humpback.training.role.load_trainable", load)
    seed = write_jsonl(tmp_path / "seed.jsonl", SEED_PAIRS[:4])
    params = params_with_seeds(training=7, training_m0=11)
    for role, expected in (("m0", 11), ("backward", 7)):
        with pytest.raises(Stop):
            job = TrainJob(role, str(tiny_model_dir), seed, None, str(tmp_path / role), str(tmp_path / "m.json"))
            train_role(job, params, scratch_root=tmp_path / "scratch")
        assert seen == {"arguments": expected, "model": expected}
