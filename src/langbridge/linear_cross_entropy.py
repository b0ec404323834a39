"""Cross-entropy through a frozen LM head without keeping the [targets, vocabulary] logits for autograd.

Training only needs the gradient with respect to the hidden states at the target positions (the LM head stays
frozen), and for cross-entropy that gradient is known in closed form: (softmax - one_hot) @ W. Computing it chunk by
chunk in the forward pass replaces log-softmax, its backward, the NLL scatter and the zero-filled logit gradient
(about a quarter of the head's time on CPU) and keeps only a [targets, hidden] tensor instead of several
[targets, vocabulary] ones.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

# Rows per chunk are chosen so one chunk's fp32 logits take about this many bytes.
CHUNK_BYTES = 256 * 2**20


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, needs_grad: bool
    ) -> torch.Tensor:
        rows = max(1, CHUNK_BYTES // (4 * weight.shape[0]))
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad = torch.empty_like(hidden) if needs_grad else None
        for start in range(0, hidden.shape[0], rows):
            h, t = hidden[start : start + rows], targets[start : start + rows]
            logits = F.linear(h, weight)  # under autocast in the compute dtype, like the LM's own head
            z = logits.float()
            target_logit = z.gather(1, t[:, None]).squeeze(1)
            # Softmax in place: out-of-place steps (logsumexp) allocate chunk-sized tensors, which cost more than
            # the arithmetic on CPU.
            top = z.amax(dim=-1, keepdim=True)
            z.sub_(top).exp_()
            norm = z.sum(dim=-1, keepdim=True)
            total += (top.squeeze(1) + norm.squeeze(1).log() - target_logit).sum()
            if grad is not None:
                probs = z.div_(norm)
                probs[torch.arange(len(t), device=t.device), t] -= 1.0
                grad[start : start + rows] = (probs.to(logits.dtype) @ weight.to(logits.dtype)).to(grad.dtype)
        if grad is not None:
            ctx.save_for_backward(grad)
        return total

    @staticmethod
    def backward(ctx: Any, grad_total: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (grad,) = ctx.saved_tensors
        return grad * grad_total.to(grad.dtype), None, None, None


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    num_items: int | torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean (or sum / `num_items`) cross-entropy of `hidden @ weight.T` against `targets`, differentiable in `hidden`.

    hidden [N, H] at the target positions, weight [V, H] the LM head (frozen: no weight gradient is computed),
    targets [N]. With no rows at all the result is a zero that still depends on `hidden` (so data-parallel
    training sees every parameter used).
    """
    if weight.requires_grad:
        raise ValueError(
            "linear_cross_entropy computes no gradient for the LM head weight, but it requires grad; "
            "freeze the LM head (LangBridge keeps the LM frozen) or use the LM's own loss."
        )
    if hidden.shape[0] == 0:
        return hidden.sum() * 0.0
    total = _LinearCrossEntropy.apply(hidden, weight, targets, hidden.requires_grad)
    return total / (hidden.shape[0] if num_items is None else num_items)
