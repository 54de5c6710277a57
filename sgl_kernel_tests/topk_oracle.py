"""A tie-aware oracle for MoE top-k routing kernels, on NumPy arrays (no torch, no GPU needed).

A kernel's sigmoid scores may each land up to `score_ulps` fp32 ULPs from the reference (fast
math; the number is measured and lives in config/kernels.yaml), so experts whose reference
scores are that close can be ranked either way. A choice is accepted when its experts are
distinct and some scores within those error budgets would rank them first: every chosen
expert's reference selection score plus its budget reaches every unchosen one's minus its
budget. A budget is `score_ulps` ULPs of the expert's sigmoid score, plus, with a correction
bias, the rounding of the bias add. Its weights are then compared, for the experts it chose,
with the usual tolerances.
"""

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


def ulp(x: np.ndarray) -> np.ndarray:
    """One fp32 ULP at |x| (the step away from zero), as float64."""
    return np.spacing(np.abs(np.asarray(x, dtype=np.float32))).astype(np.float64)


def ulps_apart(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How many fp32 ULPs (of the larger magnitude) a and b are apart, rounded up."""
    a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    return np.ceil(np.abs(a.astype(np.float64) - b.astype(np.float64)) / ulp(np.maximum(np.abs(a), np.abs(b))))


def error_budget(selection: np.ndarray, weight: np.ndarray, score_ulps: int, biased: bool) -> np.ndarray:
    """How far a kernel's selection score may be from the reference one, as float64.

    The sigmoid part: `score_ulps` ULPs, counted (as measured) at the larger of the kernel's and
    the reference value, so one binade up where the kernel's value can cross into it. With a bias,
    the kernel rounds sigmoid + bias from a different sigmoid than the reference: up to half an
    ULP of each result, bounded by two ULPs at |selection| + that budget."""
    weight = np.abs(np.asarray(weight, dtype=np.float32)).astype(np.float64)
    budget = score_ulps * ulp(weight + 2 * score_ulps * ulp(weight))
    if biased:
        budget = budget + 2 * ulp(np.abs(np.asarray(selection, dtype=np.float32)).astype(np.float64) + budget)
    return budget


def check_topk(
    gating: np.ndarray,
    ids: np.ndarray,
    weights: np.ndarray,
    k: int,
    *,
    score_ulps: int,
    atol: float,
    rtol: float,
    renormalize: bool = False,
    correction_bias: np.ndarray | None = None,
) -> Verdict:
    """Judge a kernel's (ids, weights) for `gating` [tokens, experts] against the fp32 reference."""
    gating = np.asarray(gating, dtype=np.float32)
    ids, weights = np.asarray(ids), np.asarray(weights, dtype=np.float32)
    tokens, experts = gating.shape
    if ids.shape != (tokens, k) or weights.shape != (tokens, k):
        return Verdict([f"shapes ids {ids.shape}, weights {weights.shape}; want ({tokens}, {k})"])
    selection, weight_scores = reference_scores(gating, correction_bias)
    budget = error_budget(selection, weight_scores, score_ulps, correction_bias is not None)
    out_of_range = ((ids < 0) | (ids >= experts)).any(axis=1)
    chosen = np.where(out_of_range[:, None], 0, ids).astype(np.int64)
    mask = np.zeros((tokens, experts), dtype=bool)
    np.put_along_axis(mask, chosen, True, axis=1)
    duplicate = ~out_of_range & (mask.sum(axis=1) != k)
    # The chosen expert that could score least, and the unchosen one that could score most.
    high = np.where(mask, selection + budget, np.inf)
    low = np.where(mask, -np.inf, selection - budget)
    weakest, strongest = high.argmin(axis=1), low.argmax(axis=1)
    rows = np.arange(tokens)
    wrong_choice = high[rows, weakest] < low[rows, strongest]
    expected = np.take_along_axis(weight_scores, chosen, 1).astype(np.float64)
    if renormalize:
        expected = expected / expected.sum(axis=1, keepdims=True)
    wrong_weights = ~np.isclose(weights, expected, atol=atol, rtol=rtol).all(axis=1)
    problems = []
    for t in np.nonzero(out_of_range | duplicate | wrong_choice | wrong_weights)[0].tolist():
        row, c, n = ids[t].tolist(), weakest[t], strongest[t]
        if out_of_range[t]:
            problems.append(f"token {t}: expert id out of range in {row}")
        elif duplicate[t]:
            problems.append(f"token {t}: duplicate experts {row}")
        elif wrong_choice[t]:
            problems.append(f"token {t}: experts {row} leave out expert {n} (score {float(selection[t, n])}), "
                            f"which beats chosen expert {c} (score {float(selection[t, c])}) by "
                            f"{int(ulps_apart(selection[t, n], selection[t, c]))} fp32 ULPs, more than "
                            f"{score_ulps} per score allows")
        else:
            problems.append(f"token {t}: weights {weights[t].tolist()} != {expected[t].tolist()} for experts {row}")
    return Verdict(problems)


def check_scores(gating: np.ndarray, ids: np.ndarray, weights: np.ndarray, *, score_ulps: int) -> Verdict:
    """A plain kernel's weights are its own sigmoid scores: each within `score_ulps` fp32 ULPs of
    the reference for the expert it names (the configured, measured number, checked on this GPU).
    For ids that check_topk accepted."""
    ids = np.asarray(ids).astype(np.int64)
    expected = np.take_along_axis(sigmoid(np.asarray(gating, dtype=np.float32)), ids, 1)
    apart = ulps_apart(np.asarray(weights, dtype=np.float32), expected)
    return Verdict([f"token {t}: weights {np.asarray(weights)[t].tolist()} are up to {int(apart[t].max())} fp32 ULPs "
                    f"from {expected[t].tolist()} ({score_ulps} allowed)"
                    for t in np.nonzero((apart > score_ulps).any(axis=1))[0].tolist()])


def check_exact_indices(expected_ids: np.ndarray, ids: np.ndarray) -> Verdict:
    """The strict comparison the old test made: the very indices torch.topk returned."""
    mismatched = np.nonzero((np.asarray(expected_ids) != np.asarray(ids)).any(axis=1))[0]
    return Verdict([f"token {t}: ids {np.asarray(ids)[t].tolist()} != {np.asarray(expected_ids)[t].tolist()}"
                    for t in mismatched.tolist()])
