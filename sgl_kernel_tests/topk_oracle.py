"""A tie-aware oracle for MoE top-k routing kernels, on NumPy arrays (no torch, no GPU needed).

A kernel's choice is accepted when its experts are distinct and their reference selection
scores equal the reference top-k scores within a few fp32 ULPs, whatever order it broke ties
in; its weights are then compared, for the experts it chose, with the usual tolerances."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Verdict:
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        shown = self.problems[:5]
        more = f" (+{len(self.problems) - 5} more)" if len(self.problems) > 5 else ""
        return "; ".join(shown) + more if shown else "ok"


def sigmoid(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


def reference_scores(gating: np.ndarray, correction_bias: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(selection scores, weight scores): the bias shifts selection only; weights stay unbiased."""
    weights = sigmoid(np.asarray(gating, dtype=np.float32))
    selection = weights + np.asarray(correction_bias, dtype=np.float32) if correction_bias is not None else weights
    return selection.astype(np.float32), weights


def within_ulps(a: np.ndarray, b: np.ndarray, ulps: int) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    spacing = np.spacing(np.maximum(np.abs(a), np.abs(b)).astype(np.float32))
    return np.abs(a.astype(np.float64) - b.astype(np.float64)) <= ulps * spacing.astype(np.float64)


def check_topk(
    gating: np.ndarray,
    ids: np.ndarray,
    weights: np.ndarray,
    k: int,
    *,
    renormalize: bool = False,
    correction_bias: np.ndarray | None = None,
    ulps: int = 2,
    atol: float = 1e-3,
    rtol: float = 1e-3,
) -> Verdict:
    """Judge a kernel's (ids, weights) for `gating` [tokens, experts] against the fp32 reference."""
    verdict = Verdict()
    gating = np.asarray(gating, dtype=np.float32)
    ids, weights = np.asarray(ids), np.asarray(weights, dtype=np.float32)
    tokens, experts = gating.shape
    if ids.shape != (tokens, k) or weights.shape != (tokens, k):
        return Verdict([f"shapes ids {ids.shape}, weights {weights.shape}; want ({tokens}, {k})"])
    selection, weight_scores = reference_scores(gating, correction_bias)
    best = -np.sort(-selection, axis=1)[:, :k]  # the reference top-k scores, descending
    for t in range(tokens):
        chosen = ids[t]
        if chosen.min() < 0 or chosen.max() >= experts:
            verdict.problems.append(f"token {t}: expert id out of range in {chosen.tolist()}")
            continue
        if len(set(chosen.tolist())) != k:
            verdict.problems.append(f"token {t}: duplicate experts {chosen.tolist()}")
            continue
        picked = -np.sort(-selection[t, chosen])
        if not within_ulps(picked, best[t], ulps).all():
            verdict.problems.append(f"token {t}: experts {chosen.tolist()} score {picked.tolist()}, "
                                    f"top-{k} is {best[t].tolist()}")
            continue
        expected = weight_scores[t, chosen].astype(np.float64)
        if renormalize:
            expected = expected / expected.sum()
        if not np.allclose(weights[t], expected, atol=atol, rtol=rtol):
            verdict.problems.append(f"token {t}: weights {weights[t].tolist()} != {expected.tolist()} for experts {chosen.tolist()}")
    return verdict


def check_exact_indices(expected_ids: np.ndarray, ids: np.ndarray) -> Verdict:
    """The strict comparison the old test made: the very indices torch.topk returned."""
    mismatched = np.nonzero((np.asarray(expected_ids) != np.asarray(ids)).any(axis=1))[0]
    return Verdict([f"token {t}: ids {np.asarray(ids)[t].tolist()} != {np.asarray(expected_ids)[t].tolist()}"
                    for t in mismatched.tolist()])
