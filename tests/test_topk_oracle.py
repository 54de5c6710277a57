"""The tie-aware topk oracle, proven on NumPy with no GPU and no sgl_kernel: it accepts exactly
the right kernels (exact ties and near-ties within the configured, measured score error, broken
either way) and rejects the wrong ones. Property-based where the claim is about all inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ci.config import load_config
from sgl_kernel_tests.topk_oracle import (
    check_exact_indices,
    check_scores,
    check_topk,
    reference_scores,
    sigmoid,
    ulp,
)
from tests.conftest import FIXTURES

LIMITS = load_config(env={}).kernels.topk_sigmoid
N = LIMITS.score_ulps
TOL = {"score_ulps": N, "atol": LIMITS.weight_atol, "rtol": LIMITS.weight_rtol}
MEASURED = FIXTURES / "kernels" / "h200_topk_sigmoid_ulps.json"
ISSUE_REPORTED_ULPS = 3  # the issue's figure for the real kernel with fast math
PROPERTY = settings(deadline=None, database=None, max_examples=300)


def logit(p: float) -> np.float32:
    return np.float32(np.log(p / (1 - p)))


def tied_gating() -> np.ndarray:
    """Token 0: experts 1 and 3 tie exactly for 2nd place. Token 1: experts 0 and 2 are one fp32
    ULP apart in sigmoid score for 2nd place (found by search, checked below)."""
    g = np.array([[0.0, 1.5, 3.0, 1.5], [0.0, 4.0, 0.0, -2.0]], dtype=np.float32)
    base = np.float32(0.7)
    g[1, 0] = base
    g[1, 2] = np.nextafter(base, np.float32(0))
    while reference_scores(g[1:2], None)[0][0, 2] == reference_scores(g[1:2], None)[0][0, 0]:
        g[1, 2] = np.nextafter(g[1, 2], np.float32(0))
    return g


def kernel(gating: np.ndarray, ids: list[list[int]], renormalize: bool = False, bias=None) -> tuple[np.ndarray, np.ndarray]:
    _, weights = reference_scores(gating, bias)
    chosen = np.array(ids)
    w = np.take_along_axis(weights, chosen, axis=1).astype(np.float64)
    if renormalize:
        w = w / w.sum(axis=1, keepdims=True)
    return chosen.astype(np.int32), w.astype(np.float32)


def ulps_moved(x: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Positive fp32 values moved by whole ULPs (bit patterns of positive floats are ordered)."""
    return (np.asarray(x, dtype=np.float32).view(np.int32) + np.asarray(steps, dtype=np.int32)).view(np.float32)


def with_score_gap(x0: float, gap: int) -> np.float32 | None:
    """A gating value below x0 whose reference score is exactly `gap` ULPs below x0's."""
    x = np.float32(x0).view(np.int32) - np.arange(4000, dtype=np.int32)
    target = sigmoid(np.float32(x0)).view(np.int32) - gap
    hits = np.nonzero(sigmoid(x.view(np.float32)).view(np.int32) == target)[0]
    return x.view(np.float32)[hits[0]] if hits.size else None


# --- the configured number is the measured one --------------------------------------------------------


def test_configured_score_ulps_is_the_larger_of_the_measurement_and_the_issue():
    measured = json.loads(MEASURED.read_text())
    bands = [row for row in measured["per_score"]["nvrtc_fast_math"] if "band" in row]
    in_range = max(row["max_ulps"] for row in bands if row["band"][1] <= 8)
    assert in_range == 8
    assert max(in_range, ISSUE_REPORTED_ULPS) == N
    inputs = [row for rows in measured["per_choice"].values() for row in rows]
    assert max(row["max_abs_x"] for row in inputs) < 8  # the measured band covers every test input
    # Every choice the emulated fast-math kernel made was within the oracle's window of two budgets.
    assert max(row["max_gap_ulps"] for row in inputs) <= 2 * N


# --- properties -------------------------------------------------------------------------------------


