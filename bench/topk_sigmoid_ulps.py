"""How far a fast-math sigmoid lands from the topk oracle's reference, on a real NVIDIA GPU.

The reference is the oracle's: 1 / (1 + exp(-x)) in float64, rounded to float32. The kernel's
line `1.0f / (1.0f + expf(-val))` (sgl-kernel's moe_topk_sigmoid) is compiled with NVRTC with
and without --use_fast_math; torch.sigmoid is measured too. Distances use the oracle's metric:
ceil(|a - b| / spacing(max(|a|, |b|))) fp32 ULPs. Measured: (1) per score, every fp32 value
with |x| < 16 (and every bf16 and fp16 one), by |x| band; (2) per top-k choice, on the kernel
test's own inputs and on a larger random sweep: a kernel ranking fast-math scores (lower index
wins a tie) against the reference top-k, the largest gap between the reference scores it chose
and the reference top-k ones (what the oracle's tie window must cover).

    python3 bench/topk_sigmoid_ulps.py   # needs torch and cupy on a CUDA GPU; writes $OUT
"""

import itertools
import json
import os
import subprocess
import tempfile
from pathlib import Path

import cupy as cp
import torch

SRC = r"""extern "C" __global__ void sig(const float* x, float* y, long long n) {
  long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) { float val = x[i]; y[i] = 1.0f / (1.0f + expf(-val)); }
}"""
TOKENS = (1, 16, 64, 128, 512, 1024, 2048)  # the kernel test's grid
EXPERTS = (4, 8, 16, 32, 48, 64, 96, 128, 256)
TOPK = (1, 2, 4, 8)
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
BIAS = (None, 0.1, 1.0)
BANDS = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0)
CHUNK = 1 << 27


