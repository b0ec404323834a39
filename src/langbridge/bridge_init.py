"""Closed-form start for a linear bridge: a ridge fit from the encoder features the bridge reads to the LM's input
embedding of the token that spells the same characters.

Each encoder token of an English sentence is paired with the LM token whose character span overlaps it most, so
the fit needs nothing but English text and the two tokenizers. Used as a starting point for training
(`model.bridge_init: ridge`), not as the answer (docs/science.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def aligned_lm_tokens(lm_tokenizer: Any, text: str, encoder_offsets: Sequence[tuple[int, int]]) -> list[int]:
    """For each encoder token (character span), the id of the LM token overlapping it most; -1 where none does
    (special tokens, zero-width pieces)."""
    lm = lm_tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    spans = list(zip(lm["input_ids"], lm["offset_mapping"], strict=True))
    out = []
    for start, end in encoder_offsets:
        best, overlap = -1, 0
        for token, (s, e) in spans:
            if s >= end:
                break
            if min(end, e) - max(start, s) > overlap:
                best, overlap = token, min(end, e) - max(start, s)
        out.append(best)
    return out


@torch.no_grad()
def fit_linear_bridge(
    model: Any, processor: Any, texts: Sequence[str], ridge: float = 10.0, batch_size: int = 32
) -> dict[str, float]:
    """Set `model.bridge.linear` to the ridge solution on `texts` (English). Returns fit statistics: pairs used,
    R^2 on those pairs, and how often the nearest LM embedding of the prediction is the aligned token."""
    bridge = model.bridge
    if not hasattr(bridge, "linear"):
        raise ValueError("bridge_init=ridge fits a linear bridge; set model.bridge: linear.")
    tokenizer = processor.encoder_tokenizer
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("bridge_init=ridge needs a fast (Rust) encoder tokenizer for character offsets.")
    embeddings = model.lm.get_input_embeddings().weight.float()
    features, token_ids = [], []
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start : start + batch_size])
        enc = tokenizer(
            chunk,
            return_offsets_mapping=True,
            padding=True,
            truncation=True,
            max_length=processor.max_encoder_length,
            return_tensors="pt",
        )
        offsets = enc.pop("offset_mapping")
        bridged_input = model.encoder_states(enc["input_ids"], enc["attention_mask"])
        feats = bridge.features(bridged_input.float())
        for row, text in enumerate(chunk):
            real = enc["attention_mask"][row].bool()
            spans = [tuple(o) for o in offsets[row][real].tolist()]
            ids = torch.tensor(aligned_lm_tokens(processor.lm_tokenizer, text, spans))
            keep = ids >= 0
            features.append(feats[row][real][keep])
            token_ids.append(ids[keep])
    ids = torch.cat(token_ids)
    x, y = torch.cat(features).double(), embeddings[ids].double()
    if len(x) <= x.shape[1]:
        raise ValueError(f"bridge_init=ridge: only {len(x)} aligned tokens; give it more English text.")
    x1 = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    reg = ridge * torch.eye(x1.shape[1], dtype=x.dtype)
    reg[-1, -1] = 0  # the bias is not shrunk
    solution = torch.linalg.solve(x1.T @ x1 + reg, x1.T @ y)
    bridge.linear.weight.copy_(solution[:-1].T.to(bridge.linear.weight.dtype))
    bridge.linear.bias.copy_(solution[-1].to(bridge.linear.bias.dtype))
    pred = x1 @ solution
    r2 = 1 - float(((pred - y) ** 2).sum() / ((y - y.mean(0)) ** 2).sum())
    # Nearest LM embedding (cosine) of each prediction, in chunks: pairs x vocabulary would not fit in memory.
    unit = torch.nn.functional.normalize(embeddings, dim=-1)
    nearest = torch.cat(
        [(torch.nn.functional.normalize(p.float(), dim=-1) @ unit.T).argmax(-1) for p in pred.split(1024)]
    )
    accuracy = float((nearest == ids).double().mean())
    return {"pairs": len(x), "r2": round(r2, 4), "nearest_token_acc": round(accuracy, 4)}