@st.composite
def routing_case(draw):
    """Gating rows that cluster (many near-ties), an optional bias that clusters too, k, and a
    kernel's per-score error of at most score_ulps ULPs with an arbitrary tie-break order."""
    experts = draw(st.integers(2, 12))
    tokens = draw(st.integers(1, 3))
    pool = draw(st.lists(st.floats(-6, 6, width=32), min_size=1, max_size=3))
    x = np.array([[draw(st.sampled_from(pool)) for _ in range(experts)] for _ in range(tokens)], dtype=np.float32)
    nudge = np.array(draw(st.lists(st.integers(-40, 40), min_size=x.size, max_size=x.size)), dtype=np.int32)
    magnitude = np.maximum(np.abs(x).view(np.int32) + nudge.reshape(x.shape), 0)  # |x| moved by whole ULPs
    x = np.copysign(magnitude.view(np.float32), x)
    bias = None
    if draw(st.booleans()):
        bias_pool = draw(st.lists(st.floats(-1.5, 1.5, width=32), min_size=1, max_size=2))
        bias = np.array([draw(st.sampled_from(bias_pool)) for _ in range(experts)], dtype=np.float32)
    error = np.array(draw(st.lists(st.integers(-N, N), min_size=x.size, max_size=x.size)), dtype=np.int32)
    tie_break = np.array(draw(st.permutations(range(experts))))
    k = draw(st.integers(1, experts))
    return x, bias, error.reshape(x.shape), tie_break, k, draw(st.booleans())


def fast_kernel(x, bias, error, k, tie_break=None, renormalize=False):
    """sgl-kernel's topk_sigmoid with each sigmoid score `error` ULPs off (ULPs of the larger value,
    as measured): ranks fp32 score + bias, breaks ties by `tie_break` (lower index by default),
    returns (score + bias) - bias as the weight."""
    scores = ulps_moved(sigmoid(x), error)
    ranked = scores if bias is None else (scores + bias).astype(np.float32)
    tie_break = np.arange(x.shape[1]) if tie_break is None else tie_break
    ids = np.lexsort((np.broadcast_to(tie_break, x.shape), -ranked.astype(np.float64)), axis=1)[:, :k]
    weights = np.take_along_axis(ranked if bias is None else (ranked - bias).astype(np.float32), ids, 1)
    if renormalize:
        weights = (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)
    return ids.astype(np.int32), weights


@PROPERTY
@given(routing_case())
def test_any_kernel_whose_scores_are_within_the_budget_is_accepted(case):
    """Soundness: a kernel whose scores are each up to score_ulps ULPs off, breaking ties in any
    order, is never rejected."""
    x, bias, error, tie_break, k, renormalize = case
    assume(np.isfinite(ulps_moved(sigmoid(x), error)).all())
    ids, weights = fast_kernel(x, bias, error, k, tie_break, renormalize)
    verdict = check_topk(x, ids, weights, k, renormalize=renormalize, correction_bias=bias, **TOL)
    assert verdict.ok, str(verdict)


def swapped_by_fast_math(x, bias):
    """Rows (two experts) where a kernel whose scores are off by +N and -N ULPs picks expert 0
    though the reference ranks expert 1 higher, and how far apart their reference scores are."""
    ids, weights = fast_kernel(x, bias, np.tile([N, -N], (len(x), 1)), k=1)
    selection = reference_scores(x, bias)[0]
    rows = (ids[:, 0] == 0) & (selection[:, 1] > selection[:, 0])
    gap = selection[rows, 1].astype(np.float64) - selection[rows, 0]
    plain_budgets = N * (ulp(sigmoid(x[rows, 0])) + ulp(sigmoid(x[rows, 1])))
    return x[rows], None if bias is None else bias[rows], ids[rows], weights[rows], gap > plain_budgets


def test_swaps_through_the_bias_add_rounding_are_accepted():
    """Tiny sigmoid scores (x near -6) under a bias near 1 are rounded to a grid far coarser than
    their own error: two experts one grid step apart can swap although N ULPs of each sigmoid are
    much less than that step. The budget's rounding term covers it (found by this search)."""
    rng = np.random.default_rng(0)
    x0 = (np.float32(-6.0).view(np.int32) + rng.integers(0, 100_000, 200_000)).astype(np.int32).view(np.float32)
    x = np.stack([x0, (x0.view(np.int32) + rng.integers(-200, 200, x0.size)).astype(np.int32).view(np.float32)], 1)
    b0 = (np.float32(1.0).view(np.int32) + rng.integers(0, 1000, x0.size)).astype(np.int32).view(np.float32)
    bias = np.stack([b0, (b0.view(np.int32) + rng.integers(-5, 5, x0.size)).astype(np.int32).view(np.float32)], 1)
    x, bias, ids, weights, needs_rounding_term = swapped_by_fast_math(x, bias)
    assert needs_rounding_term.sum() > 100
    for row in np.nonzero(needs_rounding_term)[0][:200].tolist():  # one bias vector per call
        assert check_topk(x[row:row + 1], ids[row:row + 1], weights[row:row + 1], 1, correction_bias=bias[row],
                          **TOL).ok


