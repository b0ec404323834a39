"""Model FLOPs of a LangBridge training step, counted on real (non-padding) tokens only.

Per example with n_e encoder tokens, n_l LM tokens (prefix + n_e + 1 soft slots + prompt + target) and t target
tokens (positions that get a loss):

    encoder   c_e * (2 P_e n_e + 4 L_e A_e n_e^2)             c_e = 1 frozen (forward only), 3 trained (fwd + bwd)
    bridge    c_b * P_b n_e                                   c_b = 4 (forward + weight grad), 6 if the encoder trains
    LM        4 P_l n_l + 6 L_l A_l n_l (n_l + 1) + 4 V d t

P = weights of the Linear layers inside the transformer blocks (no embeddings, no LM head), L = layers, A = query
width (heads x head_dim), V x d = LM head. A matmul with W costs 2 |W| FLOPs per token forward; backward needs
2 |W| for the input gradient and 2 |W| more for the weight gradient, which the frozen LM and a frozen encoder skip.
Attention: the encoder attends both ways (QK^T and AV: 2 x 2 A n^2 forward); the LM attends causally, so only the
n (n + 1) / 2 useful entries count (2 A n (n + 1) forward), and backward through activations costs twice the
forward. The LM head counts only at target positions (the only logits a loss needs), forward + input gradient.
Embedding lookups, norms, activations, softmax and the optimizer are not counted (they are not matmuls).
Padding, recomputed logits and other wasted work are deliberately not counted: MFU measures useful work.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class StackShape:
    linear_params: int  # P: Linear weights inside the transformer blocks
    layers: int  # L
    attn_width: int  # A: heads x head_dim of the queries


@dataclass(frozen=True)
class TrainShape:
    encoder: StackShape
    lm: StackShape
    bridge_params: int  # P_b: the bridge's Linear weights
    head_params: int  # V x d
    encoder_trainable: bool

    def as_dict(self) -> dict:
        return asdict(self)


def _linear_weights(module: nn.Module, skip: set[int]) -> int:
    from transformers.pytorch_utils import Conv1D  # GPT-2 style projections

    total = 0
    for m in module.modules():
        if id(m) in skip:
            continue
        if isinstance(m, nn.Linear | Conv1D):
            total += m.weight.numel()
    return total


def _attn_width(config) -> int:
    heads = (
        getattr(config, "num_attention_heads", None) or getattr(config, "num_heads", None) or config.n_head
    )
    head_dim = getattr(config, "head_dim", None) or getattr(config, "d_kv", None)
    hidden = getattr(config, "hidden_size", None) or getattr(config, "d_model", None) or config.n_embd
    return int(heads * (head_dim or hidden // heads))


def _layers(config) -> int:
    return int(
        getattr(config, "num_hidden_layers", None) or getattr(config, "num_layers", None) or config.n_layer
    )


def train_shape(model) -> TrainShape:
    """Shapes of a LangBridgeModel for the formula above."""
    head = model.lm.get_output_embeddings()
    encoder = StackShape(
        _linear_weights(model.encoder, set()),
        _layers(model.encoder.config),
        _attn_width(model.encoder.config),
    )
    lm = StackShape(
        _linear_weights(model.lm, {id(head)}), _layers(model.lm.config), _attn_width(model.lm.config)
    )
    return TrainShape(
        encoder=encoder,
        lm=lm,
        bridge_params=_linear_weights(model.bridge, set()),
        head_params=head.weight.numel(),
        encoder_trainable=any(p.requires_grad for p in model.encoder.parameters()),
    )


def training_flops(
    shape: TrainShape,
    encoder_lengths: Sequence[int],
    lm_lengths: Sequence[int],
    target_counts: Sequence[int],
    attention: bool = True,
    head_everywhere: bool = False,
) -> float:
    """FLOPs of one optimizer step over these examples (see the module docstring).

    `attention=False` drops the attention-score terms and `head_everywhere=True` counts the LM head at every LM
    position: together they give the matmul FLOPs a forward/backward that computes all logits actually executes
    (what torch's FlopCounterMode reports on CPU, where it does not count the SDPA kernel)."""
    enc, lm = shape.encoder, shape.lm
    c_e = 3 if shape.encoder_trainable else 1
    c_b = 6 if shape.encoder_trainable else 4
    total = 0.0
    for n_e, n_l, t in zip(encoder_lengths, lm_lengths, target_counts, strict=True):
        total += c_e * 2 * enc.linear_params * n_e + c_b * shape.bridge_params * n_e
        total += 4 * lm.linear_params * n_l + 4 * shape.head_params * (n_l if head_everywhere else t)
        if attention:
            total += c_e * 4 * enc.layers * enc.attn_width * n_e * n_e
            total += 6 * lm.layers * lm.attn_width * n_l * (n_l + 1)
    return total


def batch_lengths(batch: dict[str, torch.Tensor]) -> tuple[list[int], list[int], list[int]]:
    """Per-example (encoder tokens, LM tokens, target tokens) of a batch built by our processor."""
    enc = batch["encoder_attention_mask"].sum(dim=1).tolist()
    lm = batch["attention_mask"].sum(dim=1).tolist()
    targets = (batch["labels"][:, 1:] != -100).sum(dim=1).tolist()
    return [int(x) for x in enc], [int(x) for x in lm], [int(x) for x in targets]
