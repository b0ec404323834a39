"""The bridge: maps encoder hidden states into the LM's input-embedding space.

Parameter names (`linear.*`, `ffn.0.*`, `ffn.2.*`, `enc_eos`) match the official implementation's alignment
modules so that official checkpoints convert by renaming a prefix only. The options beyond the paper (a learned
mix of all encoder layers, normalised inputs, soft tokens rescaled to the LM's embedding norm) default to off, so
a default bridge is the paper's bridge; docs/science.md measures what each option does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from langbridge.configuration import check_bridge_type


class Bridge(nn.Module):
    """Projection plus a learned end-of-encoder vector appended after the real encoder tokens.

    Args:
        num_layers: 0 reads one encoder layer (a `[B, S, H]` input); n > 0 reads a stack of the encoder's n hidden
            states (`[n, B, S, H]`) and mixes them with learned softmax weights, as LayAlign does.
        input_norm: parameter-free layer norm of each encoder state before the projection (the last layer of a
            contrastively trained encoder is dominated by one shared direction; see docs/science.md).
        output_norm: rescale every projected state to this L2 norm (the LM's mean token-embedding norm).
    """

    def __init__(
        self,
        encoder_dim: int,
        lm_dim: int,
        num_layers: int = 0,
        input_norm: bool = False,
        output_norm: float | None = None,
    ):
        super().__init__()
        self.encoder_dim = encoder_dim
        self.lm_dim = lm_dim
        self.input_norm = input_norm
        self.output_norm = output_norm
        self.enc_eos = nn.Parameter(torch.zeros(lm_dim))
        # Uniform at the start: every layer contributes equally until training says otherwise.
        self.layer_weights = nn.Parameter(torch.zeros(num_layers)) if num_layers else None

    def project(self, hidden_states: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def features(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The `[B, S, H]` encoder features the projection reads: one layer, or the learned mix of a stack."""
        if self.input_norm:
            hidden_states = F.layer_norm(hidden_states, (self.encoder_dim,))
        if self.layer_weights is None:
            if hidden_states.dim() != 3:
                raise ValueError(f"expected encoder states [B, S, H], got shape {tuple(hidden_states.shape)}")
            return hidden_states
        if hidden_states.dim() != 4 or hidden_states.shape[0] != self.layer_weights.numel():
            raise ValueError(
                f"expected a stack of {self.layer_weights.numel()} encoder layers [L, B, S, H], got shape "
                f"{tuple(hidden_states.shape)}"
            )
        weights = torch.softmax(self.layer_weights, dim=0).to(hidden_states.dtype)
        return torch.einsum("l,lbsh->bsh", weights, hidden_states)

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns `(embeds [B, S+1, D], mask [B, S+1])`: projected states then `enc_eos` in the extra column.

        Selecting `embeds[mask.bool()]` yields, per row and in order, the real tokens followed by enc_eos,
        whether the encoder input was padded on the left or on the right.
        """
        projected = self.project(self.features(hidden_states))
        if self.output_norm is not None:
            projected = projected * (self.output_norm / projected.norm(dim=-1, keepdim=True).clamp_min(1e-6))
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
        if self.layer_weights is not None:
            nn.init.zeros_(self.layer_weights)


class LinearBridge(Bridge):
    """The paper's bridge: a single linear layer."""

    def __init__(self, encoder_dim: int, lm_dim: int, **options: object):
        super().__init__(encoder_dim, lm_dim, **options)  # type: ignore[arg-type]
        self.linear = nn.Linear(encoder_dim, lm_dim)

    def project(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden_states)


class FFNBridge(Bridge):
    """Two-layer GELU MLP (the official `ffn` alignment)."""

    def __init__(self, encoder_dim: int, lm_dim: int, multiplier: int = 2, **options: object):
        super().__init__(encoder_dim, lm_dim, **options)  # type: ignore[arg-type]
        inner = encoder_dim * multiplier
        self.ffn = nn.Sequential(nn.Linear(encoder_dim, inner), nn.GELU(), nn.Linear(inner, lm_dim))

    def project(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.ffn(hidden_states)


def build_bridge(
    bridge_type: str,
    encoder_dim: int,
    lm_dim: int,
    ffn_multiplier: int = 2,
    num_layers: int = 0,
    input_norm: bool = False,
    output_norm: float | None = None,
) -> Bridge:
    check_bridge_type(bridge_type)
    options = {"num_layers": num_layers, "input_norm": input_norm, "output_norm": output_norm}
    if bridge_type == "ffn":
        return FFNBridge(encoder_dim, lm_dim, ffn_multiplier, **options)
    return LinearBridge(encoder_dim, lm_dim, **options)
