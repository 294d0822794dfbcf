"""peft's LoRA forward with the adapter's scale folded into one matmul, for training.

peft computes an adapted linear as `base(x) + lora_B(lora_A(x)) * scaling`: besides the rank-r matmuls, a
multiply and an add over the whole output (tokens × out features), and the multiply again in backward, for
every adapted module. `base(x).addmm_(lora_A(x), lora_Bᵀ, alpha=scaling)` gives the same sum with the scale
applied inside the matmul and the sum written into the base output's storage: on a CPU those passes cost
about as much memory traffic as the base matmul's output (docs/training.md has the measurements).

The fused path is taken only where it computes what peft would: one plain LoRA adapter (no DoRA or other
variant, no bias, no dropout), not merged or disabled, no extra forward arguments, and either every weight in
the input's dtype without autocast, or under autocast a base layer and input already in the autocast dtype
(a LoRA base held in bf16): peft's adapter matmuls then run in that dtype, so ours cast the adapter's
float32 weights to it, as autocast does (the sum is rounded once instead of after each matmul). Anything
else runs peft's own forward.

Under DeepSpeed ZeRO-3 the fused path reads the adapter's partitioned weights outside lora_A's and lora_B's own
forward; DeepSpeed gathers a parameter read that way during a forward (its `ZeROOrderedDict` registers it as an
external parameter of the running module), so the path holds there too: tests/training/test_multi_process.py trains
LoRA under ZeRO-3 in 2 processes with every parameter partitioned and compares it with one plain process.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn


def _fused_forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    if args or kwargs or not _plain(self, x):
        return type(self).forward(self, x, *args, **kwargs)
    (name,) = self.active_adapters
    # As a matrix of rows, so the sum lands in the base output's own storage (in place on a view would make
    # autograd copy it back in backward); the base linear's backward keeps its input, not its output.
    rows = x.reshape(-1, x.shape[-1])
    out = self.base_layer(rows)
    # .to: a no-op in float32; under autocast the float32 adapter in the compute dtype (its gradient in float32).
    down, up = self.lora_A[name].weight.to(rows.dtype), self.lora_B[name].weight.to(rows.dtype)
    out.addmm_(F.linear(rows, down), up.t(), alpha=self.scaling[name])
    return out.view(*x.shape[:-1], out.shape[-1])


def _plain(layer, x: torch.Tensor) -> bool:
    """Whether `layer` computes base(x) + B(A(x)) · scaling and nothing else, in x's dtype."""
    if layer.disable_adapters or layer.merged or len(layer.active_adapters) != 1:
        return False
    (name,) = layer.active_adapters
    if name not in layer.lora_A or name in getattr(layer, "lora_variant", {}):
        return False
    a, b, base = layer.lora_A[name], layer.lora_B[name], layer.base_layer
    if not (
        isinstance(layer.lora_dropout[name], nn.Identity)
        and type(a) is nn.Linear
        and type(b) is nn.Linear
        and a.bias is None
        and b.bias is None
        and type(base) is nn.Linear
        and not getattr(layer, "fan_in_fan_out", False)
    ):
        return False
    if a.weight.dtype != b.weight.dtype or not a.weight.is_floating_point():
        return False
    device = x.device.type
    if torch.is_autocast_enabled(device):
        return x.dtype == base.weight.dtype == torch.get_autocast_dtype(device)
    return x.dtype == a.weight.dtype == base.weight.dtype


def lora_layers(model: nn.Module) -> list[nn.Module]:
    from peft.tuners.lora.layer import Linear

    return [m for m in model.modules() if isinstance(m, Linear)]


@contextlib.contextmanager
def fused_lora_forward(model: nn.Module) -> Iterator[int]:
    """Within the block, every peft LoRA linear of `model` takes the fused path where it can; yields how many
    layers were patched (0 for a model without LoRA). The model's own forward is restored on exit."""
    layers = lora_layers(model) if hasattr(model, "peft_config") else []
    for layer in layers:
        layer.forward = types.MethodType(_fused_forward, layer)
    try:
        yield len(layers)
    finally:
        for layer in layers:
            layer.__dict__.pop("forward", None)
