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
  one-hot), in the logits' dtype, so neither the float32 logits nor their log-softmax are kept for backward.

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
    """sum over rows of cross_entropy(logits[i], targets[i]), with its gradient computed chunk by chunk in the
    forward pass and kept in the logits' dtype."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        rows = max(1, CHUNK_ELEMENTS // max(1, logits.shape[-1]))
        total = torch.zeros((), dtype=torch.float32, device=logits.device)
        grad = torch.empty_like(logits) if logits.requires_grad else None
        for start in range(0, logits.shape[0], rows):
            chunk = logits[start:start + rows].to(torch.float32, copy=True)  # modified in place below
            target = targets[start:start + rows]
            lse = torch.logsumexp(chunk, dim=-1)
            total += (lse - chunk.gather(1, target[:, None]).squeeze(1)).sum()
            if grad is not None:
                # d/dlogits of (logsumexp - logit[target]) = softmax - onehot(target)
                chunk.sub_(lse[:, None]).exp_()
                chunk.scatter_add_(1, target[:, None], torch.full_like(chunk[:, :1], -1.0))
                grad[start:start + rows] = chunk
        ctx.save_for_backward(grad if grad is not None else logits.new_empty(0))
        return total

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (grad,) = ctx.saved_tensors
        return grad * grad_output.to(grad.dtype), None


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
    with torch.autocast(logits.device.type, enabled=False):  # the chunks are upcast explicitly
        total = ChunkedCrossEntropy.apply(logits, targets)
    if torch.is_tensor(num_items_in_batch):
        return total / num_items_in_batch.clamp(min=1).to(total.device)
    return total / max(1, num_items_in_batch)
