"""The bridge: maps encoder hidden states into the LM's input-embedding space.

Parameter names (`linear.*`, `ffn.0.*`, `ffn.2.*`, `enc_eos`) match the official implementation's alignment
modules so that official checkpoints convert by renaming a prefix only.
"""

from __future__ import annotations

import torch
from torch import nn


class Bridge(nn.Module):
    """Projection plus a learned end-of-encoder vector appended after the real encoder tokens."""

    def __init__(self, encoder_dim: int, lm_dim: int):
        super().__init__()
        self.encoder_dim = encoder_dim
        self.lm_dim = lm_dim
        self.enc_eos = nn.Parameter(torch.zeros(lm_dim))

    def project(self, hidden_states: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns `(embeds [B, S+1, D], mask [B, S+1])`: projected states then `enc_eos` in the extra column.

        Selecting `embeds[mask.bool()]` yields, per row and in order, the real tokens followed by enc_eos,
        whether the encoder input was padded on the left or on the right.
        """
        projected = self.project(hidden_states)
        eos = self.enc_eos.to(projected.dtype).expand(projected.shape[0], 1, -1)
        embeds = torch.cat([projected, eos], dim=1)
        mask = torch.cat(
            [attention_mask.bool(), attention_mask.new_ones(attention_mask.shape[0], 1).bool()], dim=1
        )
        return embeds, mask

    @torch.no_grad()
    def reset_parameters(self, std: float) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=std)
                nn.init.zeros_(module.bias)
        # Start enc_eos at the scale of the LM's token embeddings, not at N(0, 1) as the official code does.
        nn.init.normal_(self.enc_eos, std=std)


class LinearBridge(Bridge):
    """The paper's bridge: a single linear layer."""

    def __init__(self, encoder_dim: int, lm_dim: int):
        super().__init__(encoder_dim, lm_dim)
        self.linear = nn.Linear(encoder_dim, lm_dim)

    def project(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden_states)


class FFNBridge(Bridge):
    """Two-layer GELU MLP (the official `ffn` alignment)."""

    def __init__(self, encoder_dim: int, lm_dim: int, multiplier: int = 2):
        super().__init__(encoder_dim, lm_dim)
        inner = encoder_dim * multiplier
        self.ffn = nn.Sequential(nn.Linear(encoder_dim, inner), nn.GELU(), nn.Linear(inner, lm_dim))

    def project(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.ffn(hidden_states)


def build_bridge(bridge_type: str, encoder_dim: int, lm_dim: int, ffn_multiplier: int = 2) -> Bridge:
    if bridge_type == "linear":
        return LinearBridge(encoder_dim, lm_dim)
    if bridge_type == "ffn":
        return FFNBridge(encoder_dim, lm_dim, ffn_multiplier)
    raise ValueError(f"Unknown bridge type {bridge_type!r}; choose 'linear' or 'ffn'.")
