"""Faster CPU inference for the in-process engine: prepacked oneDNN linears and a plain-matmul decode attention.

Both replace a stock transformers path that is slow on CPU for the shapes generation and scoring use (the
measured gains, dated, with the machine: docs/benchmarks.md "What bounds them"):

- **Linears.** `nn.Linear` hands its weight to oneDNN in plain row-major layout, and oneDNN reorders it into its
  blocked layout on every call. `torch.ops.mkldnn._reorder_linear_weight` does that once, and
  `_linear_pointwise` runs on the packed weight (the pair torch.compile's CPU freezing pass uses). Outputs are
  bit-identical in bf16, and a decode step's linears run faster in bf16 and fp32 alike.
- **Decode attention.** For a one-token query, SDPA dispatches to CPU flash attention, which is slow for one row.
  Two small matmuls over the key/value heads, with the query heads of a group stacked as rows (no `repeat_kv`
  copy), take a fraction of its time. Prompts (more than one query token) still go to SDPA, whose causal kernel is the
  fastest there.

`use_cpu_kernels(model)` applies both to a loaded model that will only run inference. The packed weights are
opaque oneDNN tensors: the model can no longer be saved, moved, copied or trained.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

ATTENTION = "humpback_cpu"


def decode_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Attention for transformers' interface: SDPA for prompts, two grouped matmuls for a one-token query.

    query (batch, heads, q, dim); key/value (batch, kv_heads, k, dim); the mask is SDPA's (boolean, True =
    attend, broadcast over heads) or None (attend to every cached key). Returns (batch, q, heads, dim)."""
    batch, heads, q_len, dim = query.shape
    if q_len > 1:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    kv_heads, k_len = key.shape[1], key.shape[2]
    group = heads // kv_heads  # query heads h = g * group + j share key/value head g
    scale = dim**-0.5 if scaling is None else scaling
    scores = torch.matmul(query.reshape(batch, kv_heads, group, dim), key.transpose(-1, -2)).float() * scale
    if attention_mask is not None:
        # (batch, 1, 1, k) -> broadcast over (batch, kv_heads, group, k)
        scores = scores.masked_fill(~attention_mask[:, :, -1, -k_len:].unsqueeze(2), float("-inf"))
    probs = torch.softmax(scores, dim=-1).to(value.dtype)
    out = torch.matmul(probs, value).reshape(batch, heads, 1, dim)
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(ATTENTION, decode_attention)
AttentionMaskInterface.register(ATTENTION, sdpa_mask)


class PackedLinear(nn.Module):
    """A frozen `nn.Linear` whose weight oneDNN packed once, at load."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        # A plain attribute, not a parameter: the opaque tensor has no storage to save or move.
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach())
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, packed=oneDNN"


def packing_works(dtype: torch.dtype) -> bool:
    """Whether this torch build and CPU pack a linear and reproduce `F.linear` with it."""
    if not torch.backends.mkldnn.is_available():
        return False
    if dtype == torch.bfloat16 and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return False
    try:
        generator = torch.Generator().manual_seed(0)
        linear = nn.Linear(64, 96).to(dtype)
        x = torch.randn(5, 3, 64, generator=generator).to(dtype)
        expected = nn.functional.linear(x, linear.weight, linear.bias).float()
        got = PackedLinear(linear)(x).float()
    except (RuntimeError, AttributeError):
        return False
    tolerance = 1e-4 if dtype == torch.float32 else 2e-2
    return got.shape == expected.shape and bool(torch.allclose(got, expected, atol=tolerance, rtol=tolerance))


def pack_linears(model: nn.Module) -> int:
    """Replace every `nn.Linear` of an inference model by a PackedLinear; returns how many."""
    targets = [(name, module) for name, module in model.named_modules() if type(module) is nn.Linear]
    for name, linear in targets:
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attr, PackedLinear(linear))
    return len(targets)


def use_cpu_kernels(model: nn.Module) -> list[str]:
    """Switch a CPU inference model to the decode attention and, where they work, packed linears.

    Returns what was applied, for the log."""
    applied = []
    if hasattr(model, "set_attn_implementation") and model.config._attn_implementation == "sdpa":
        model.set_attn_implementation(ATTENTION)
        applied.append("decode attention")
    dtype = next(model.parameters()).dtype
    if dtype in (torch.float32, torch.bfloat16) and packing_works(dtype):
        applied.append(f"{pack_linears(model)} packed linears")
    return applied
