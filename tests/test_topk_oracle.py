"""The tie-aware topk oracle, proven on NumPy with no GPU and no sgl_kernel: it accepts exactly
the right kernels (exact ties and one-ULP near-ties broken either way) and rejects the wrong ones."""

from __future__ import annotations

import numpy as np
import pytest

from sgl_kernel_tests.topk_oracle import check_exact_indices, check_topk, reference_scores


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


def test_fixture_really_has_a_one_ulp_near_tie():
    scores = reference_scores(tied_gating(), None)[0]
    assert scores[0, 1] == scores[0, 3]
    assert scores[1, 0] != scores[1, 2]
    assert np.nextafter(scores[1, 2], np.float32(1)) == scores[1, 0]


@pytest.mark.parametrize("renormalize", [False, True])
def test_either_tie_break_is_accepted(renormalize):
    g = tied_gating()
    for ids in ([[2, 1], [1, 0]], [[2, 3], [1, 0]], [[1, 2], [0, 1]], [[2, 3], [1, 2]]):
        verdict = check_topk(g, *kernel(g, ids, renormalize), k=2, renormalize=renormalize)
        assert verdict.ok, (ids, str(verdict))


def test_strict_check_rejects_the_other_tie_break():
    g = tied_gating()
    torch_like = np.array([[2, 1], [1, 0]])
    assert check_exact_indices(torch_like, np.array([[2, 1], [1, 0]])).ok
    assert not check_exact_indices(torch_like, np.array([[2, 3], [1, 2]])).ok
    assert check_topk(g, *kernel(g, [[2, 3], [1, 2]]), k=2).ok  # while the tie-aware one accepts it


def test_a_truly_wrong_expert_is_rejected():
    g = tied_gating()
    verdict = check_topk(g, *kernel(g, [[2, 0], [1, 0]]), k=2)  # expert 0 scores 0.5, far below 1.5's
    assert not verdict.ok and "token 0: experts [2, 0]" in str(verdict)


def test_duplicate_ids_are_rejected():
    g = tied_gating()
    verdict = check_topk(g, *kernel(g, [[2, 2], [1, 0]]), k=2)
    assert not verdict.ok and "duplicate experts [2, 2]" in str(verdict)


def test_out_of_range_ids_are_rejected():
    g = tied_gating()
    ids, w = kernel(g, [[2, 1], [1, 0]])
    ids[1, 1] = 7
    assert "out of range" in str(check_topk(g, ids, w, k=2))


def test_weights_off_by_more_than_the_tolerance_are_rejected():
    g = tied_gating()
    ids, w = kernel(g, [[2, 1], [1, 0]])
    ok = w.copy()
    ok[0, 0] += 5e-4  # inside atol + rtol * |w|
    assert check_topk(g, ids, ok, k=2).ok
    w[0, 0] += 5e-3
    assert "token 0: weights" in str(check_topk(g, ids, w, k=2))


def test_correction_bias_selects_but_does_not_weigh():
    g = np.array([[2.0, 1.0, 0.0]], dtype=np.float32)
    bias = np.array([0.0, 0.0, 0.9], dtype=np.float32)  # lifts expert 2 over expert 1 for selection
    ids, w = kernel(g, [[0, 2]], bias=bias)
    assert check_topk(g, ids, w, k=2, correction_bias=bias).ok
    assert np.isclose(w[0, 1], 0.5)  # sigmoid(0): the bias is not in the weight
    assert not check_topk(g, *kernel(g, [[0, 1]], bias=bias), k=2, correction_bias=bias).ok


def test_random_gating_with_the_reference_choice_passes_at_scale():
    rng = np.random.default_rng(0)
    g = rng.standard_normal((2048, 32)).astype(np.float32)
    order = np.argsort(-reference_scores(g, None)[0], axis=1, kind="stable")[:, :4]
    assert check_topk(g, *kernel(g, order.tolist(), renormalize=True), k=4, renormalize=True).ok
