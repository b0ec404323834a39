"""Target log-likelihood: the one scorer of labelled positions, used by evaluation and the server."""

from __future__ import annotations

import torch

__all__ = ["target_logprobs"]


def target_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> list[tuple[float, bool, int]]:
    """Per row: the summed log-probs of the labelled positions (labels != -100), whether greedy decoding would
    produce them all, and their number; logits[:, t] predicts labels[:, t + 1]."""
    logits = logits[:, :-1].float()
    labels = labels[:, 1:]
    mask = labels != -100
    logp = torch.log_softmax(logits, dim=-1)
    token_lp = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    total = (token_lp * mask).sum(dim=1)
    greedy = ((logits.argmax(dim=-1) == labels) | ~mask).all(dim=1)
    counts = mask.sum(dim=1)
    return [(float(t), bool(g), int(n)) for t, g, n in zip(total, greedy, counts, strict=True)]
