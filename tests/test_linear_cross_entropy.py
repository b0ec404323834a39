"""The fused LM-head cross-entropy equals F.cross_entropy over full logits, in value and gradient."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from langbridge import linear_cross_entropy as lce


@pytest.fixture()
def problem():
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(37, 16, generator=g, dtype=torch.float64)
    weight = torch.randn(50, 16, generator=g, dtype=torch.float64)
    targets = torch.randint(0, 50, (37,), generator=g)
    return hidden, weight, targets


@pytest.mark.parametrize("chunk_rows", [1, 5, 64])  # several chunks, a ragged last chunk, one chunk
@pytest.mark.parametrize("num_items", [None, 50])
def test_matches_cross_entropy_and_its_gradient(problem, monkeypatch, chunk_rows, num_items):
    hidden, weight, targets = problem
    monkeypatch.setattr(lce, "CHUNK_BYTES", 4 * weight.shape[0] * chunk_rows)
    h1 = hidden.clone().requires_grad_()
    ours = lce.linear_cross_entropy(h1, weight, targets, num_items)
    (ours * 3.0).backward()  # a scaled upstream gradient reaches the result
    h2 = hidden.clone().requires_grad_()
    reduction = "mean" if num_items is None else "sum"
    ref = F.cross_entropy(h2 @ weight.T, targets, reduction=reduction) / (
        1 if num_items is None else num_items
    )
    (ref * 3.0).backward()
    torch.testing.assert_close(ours, ref.float(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(h1.grad, h2.grad)


def test_no_gradient_work_without_grad(problem):
    hidden, weight, targets = problem
    with torch.no_grad():
        loss = lce.linear_cross_entropy(hidden, weight, targets)
    assert not loss.requires_grad
    torch.testing.assert_close(loss, F.cross_entropy(hidden @ weight.T, targets).float())


def test_bf16_autocast_keeps_the_softmax_in_fp32(problem):
    hidden, weight, targets = (t.float() if t.is_floating_point() else t for t in problem)
    h = hidden.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = lce.linear_cross_entropy(h, weight, targets)
    loss.backward()
    assert loss.dtype == torch.float32 and h.grad.dtype == torch.float32
    ref = F.cross_entropy((hidden.bfloat16() @ weight.bfloat16().T).float(), targets)
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-5)


def test_empty_and_trainable_head(problem):
    hidden, weight, targets = problem
    h = hidden[:0].clone().requires_grad_()
    zero = lce.linear_cross_entropy(h, weight, targets[:0])
    zero.backward()
    assert float(zero.detach()) == 0.0 and h.grad is not None
    with pytest.raises(ValueError, match="freeze the LM head"):
        lce.linear_cross_entropy(hidden, weight.clone().requires_grad_(), targets)
