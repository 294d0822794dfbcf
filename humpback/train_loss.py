"""The causal-LM training loss, computed only where there is a label, never holding float32 logits for the
whole vocabulary × sequence.

The stock loss (`model(labels=...)`) projects every position onto the vocabulary (49,152 columns for SmolLM2),
prompt and padding included, and upcasts those logits to float32 before the cross-entropy: at 4 × 512 tokens
that is 400 MB of logits, as much again for their softmax and gradient, and the head's matmul over positions
whose output is thrown away. Here:

- `logits_mask` marks the positions whose next token is labelled; the model's own forward computes logits only
  there (`logits_to_keep` as a boolean mask, transformers 5), so prompt and padding positions never reach the
  head. Going through the model's forward keeps whatever wraps it working (DDP, FSDP, accelerate).
- `ChunkedCrossEntropy` takes those logits in the model's compute dtype (bfloat16 under mixed precision) and
  upcasts one chunk of rows at a time; it computes the gradient of its logits in the same pass (softmax minus
  one-hot, already divided by the token count), in the logits' dtype, so neither the float32 logits nor their
  log-softmax are kept for backward. Float32 logits are not copied: each chunk's log-softmax is written into
  the gradient's own rows and turned into the gradient in place, and backward hands that buffer on as it is
  (the stock loss copies, exps and multiplies the whole vocabulary × rows a few more times).

The value is the stock one: the sum of token cross-entropies divided by `num_items_in_batch` (the labelled
tokens of the whole optimizer step, as the Trainer counts them), so gradient accumulation weights every token
alike.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from humpback.sft_data import IGNORE_INDEX

# Rows of float32 logits upcast at once: 2**24 elements (64 MB) whatever the vocabulary.
CHUNK_ELEMENTS = 1 << 24


def logits_mask(labels: torch.Tensor) -> torch.Tensor:
    """(batch, seq) bool: True at position t when token t+1 is labelled (the last position predicts nothing)."""
    return F.pad(labels[:, 1:] != IGNORE_INDEX, (0, 1), value=False)


def labelled_targets(labels: torch.Tensor) -> torch.Tensor:
    """The labelled next tokens, in the row-major order of `logits_mask`'s True positions."""
    shifted = labels[:, 1:]
    return shifted[shifted != IGNORE_INDEX]


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
            chunk = logits[start:start + rows]
            target = targets[start:start + rows, None]
            # Float32 logits: the log-softmax is written straight into the gradient's rows (no copy of the
            # chunk), then exp'd in place: d/dlogits of -log_softmax[target] = softmax - onehot(target).
            out = grad[start:start + rows] if in_place else torch.empty_like(chunk, dtype=torch.float32)
            torch.ops.aten._log_softmax.out(chunk.float(), -1, False, out=out)  # .float(): no copy if float32
            total -= out.gather(1, target).sum()
            if grad is None:
                continue
            out.exp_().scatter_add_(1, target, torch.full_like(out[:, :1], -1.0))
            if not (isinstance(scale, float) and scale == 1.0):
                out.mul_(scale)
            if not in_place:
                grad[start:start + rows] = out
        ctx.save_for_backward(grad if grad is not None else logits.new_empty(0))
        return total * scale

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (grad,) = ctx.saved_tensors
        # The loss is what `backward()` is called on, so grad_output is 1: a multiply over the whole vocabulary
        # × rows saved (asked on the CPU only, where it costs no device sync). A loss scaled after this one
        # gets a new tensor, so that a second backward through a retained graph starts from the same `grad`.
        if grad_output.device.type == "cpu" and float(grad_output) == 1.0:
            return grad, None, None
        return grad * grad_output.to(grad.dtype), None, None


def labelled_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch: torch.Tensor | int | None = None
) -> torch.Tensor:
    """Mean next-token cross-entropy over labelled positions: the sum over this micro-batch divided by
    `num_items_in_batch` (default: this micro-batch's own labelled count).

    `logits`: (n_labelled, vocab) from a forward with `logits_to_keep=logits_mask(labels)`, or the full
    (batch, seq, vocab) of a model that ignored the mask (then the labelled rows are picked here).
    """
    if logits.dim() == 3:
        logits = logits[logits_mask(labels)]
    targets = labelled_targets(labels).to(logits.device)
    if logits.shape[0] != targets.shape[0]:
        raise ValueError(f"{logits.shape[0]} rows of logits for {targets.shape[0]} labelled tokens")
    if num_items_in_batch is None:
        num_items_in_batch = targets.numel()
    if torch.is_tensor(num_items_in_batch):  # a tensor stays one: reading it would sync a GPU every micro-batch
        scale = 1.0 / num_items_in_batch.clamp(min=1).to(logits.device, torch.float32)
    else:
        scale = 1.0 / max(1, num_items_in_batch)
    with torch.autocast(logits.device.type, enabled=False):  # the chunks are upcast explicitly
        return ChunkedCrossEntropy.apply(logits, targets, scale)