def nvrtc(fast):
    kernel = cp.RawKernel(SRC, "sig", options=("--use_fast_math",) if fast else ())

    def run(x):
        y = torch.empty_like(x)
        n = x.numel()
        kernel(((n + 255) // 256,), (256,), (cp.asarray(x), cp.asarray(y), cp.int64(n)))
        cp.cuda.get_current_stream().synchronize()
        return y
    return run


VARIANTS = {"nvrtc_fast_math": nvrtc(True), "nvrtc_precise": nvrtc(False), "torch_sigmoid": torch.sigmoid}


def reference(x):
    x = x.double()
    return (1.0 / (1.0 + torch.exp(-x))).float()


def ulps(a, b, mag=None):
    m = torch.maximum(a.abs(), b.abs()) if mag is None else mag
    spacing = (torch.nextafter(m, torch.full_like(m, float("inf"))) - m).double()
    return torch.ceil((a.double() - b.double()).abs() / spacing).long()


def bits_of(value, dtype, int_dtype):
    return int(torch.tensor([value], dtype=dtype).view(int_dtype).item())


def per_score():
    """Every fp32 (and bf16, fp16) x with lo <= |x| < hi, both signs: max ULPs by band."""
    out = {}
    for name, fn in VARIANTS.items():
        rows = []
        for lo, hi in itertools.pairwise(BANDS):
            row = {"band": [lo, hi], "max_ulps": 0, "values": 0, "hist": {}}
            a, b = bits_of(lo, torch.float32, torch.int32), bits_of(hi, torch.float32, torch.int32)
            for start in range(a, b, CHUNK):
                bits = torch.arange(start, min(start + CHUNK, b), dtype=torch.int32, device="cuda")
                for sign in (1.0, -1.0):
                    x = bits.view(torch.float32) * sign
                    d = ulps(fn(x), reference(x))
                    row["max_ulps"] = max(row["max_ulps"], int(d.max()))
                    row["values"] += x.numel()
                    for k, v in enumerate(torch.bincount(d.clamp(max=16)).tolist()):
                        row["hist"][k] = row["hist"].get(k, 0) + v
            rows.append(row)
        for dtype, int_dtype in ((torch.bfloat16, torch.int16), (torch.float16, torch.int16)):
            b = bits_of(16.0, dtype, int_dtype)
            x = torch.arange(0, b, dtype=torch.int32, device="cuda").to(int_dtype).view(dtype).float()
            x = torch.cat([x, -x])
            small = x.abs() < 8
            d = ulps(fn(x), reference(x))
            rows.append({"dtype": str(dtype), "all_abs_lt_16_max_ulps": int(d.max()),
                         "abs_lt_8_max_ulps": int(d[small].max()), "values": x.numel()})
        out[name] = rows
    return out


def choice_gaps(g, bias, fn):
    """Largest reference-score gap (two metrics) a fast-ranking kernel leaves, per k; rows that
    differ from torch.topk's indices."""
    ref_w, fast_w = reference(g), fn(g)
    ref_s = ref_w if bias is None else ref_w + bias
    fast_s = fast_w if bias is None else fast_w + bias
    torch_s = torch.sigmoid(g) if bias is None else torch.sigmoid(g) + bias
    order = torch.sort(fast_s, dim=1, descending=True, stable=True).indices  # lower index wins ties
    result = {}
    for k in TOPK:
        if k > g.shape[1]:
            continue
        chosen = order[:, :k]
        picked, by = torch.sort(ref_s.gather(1, chosen), dim=1, descending=True)
        picked_w = ref_w.gather(1, chosen.gather(1, by))
        best, best_ids = torch.topk(ref_s, k, dim=1)
        best_w = ref_w.gather(1, best_ids)
        mag = torch.stack([picked.abs(), best.abs(), picked_w, best_w]).amax(0)
        torch_ids = torch.topk(torch_s, k, dim=1).indices
        result[k] = (int(ulps(picked, best).max()), int(ulps(picked, best, mag).max()),
                     int((chosen != torch_ids).any(1).sum()), int((picked != best).any(1).sum()))
    return result


def per_choice():
    out = {}
    for name, fn in VARIANTS.items():
        rows = []
        for source in ("test_inputs", "sweep"):
            for dtype in DTYPES:
                for scale in BIAS:
                    worst = [0, 0, 0, 0, 0]
                    shapes = [(t, e) for t in TOKENS for e in EXPERTS] if source == "test_inputs" else \
                        [(1 << 16, e) for e in EXPERTS]
                    for seed, (tokens, experts) in enumerate(shapes):
                        torch.manual_seed(0 if source == "test_inputs" else 1000 + seed)
                        g = torch.randn(tokens, experts, dtype=torch.float32, device="cuda").to(dtype).float()
                        bias = None
                        if scale is not None:
                            torch.manual_seed(1 if source == "test_inputs" else 2000 + seed)
                            bias = torch.randn(experts, dtype=torch.float32, device="cuda") * scale
                        worst[4] = max(worst[4], float(g.abs().max()))
                        for gap, gap_mag, differ, swapped in choice_gaps(g, bias, fn).values():
                            worst = [max(worst[0], gap), max(worst[1], gap_mag), worst[2] + differ,
                                     worst[3] + swapped, worst[4]]
                    rows.append({"inputs": source, "dtype": str(dtype), "bias_scale": scale,
                                 "max_gap_ulps": worst[0], "max_gap_ulps_of_larger_magnitude": worst[1],
                                 "rows_not_torch_topk_ids": worst[2], "rows_other_scores": worst[3],
                                 "max_abs_x": worst[4]})
        out[name] = rows
    return out


def ptx_evidence():
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "k.cu")
        with open(src, "w") as f:
            f.write(SRC)
        lines = {}
        for flag in ("--use_fast_math", ""):
            ptx = os.path.join(tmp, "k.ptx")
            done = subprocess.run(["nvcc", "-arch=sm_90", "-ptx", "-o", ptx, src] + ([flag] if flag else []),
                                  check=False, capture_output=True, text=True)
            found = Path(ptx).read_text().splitlines() if done.returncode == 0 else []
            lines[flag or "precise"] = [ln.strip() for ln in found
                                        if any(op in ln for op in ("ex2.", "rcp.", "div."))] or done.stderr[-500:]
        return lines


def main():
    info = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "cupy": cp.__version__,
            "nvrtc": list(cp.cuda.nvrtc.getVersion())}
    try:
        info["ptx"] = ptx_evidence()
    except (OSError, subprocess.SubprocessError) as exc:  # evidence only (no nvcc, say)
        info["ptx"] = repr(exc)
    report = {"info": info, "per_score": per_score(), "per_choice": per_choice()}
    text = json.dumps(report, indent=1)
    with open(os.path.join(os.environ.get("OUT", "."), "topk_sigmoid_ulps.json"), "w") as f:
        f.write(text + "\n")
    print(json.dumps(info))
    for name in VARIANTS:
        print(name, "per score:", [(r.get("band") or r["dtype"], r.get("max_ulps", r.get("abs_lt_8_max_ulps")))
                                   for r in report["per_score"][name]])
        for r in report["per_choice"][name]:
            print(name, r)


if __name__ == "__main__":
    main()
