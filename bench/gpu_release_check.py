"""Extra evidence on a real GPU (not a CI test): a process holding GPU memory and ignoring
SIGTERM is found through its device file and killed by ci.gpu's hygiene, and the VRAM comes
back. Writes nvidia-smi before/after to $OUT (kept as fixtures in tests/fixtures/devices/).

    python bench/gpu_release_check.py   # on a machine with an NVIDIA GPU and PyTorch
"""

from __future__ import annotations

import dataclasses
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ci.config import load_config
from ci.gpu import gpu_clean, parse_nvidia_smi

HOG = """
import signal, sys, time, torch
signal.signal(signal.SIGTERM, signal.SIG_IGN)   # a stubborn zombie-maker: needs SIGKILL
x = torch.empty(int(sys.argv[1]) * 2**30, dtype=torch.uint8, device="cuda")
x.fill_(1); torch.cuda.synchronize()
print("holding", flush=True)
time.sleep(3600)
"""

QUERY = ["nvidia-smi", "--query-gpu=index,memory.used,memory.total", "--format=csv,noheader,nounits"]


def main() -> int:
    out = Path(os.environ.get("OUT", "."))
    gib = int(os.environ.get("HOG_GIB", "40"))
    hog = subprocess.Popen([sys.executable, "-c", HOG, str(gib)], stdout=subprocess.PIPE, text=True)
    assert hog.stdout.readline().strip() == "holding"
    before = subprocess.run(QUERY, capture_output=True, text=True).stdout
    (out / "nvidia-smi_query_holding.txt").write_text(before)
    full = subprocess.run(["nvidia-smi"], capture_output=True, text=True).stdout
    (out / "nvidia-smi_full_holding.txt").write_text(full)
    config = load_config()
    container = dataclasses.replace(config.container, hygiene=dataclasses.replace(
        config.container.hygiene, device_globs=("/dev/nvidia[0-9]*",), term_grace_s=2, interval_s=1, vram_threshold_pct=6))
    log = io.StringIO()
    started = time.monotonic()
    try:
        gpu_clean(container, None, log)
        verdict = "clean"
    except Exception as exc:  # evidence run: report whatever happened
        verdict = f"failed: {exc}"
    took = time.monotonic() - started
    after = subprocess.run(QUERY, capture_output=True, text=True).stdout
    (out / "nvidia-smi_query_after_clean.txt").write_text(after)
    hog.wait(timeout=10)
    report = (f"hog: {gib} GiB, exit {hog.returncode} (-9 = SIGKILL)\n"
              f"before: {[(r.gpu, r.used_pct) for r in parse_nvidia_smi(before)]}\n"
              f"after:  {[(r.gpu, r.used_pct) for r in parse_nvidia_smi(after)]}\n"
              f"gpu_clean: {verdict} in {took:.2f} s\n--- log ---\n{log.getvalue()}")
    (out / "report.txt").write_text(report)
    print(report)
    return 0 if hog.returncode == -signal.SIGKILL and verdict == "clean" else 1


if __name__ == "__main__":
    sys.exit(main())