def test_swaps_across_a_binade_are_accepted():
    """A score just under 0.5 that the kernel puts N ULPs higher lands in the next binade, where
    its ULPs are twice as large: the budget counts them there, as the measurement did."""
    rng = np.random.default_rng(0)
    x = np.stack([rng.uniform(-1e-6, 0, 200_000), rng.uniform(0, 4e-6, 200_000)], 1).astype(np.float32)
    x, _, ids, weights, needs_binade_term = swapped_by_fast_math(x, None)
    assert needs_binade_term.sum() > 100
    verdict = check_topk(x, ids, weights, 1, **TOL)
    assert verdict.ok, str(verdict)


@PROPERTY
@given(st.floats(0.5, 2.0, width=32), st.integers(0, 2 * N + 3), st.booleans())
def test_a_near_tie_is_accepted_up_to_two_budgets_and_rejected_one_ulp_past(x0, gap, with_others):
    """Two experts whose reference scores (in the same binade) are `gap` ULPs apart: choosing the
    lower one is right up to 2 * score_ulps (each score may be off by score_ulps, oppositely) and
    wrong from one ULP more."""
    x1 = with_score_gap(x0, gap)
    assume(x1 is not None)
    row = [x0, x1] + ([-3.0, -5.0] if with_others else [])
    g = np.array([row], dtype=np.float32)
    assert sigmoid(g[0, 0]).view(np.int32) - sigmoid(g[0, 1]).view(np.int32) == gap
    verdict = check_topk(g, *kernel(g, [[1]]), k=1, **TOL)
    assert verdict.ok == (gap <= 2 * N), str(verdict)
    if not verdict.ok:
        assert "leave out expert 0" in str(verdict) and f"by {gap} fp32 ULPs" in str(verdict)
    assert check_topk(g, *kernel(g, [[0]]), k=1, **TOL).ok  # the reference's own choice, always


@PROPERTY
@given(st.lists(st.integers(-600, 600), min_size=2, max_size=16, unique=True), st.data())
def test_a_wrong_set_of_experts_is_rejected_and_any_order_of_the_right_set_accepted(centis, data):
    """With scores far apart (gating 0.01 apart), a choice is right exactly when it is the top-k set."""
    g = np.array([centis], dtype=np.float32) / np.float32(100)
    experts = g.shape[1]
    k = data.draw(st.integers(1, experts))
    chosen = data.draw(st.permutations(range(experts)))[:k]
    top = set(np.argsort(-reference_scores(g, None)[0][0], kind="stable")[:k].tolist())
    verdict = check_topk(g, *kernel(g, [chosen]), k=k, **TOL)
    assert verdict.ok == (set(chosen) == top), str(verdict)


@PROPERTY
@given(st.floats(-6, 6, width=32), st.integers(-N - 2, N + 2))
def test_check_scores_allows_exactly_the_configured_ulps(x, off):
    """A plain kernel's weight `off` ULPs from the reference score (inside one binade, where an ULP
    is one step either way) passes exactly when |off| <= score_ulps."""
    g = np.array([[x]], dtype=np.float32)
    reference = sigmoid(g)
    w = ulps_moved(reference, np.array([[off]]))
    assume(all(ulp(ulps_moved(reference, np.array([[s]]))) == ulp(reference) for s in (-N - 2, N + 2)))
    verdict = check_scores(g, np.array([[0]]), w, score_ulps=N)
    assert verdict.ok == (abs(off) <= N), str(verdict)


# --- examples ---------------------------------------------------------------------------------------


def test_fixture_really_has_a_one_ulp_near_tie():
    scores = reference_scores(tied_gating(), None)[0]
    assert scores[0, 1] == scores[0, 3]
    assert scores[1, 0] != scores[1, 2]
    assert np.nextafter(scores[1, 2], np.float32(1)) == scores[1, 0]


