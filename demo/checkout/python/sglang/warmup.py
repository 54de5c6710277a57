"""Demo stand-in for SGLang's AITER JIT warm-up (scripts/ci/amd/amd_ci_warmup_aiter.py)."""

import sglang

print(f"warm-up: sglang {sglang.__version__} from {sglang.__file__}: nothing to compile on a box without a GPU")
