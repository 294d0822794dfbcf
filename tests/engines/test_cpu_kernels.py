"""The CPU inference path: packed linears and the one-token attention reproduce stock transformers, and the
decode loop (row-by-row prefill with a shared prefix, static cache) gives the tokens `model.generate` gives."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM

from humpback.engines.cpu_kernels import PackedLinear, decode_attention, packing_works, use_cpu_kernels
from humpback.engines.decoding import MIN_SHARED_PREFIX, generate_batch, shared_prefix_length
from humpback.engines.tokens import encode_prompts, stop_token_ids
from humpback.prompts import format_example


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packed_linear_reproduces_linear(dtype):
    if not packing_works(dtype):
        pytest.skip(f"this torch build or CPU cannot pack {dtype} linears (the engine then keeps nn.Linear)")
    linear = nn.Linear(576, 192).to(dtype)
    x = torch.randn(3, 7, 576).to(dtype)
    tolerance = 1e-5 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(PackedLinear(linear)(x), linear(x), atol=tolerance, rtol=tolerance)


def sdpa_reference(query, key, value, allowed):
    """Stock SDPA over repeated key/value heads, with a boolean mask (True = attend)."""
    groups = query.shape[1] // key.shape[1]
    out = nn.functional.scaled_dot_product_attention(
        query, key.repeat_interleave(groups, 1), value.repeat_interleave(groups, 1), attn_mask=allowed
    )
    return out.transpose(1, 2)


def test_decode_attention_matches_sdpa_with_padding_and_grouped_heads():
    torch.manual_seed(0)
    batch, heads, kv_heads, keys, dim = 3, 6, 2, 11, 16
    query = torch.randn(batch, heads, 1, dim)
    key, value = torch.randn(batch, kv_heads, keys, dim), torch.randn(batch, kv_heads, keys, dim)
    allowed = torch.ones(batch, 1, 1, keys, dtype=torch.bool)
    allowed[1, ..., :4] = False  # left padding of row 1
    allowed[2, ..., 9:] = False  # static-cache slots not written yet
    module = nn.Module()
    module.num_key_value_groups = heads // kv_heads
    got, _ = decode_attention(module, query, key, value, allowed, scaling=dim**-0.5)
    torch.testing.assert_close(got, sdpa_reference(query, key, value, allowed), atol=1e-5, rtol=1e-5)
    no_mask, _ = decode_attention(module, query, key, value, None, scaling=dim**-0.5)
    torch.testing.assert_close(no_mask, sdpa_reference(query, key, value, None), atol=1e-5, rtol=1e-5)


def long_prefix_prompts(tokenizer) -> list[str]:
    """Prompts that share more than MIN_SHARED_PREFIX tokens and differ in length (padding in the batch)."""
    system = "You rewrite web text as questions. " * 4
    users = ["Hi.", "Tell me about Python decorators, " * 5, "Why is the sky blue?", "x " * 30]
    return [format_example(tokenizer, user=u, system=system).prompt for u in users]


def test_decode_loop_with_cpu_kernels_gives_the_tokens_of_stock_generate(tiny_model_dir, tiny_tokenizer):
    rows = encode_prompts(tiny_tokenizer, long_prefix_prompts(tiny_tokenizer))
    assert shared_prefix_length(rows) >= MIN_SHARED_PREFIX  # the row-by-row prefill reuses the prefix cache
    stops = stop_token_ids(tiny_tokenizer)
    pad = tiny_tokenizer.pad_token_id
    stock = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    expected = []
    with torch.inference_mode():
        for row in rows:
            out = stock.generate(
                torch.tensor([row]),
                attention_mask=torch.ones(1, len(row), dtype=torch.long),
                max_new_tokens=10,
                do_sample=False,
                eos_token_id=stops,
                pad_token_id=pad,
            )
            expected.append(out[0, len(row) :].tolist())
        fast = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
        assert "decode attention" in use_cpu_kernels(fast)
        kw = {"stop_ids": stops, "pad_id": pad, "temperature": 0.0, "top_p": 1.0}
        by_row = generate_batch(fast, rows, [0] * len(rows), 10, row_by_row=True, **kw)
        batched = generate_batch(fast, rows, [0] * len(rows), 10, row_by_row=False, **kw)
    assert by_row == batched == expected
