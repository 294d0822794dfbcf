"""The causal-LM training loss, computed only where there is a label, never holding float32 logits for the
whole vocabulary × sequence.

The stock loss (`model(labels=...)`) projects every position onto the vocabulary (49,152 columns for SmolLM2),
prompt and padding included, and upcasts those logits to float32 before the cross-entropy: at 4 × 512 tokens
that is 4 × 512 × 49,152 float32 values, as much again for their softmax and gradient, and the head's matmul
over positions whose output is thrown away. Here:

- `logits_mask` marks the positions whose next token is labelled; the model's own forward computes logits only
  there (`logits_to_keep` as a boolean mask, transformers 5), so prompt and padding positions never reach the
  head. Going through the model's forward keeps whatever wraps it working (DDP, FSDP, accelerate).
- `ChunkedCrossEntropy` takes those logits in the model's compute dtype (bfloat16 under mixed precision) and
  upcasts one chunk of rows at a time; it computes the gradient of its logits in the same pass (softmax minus
  one-hot, already divided by the token count), in the logits' dtype, so neither the float32 logits nor their
  log-softmax are kept for backward. Float32 logits are not copied: each chunk's log-softmax is written into
  the gradient's own rows and turned into the gradient in place, and backward hands that buffer on as it is
  (the stock loss copies, exps and multiplies the whole vocabulary × rows a few more times).
- Where the head is a plain float32 linear (or, under bf16 autocast, a frozen one held in bf16: a LoRA base)
  and the run is not sharded (FSDP, ZeRO-3 gather the head's weight only inside the model's forward), the
  trainer goes one step further: under `deferred_head` the model's
  forward hands back the hidden states of the labelled rows, and `head_cross_entropy` (`LinearCrossEntropy`)
  projects them onto the vocabulary one chunk at a time, turning each chunk into its gradient and projecting
  it back before the next: only one chunk of vocabulary-wide floats ever exists.

The value is the stock one: the sum of token cross-entropies divided by `num_items_in_batch` (the labelled
tokens of the whole optimizer step, as the Trainer counts them), so gradient accumulation weights every token
alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from humpback.training.examples import IGNORE_INDEX

# Rows of float32 logits upcast at once: 2**24 elements (4 bytes each) whatever the vocabulary.
CHUNK_ELEMENTS = 1 << 24


def logits_mask(labels: torch.Tensor) -> torch.Tensor:
    """(batch, seq) bool: True at position t when token t+1 is labelled (the last position predicts nothing)."""
    return F.pad(labels[:, 1:] != IGNORE_INDEX, (0, 1), value=False)


def labelled_targets(labels: torch.Tensor) -> torch.Tensor:
    """The labelled next tokens, in the row-major order of `logits_mask`'s True positions."""
    shifted = labels[:, 1:]
    return shifted[shifted != IGNORE_INDEX]


def _cross_entropy_rows_(
    logits: torch.Tensor, targets: torch.Tensor, out: torch.Tensor, gradient: bool
) -> torch.Tensor:
    """The summed cross-entropy of `logits`' rows against `targets`. `out` (float32, the rows' shape; it may be
    `logits` itself) receives their log-softmax and, if `gradient`, becomes in place the sum's gradient with
    respect to the logits: d/dlogits of -log_softmax[target] = softmax - onehot(target)."""
    target = targets[:, None]
    torch.ops.aten._log_softmax.out(logits.float(), -1, False, out=out)  # .float(): no copy if float32
    total = -out.gather(1, target).sum()
    if gradient:
        out.exp_().scatter_add_(1, target, torch.full_like(out[:, :1], -1.0))
    return total


def _is_one(scale: float | torch.Tensor) -> bool:
    return isinstance(scale, float) and scale == 1.0


def _times_grad_output(grad: torch.Tensor | None, grad_output: torch.Tensor) -> torch.Tensor | None:
    # The loss is what `backward()` is called on, so grad_output is 1: a multiply over the whole saved gradient
    # is skipped (asked on the CPU only, where it costs no device sync). A loss scaled after this one gets a new
    # tensor, so that a second backward through a retained graph starts from the same saved gradient.
    if grad is None or (grad_output.device.type == "cpu" and float(grad_output) == 1.0):
        return grad
    return grad * grad_output.to(grad.dtype)