@pytest.mark.parametrize("renormalize", [False, True])
def test_either_tie_break_is_accepted(renormalize):
    g = tied_gating()
    for ids in ([[2, 1], [1, 0]], [[2, 3], [1, 0]], [[1, 2], [0, 1]], [[2, 3], [1, 2]]):
        verdict = check_topk(g, *kernel(g, ids, renormalize), k=2, renormalize=renormalize, **TOL)
        assert verdict.ok, (ids, str(verdict))


def test_strict_check_rejects_the_other_tie_break():
    g = tied_gating()
    torch_like = np.array([[2, 1], [1, 0]])
    assert check_exact_indices(torch_like, np.array([[2, 1], [1, 0]])).ok
    assert not check_exact_indices(torch_like, np.array([[2, 3], [1, 2]])).ok
    assert check_topk(g, *kernel(g, [[2, 3], [1, 2]]), k=2, **TOL).ok  # while the tie-aware one accepts it


def test_a_truly_wrong_expert_is_rejected():
    g = tied_gating()
    verdict = check_topk(g, *kernel(g, [[2, 0], [1, 0]]), k=2, **TOL)  # expert 0 scores 0.5, far below 1.5's
    assert not verdict.ok and "token 0: experts [2, 0] leave out expert 1" in str(verdict)


def test_duplicate_ids_are_rejected():
    g = tied_gating()
    verdict = check_topk(g, *kernel(g, [[2, 2], [1, 0]]), k=2, **TOL)
    assert not verdict.ok and "duplicate experts [2, 2]" in str(verdict)


def test_out_of_range_ids_are_rejected():
    g = tied_gating()
    ids, w = kernel(g, [[2, 1], [1, 0]])
    ids[1, 1] = 7
    assert "token 1: expert id out of range" in str(check_topk(g, ids, w, k=2, **TOL))
    ids[1, 1] = -1
    assert "token 1: expert id out of range" in str(check_topk(g, ids, w, k=2, **TOL))


def test_wrong_shapes_are_rejected():
    g = tied_gating()
    ids, w = kernel(g, [[2, 1], [1, 0]])
    assert "shapes" in str(check_topk(g, ids[:, :1], w[:, :1], k=2, **TOL))


def test_weights_off_by_more_than_the_tolerance_are_rejected():
    g = tied_gating()
    ids, w = kernel(g, [[2, 1], [1, 0]])
    ok = w.copy()
    ok[0, 0] += 5e-4  # inside atol + rtol * |w|
    assert check_topk(g, ids, ok, k=2, **TOL).ok
    w[0, 0] += 5e-3
    assert "token 0: weights" in str(check_topk(g, ids, w, k=2, **TOL))


def test_correction_bias_selects_but_does_not_weigh():
    g = np.array([[2.0, 1.0, 0.0]], dtype=np.float32)
    bias = np.array([0.0, 0.0, 0.9], dtype=np.float32)  # lifts expert 2 over expert 1 for selection
    ids, w = kernel(g, [[0, 2]], bias=bias)
    assert check_topk(g, ids, w, k=2, correction_bias=bias, **TOL).ok
    assert np.isclose(w[0, 1], 0.5)  # sigmoid(0): the bias is not in the weight
    assert not check_topk(g, *kernel(g, [[0, 1]], bias=bias), k=2, correction_bias=bias, **TOL).ok


def test_random_gating_with_the_reference_choice_passes_at_scale():
    rng = np.random.default_rng(0)
    g = rng.standard_normal((2048, 32)).astype(np.float32)
    order = np.argsort(-reference_scores(g, None)[0], axis=1, kind="stable")[:, :4]
    assert check_topk(g, *kernel(g, order.tolist(), renormalize=True), k=4, renormalize=True, **TOL).ok


def test_only_wrong_tokens_are_named():
    rng = np.random.default_rng(1)
    g = rng.standard_normal((64, 16)).astype(np.float32)
    order = np.argsort(-reference_scores(g, None)[0], axis=1, kind="stable")[:, :2]
    order[5, 1] = np.argsort(reference_scores(g, None)[0][5])[0]  # token 5 takes its worst expert
    verdict = check_topk(g, *kernel(g, order.tolist()), k=2, **TOL)
    assert [p.split(":")[0] for p in verdict.problems] == ["token 5"]
