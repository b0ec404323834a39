"""Paired bootstrap confidence intervals over examples.

Every comparison in the demo is paired: both systems are scored on the same examples, so we resample example
indices once per replicate and recompute both systems' statistics on the same resample. Statistics are ratios
of sums (`sum(values) / sum(weights)`), which covers accuracies (weights 1) and token-weighted losses
(values = summed nats per example, weights = target tokens per example).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

DEFAULT_RESAMPLES = 2000


def _as_arrays(
    a: Sequence[float], b: Sequence[float], weights: Sequence[float] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a_arr = np.asarray(a, dtype=np.float64)
    b_arr = np.asarray(b, dtype=np.float64)
    if a_arr.ndim != 1 or a_arr.shape != b_arr.shape:
        raise ValueError(
            f"paired bootstrap needs two 1-D arrays of equal length (one value per example), got shapes "
            f"{a_arr.shape} and {b_arr.shape}"
        )
    if a_arr.size == 0:
        raise ValueError("paired bootstrap needs at least one example")
    w = np.ones_like(a_arr) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != a_arr.shape:
        raise ValueError(f"weights have shape {w.shape}, expected {a_arr.shape} (one weight per example)")
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError("weights must be non-negative with a positive sum")
    return a_arr, b_arr, w


def _replicate_deltas(
    a: np.ndarray, b: np.ndarray, w: np.ndarray, n_resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """Bootstrap distribution of ratio(a) - ratio(b), resampling examples with replacement."""
    n = a.size
    out = np.empty(n_resamples, dtype=np.float64)
    # Chunks bound memory at n_resamples x n indices for large n.
    chunk = max(1, 2_000_000 // n)
    for start in range(0, n_resamples, chunk):
        stop = min(n_resamples, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        ws = w[idx].sum(axis=1)
        ws[ws == 0] = np.nan  # a resample of zero-weight examples has no defined ratio
        out[start:stop] = (a[idx].sum(axis=1) - b[idx].sum(axis=1)) / ws
    return out


def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    weights: Sequence[float] | None = None,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Delta = stat(a) - stat(b) with a percentile bootstrap CI, where stat(x) = sum(x) / sum(weights).

    a, b: one value per example for the two systems, aligned (a[i] and b[i] are the same example).
    Returns {"a", "b", "delta", "ci_low", "ci_high", "n", "confidence", "n_resamples", "seed"}.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    a_arr, b_arr, w = _as_arrays(a, b, weights)
    total = w.sum()
    stat_a, stat_b = a_arr.sum() / total, b_arr.sum() / total
    deltas = _replicate_deltas(a_arr, b_arr, w, n_resamples, np.random.default_rng(seed))
    tail = (1 - confidence) / 2
    lo, hi = np.nanquantile(deltas, [tail, 1 - tail])
    return {
        "a": float(stat_a),
        "b": float(stat_b),
        "delta": float(stat_a - stat_b),
        "ci_low": float(lo),
        "ci_high": float(hi),
        "n": int(a_arr.size),
        "confidence": confidence,
        "n_resamples": n_resamples,
        "seed": seed,
    }


def paired_bootstrap_mean_over_groups(
    groups: Sequence[tuple[Sequence[float], Sequence[float], Sequence[float] | None]],
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Unweighted mean over groups (languages) of per-group deltas; each group is resampled independently in
    every replicate, so the CI reflects the example sampling of every language in the average."""
    if not groups:
        raise ValueError("need at least one group (language) to average")
    rng = np.random.default_rng(seed)
    sums = np.zeros(n_resamples)
    stat_a = stat_b = 0.0
    n = 0
    for a, b, w in groups:
        a_arr, b_arr, w_arr = _as_arrays(a, b, w)
        total = w_arr.sum()
        stat_a += a_arr.sum() / total
        stat_b += b_arr.sum() / total
        sums += _replicate_deltas(a_arr, b_arr, w_arr, n_resamples, rng)
        n += a_arr.size
    k = len(groups)
    tail = (1 - confidence) / 2
    lo, hi = np.nanquantile(sums / k, [tail, 1 - tail])
    return {
        "a": stat_a / k,
        "b": stat_b / k,
        "delta": (stat_a - stat_b) / k,
        "ci_low": float(lo),
        "ci_high": float(hi),
        "n": n,
        "groups": k,
        "confidence": confidence,
        "n_resamples": n_resamples,
        "seed": seed,
    }