class ChunkedCrossEntropy(torch.autograd.Function):
    """sum over rows of cross_entropy(logits[i], targets[i]) × scale, with its gradient computed chunk by chunk
    in the forward pass and kept in the logits' dtype."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, scale: float | torch.Tensor) -> torch.Tensor:
        rows = max(1, CHUNK_ELEMENTS // max(1, logits.shape[-1]))
        total = torch.zeros((), dtype=torch.float32, device=logits.device)
        grad = torch.empty_like(logits) if logits.requires_grad else None
        in_place = grad is not None and logits.dtype == torch.float32
        for start in range(0, logits.shape[0], rows):
            chunk = logits[start : start + rows]
            # Float32 logits: the log-softmax is written straight into the gradient's rows (no copy of the chunk).
            out = grad[start : start + rows] if in_place else torch.empty_like(chunk, dtype=torch.float32)
            total += _cross_entropy_rows_(chunk, targets[start : start + rows], out, gradient=grad is not None)
            if grad is None:
                continue
            if not _is_one(scale):
                out.mul_(scale)
            if not in_place:
                grad[start : start + rows] = out
        ctx.save_for_backward(grad if grad is not None else logits.new_empty(0))
        return total * scale

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (grad,) = ctx.saved_tensors
        return _times_grad_output(grad, grad_output), None, None


class LinearCrossEntropy(torch.autograd.Function):
    """sum over rows of cross_entropy(hidden[i] @ weightᵀ, targets[i]) × scale: the output head and the loss in
    one pass, chunk by chunk. Each chunk's logits go into one reused buffer, become their gradient in place,
    and are projected back onto the hidden size (and onto the head's weight, if it trains) before the next
    chunk: the logits of the whole micro-batch never exist, only one chunk's, and only the hidden-size
    gradient is kept for backward. The same matmuls as the head's forward and backward, in the same order of
    summation per row; what goes is the allocation (and page faults) of two vocabulary-wide arrays per
    micro-batch and two passes over them.

    `hidden` and `weight` share a dtype, the one the head's matmuls run in. Below float32 (a bf16 head under
    autocast) the logits come out of the matmul in that dtype, are upcast into a reused float32 buffer for the
    log-softmax, and their gradient goes back down to that dtype for the backward matmul: what autocast does
    around a bf16 head, less the copies. A head that trains takes this path in float32 only."""

    @staticmethod
    def forward(
        ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, scale: float | torch.Tensor
    ) -> torch.Tensor:
        rows = max(1, CHUNK_ELEMENTS // max(1, weight.shape[0]))
        gradient = hidden.requires_grad or weight.requires_grad
        low = weight.dtype != torch.float32
        if low and weight.requires_grad:
            raise ValueError(f"a trainable head in {weight.dtype}: its gradient would be summed in that dtype")
        grad_hidden = torch.empty_like(hidden) if hidden.requires_grad else None
        grad_weight = torch.zeros_like(weight) if weight.requires_grad else None
        buffer = hidden.new_empty(min(rows, hidden.shape[0]), weight.shape[0])
        upcast = torch.empty_like(buffer, dtype=torch.float32) if low else buffer
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], rows):
            chunk = hidden[start : start + rows]
            logits = torch.mm(chunk, weight.t(), out=buffer[: chunk.shape[0]])
            out = upcast[: chunk.shape[0]]
            if low:
                out.copy_(logits)
            total += _cross_entropy_rows_(out, targets[start : start + rows], out, gradient)
            if low and gradient:
                logits.copy_(out)  # the logits' gradient, in the head's dtype
            if grad_hidden is not None:
                torch.mm(logits, weight, out=grad_hidden[start : start + rows])
            if grad_weight is not None:
                grad_weight.addmm_(logits.t(), chunk)
        for grad in (grad_hidden, grad_weight):  # the scale on the hidden-size results, not the logits' rows
            if grad is not None and not _is_one(scale):
                grad.mul_(scale)
        empty = hidden.new_empty(0)
        ctx.save_for_backward(
            grad_hidden if grad_hidden is not None else empty, grad_weight if grad_weight is not None else empty
        )
        return total * scale

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        grad_hidden, grad_weight = (g if needed else None for g, needed in zip(ctx.saved_tensors, ctx.needs_input_grad))
        return _times_grad_output(grad_hidden, grad_output), _times_grad_output(grad_weight, grad_output), None, None


def _scale(num_items_in_batch: torch.Tensor | int | None, targets: torch.Tensor) -> float | torch.Tensor:
    """1 / the labelled tokens the loss is divided by (default: this micro-batch's own)."""
    if num_items_in_batch is None:
        num_items_in_batch = targets.numel()
    if torch.is_tensor(num_items_in_batch):  # a tensor stays one: reading it would sync a GPU every micro-batch
        return 1.0 / num_items_in_batch.clamp(min=1).to(targets.device, torch.float32)
    return 1.0 / max(1, num_items_in_batch)


def _labelled_rows(rows: torch.Tensor, labels: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """`rows` (one per labelled token, or every position's (batch, seq, width) from a model that ignored the
    mask: the labelled ones are picked) and their targets, checked to match."""
    if rows.dim() == 3:
        rows = rows[logits_mask(labels)]
    targets = labelled_targets(labels).to(rows.device)
    if rows.dim() != 2 or rows.shape[0] != targets.shape[0]:
        raise ValueError(f"{what} {tuple(rows.shape)} for {targets.shape[0]} labelled tokens")
    return rows, targets


def labelled_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch: torch.Tensor | int | None = None
) -> torch.Tensor:
    """Mean next-token cross-entropy over labelled positions: the sum over this micro-batch divided by
    `num_items_in_batch` (default: this micro-batch's own labelled count).

    `logits`: (n_labelled, vocab) from a forward with `logits_to_keep=logits_mask(labels)`, or the full
    (batch, seq, vocab) of a model that ignored the mask (then the labelled rows are picked here).
    """
    logits, targets = _labelled_rows(logits, labels, "logits")
    with torch.autocast(logits.device.type, enabled=False):  # the chunks are upcast explicitly
        return ChunkedCrossEntropy.apply(logits, targets, _scale(num_items_in_batch, targets))


def head_cross_entropy(
    hidden: torch.Tensor, head: nn.Linear, labels: torch.Tensor, num_items_in_batch: torch.Tensor | int | None = None
) -> torch.Tensor:
    """`labelled_cross_entropy(head(hidden), ...)` with the head computed inside the loss (`LinearCrossEntropy`):
    `hidden` (n_labelled, hidden size) is what the model passed its head under `deferred_head` (or every
    position's, (batch, seq, hidden size), from a model that ignored the mask: the labelled rows are picked).
    Under autocast the head's matmuls run in the autocast dtype, as the head's own forward would."""
    hidden, targets = _labelled_rows(hidden, labels, "hidden states")
    device = hidden.device.type
    weight = head.weight
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
        hidden, weight = hidden.to(dtype), weight.to(dtype)
    with torch.autocast(device, enabled=False):
        return LinearCrossEntropy.apply(hidden, weight, targets, _scale(num_items_in_batch, targets))


def can_defer(head: nn.Module) -> bool:
    """Whether `head` is a plain linear without bias or hooks, so `head_cross_entropy` computes exactly what it
    would: float32 without autocast (trainable or not), or under autocast a frozen head already held in the
    autocast dtype (a LoRA base in bf16). (A LoRA-adapted head, a quantised one, a float32 head under autocast
    or a hooked one keep their own forward.)"""
    if not (
        type(head) is nn.Linear
        and head.bias is None
        and "forward" not in vars(head)
        and not head._forward_hooks
        and not head._forward_pre_hooks
    ):
        return False
    device = head.weight.device.type
    if torch.is_autocast_enabled(device):
        return head.weight.dtype == torch.get_autocast_dtype(device) and not head.weight.requires_grad
    return head.weight.dtype == torch.float32


@contextlib.contextmanager
def deferred_head(head: nn.Linear) -> Iterator[None]:
    """Within the block, `head` returns its input: a model's forward then yields, as its logits, the hidden
    states of the rows it would have projected, for `head_cross_entropy`. Restored on exit."""
    head.forward = lambda hidden: hidden  # an instance attribute: nothing in the state dict changes
    try:
        yield
    finally:
        del head.forward
