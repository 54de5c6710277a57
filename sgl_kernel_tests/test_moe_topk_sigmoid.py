"""MoE topk-sigmoid kernel test: sgl_kernel.topk_sigmoid against the fp32 torch reference, with
a tie-aware index check (passes on every arch without a skip), a check of the kernel's own scores
against the configured, measured ULP error, and one strict variant whose known MI300X case lives
in config/known_issues.yaml. Runs only where sgl_kernel exists (the CI image)."""

from __future__ import annotations

import itertools

import pytest

torch = pytest.importorskip("torch", reason="torch is needed for the kernel tests (it is in the CI image)")
sgl_kernel = pytest.importorskip("sgl_kernel", reason="sgl_kernel exists only inside the CI image")
if not torch.cuda.is_available():
    pytest.skip("no GPU visible to torch", allow_module_level=True)

from ci.config import load_config  # noqa: E402
from sgl_kernel_tests.topk_oracle import check_exact_indices, check_scores, check_topk  # noqa: E402

LIMITS = load_config().kernels.topk_sigmoid
TOLERANCES = {"score_ulps": LIMITS.score_ulps, "atol": LIMITS.weight_atol, "rtol": LIMITS.weight_rtol}

# A superset of SGLang's newest topk-sigmoid grids (python/sglang/kernels/aot/tests/ and
# test/registered/kernels/ops/moe/): their tokens, and 64 (their fallback test's); every expert
# count they use, the non-powers of two 48 and 96 taking the kernel's fallback path; k up to 8;
# fp32, bf16 and fp16 gating; renormalize on and off; a correction bias at their scale (randn) and
# at a small one, with and without renormalize.
TOKENS = (1, 16, 64, 128, 512, 1024, 2048)
EXPERTS = (4, 8, 16, 32, 48, 64, 96, 128, 256)
TOPK = (1, 2, 4, 8)
DTYPES = ("float32", "bfloat16", "float16")
SHAPES = [s for s in itertools.product(TOKENS, EXPERTS, TOPK) if s[2] <= s[1]]
VARIANTS = [  # (renormalize, correction bias scale)
    pytest.param(False, None, id="plain"),
    pytest.param(True, None, id="renormalize"),
    pytest.param(False, 0.1, id="correction_bias"),
    pytest.param(True, 0.1, id="correction_bias-renormalize"),
    pytest.param(False, 1.0, id="unit_bias"),
    pytest.param(True, 1.0, id="unit_bias-renormalize"),
]


def gating_for(tokens: int, experts: int, dtype: str = "float32"):
    torch.manual_seed(0)
    return torch.randn(tokens, experts, dtype=torch.float32, device="cuda").to(getattr(torch, dtype))


def bias_for(experts: int, scale: float | None):
    if scale is None:
        return None
    torch.manual_seed(1)
    return torch.randn(experts, dtype=torch.float32, device="cuda") * scale


def run_kernel(gating, k: int, renormalize: bool = False, correction_bias=None):
    tokens = gating.shape[0]
    weights = torch.empty(tokens, k, dtype=torch.float32, device=gating.device)
    ids = torch.empty(tokens, k, dtype=torch.int32, device=gating.device)
    sgl_kernel.topk_sigmoid(weights, ids, gating, renormalize=renormalize, correction_bias=correction_bias)
    torch.cuda.synchronize()
    return ids.cpu().numpy(), weights.cpu().numpy()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("renormalize, bias_scale", VARIANTS)
@pytest.mark.parametrize("tokens, experts, topk", SHAPES)
def test_topk_sigmoid(tokens, experts, topk, renormalize, bias_scale, dtype):
    """Any valid choice (ties broken either way within the measured score error) and its weights."""
    gating = gating_for(tokens, experts, dtype)
    bias = bias_for(experts, bias_scale)
    ids, weights = run_kernel(gating, topk, renormalize=renormalize, correction_bias=bias)
    verdict = check_topk(gating.float().cpu().numpy(), ids, weights, topk, renormalize=renormalize,
                         correction_bias=None if bias is None else bias.cpu().numpy(), **TOLERANCES)
    assert verdict.ok, str(verdict)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tokens, experts, topk", SHAPES)
def test_topk_sigmoid_scores(tokens, experts, topk, dtype):
    """Without bias or renormalize the weights are the kernel's own sigmoid scores: each within
    the configured score_ulps of the reference, the number the oracle's tie window rests on
    (measured on an H200; this measures it on the GPU at hand)."""
    gating = gating_for(tokens, experts, dtype)
    ids, weights = run_kernel(gating, topk)
    reference = gating.float().cpu().numpy()
    assert check_topk(reference, ids, weights, topk, **TOLERANCES).ok
    verdict = check_scores(reference, ids, weights, score_ulps=LIMITS.score_ulps)
    assert verdict.ok, str(verdict)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("tokens, experts, topk", SHAPES)
def test_topk_sigmoid_low_precision_inputs(tokens, experts, topk, dtype):
    """fp16/bf16 gating against the kernel's own result on the same values in fp32."""
    low = gating_for(tokens, experts, dtype)
    ids, weights = run_kernel(low, topk)
    ids32, weights32 = run_kernel(low.float(), topk)
    reference = low.float().cpu().numpy()
    assert check_topk(reference, ids, weights, topk, **TOLERANCES).ok
    assert check_topk(reference, ids32, weights32, topk, **TOLERANCES).ok
    assert abs(weights - weights32).max() <= LIMITS.weight_atol


@pytest.mark.parametrize("tokens, experts, topk", SHAPES)
def test_topk_sigmoid_exact_indices(tokens, experts, topk):
    """The strict comparison of the old test: torch.topk's exact indices (ties included)."""
    gating = gating_for(tokens, experts)
    ids, _ = run_kernel(gating, topk)
    expected = torch.topk(torch.sigmoid(gating.float()), topk, dim=-1).indices.cpu().numpy()
    verdict = check_exact_indices(expected, ids)
    assert verdict.ok, str(verdict)
