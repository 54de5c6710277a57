"""Extra evidence on a real GPU (not a CI test): a test file that allocates GPU memory, forks a
child that allocates more, ignores SIGTERM and hangs is timed out by ci.runner, its whole tree
is killed, and the VRAM is released. Writes nvidia-smi readings and the runner's log to $OUT.

    python bench/gpu_timeout_check.py   # on a machine with an NVIDIA GPU and PyTorch
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ci.config import load_config
from ci.runner import PlannedFile, RunPlan, run_plan
from ci.stage import file_runs

HOG = """
import os, signal, time, torch
signal.signal(signal.SIGTERM, signal.SIG_IGN)
if os.fork() == 0:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    y = torch.empty(20 * 2**30, dtype=torch.uint8, device="cuda"); y.fill_(2); torch.cuda.synchronize()
    print("child holding", flush=True)
    time.sleep(3600)
x = torch.empty(30 * 2**30, dtype=torch.uint8, device="cuda"); x.fill_(1); torch.cuda.synchronize()
print("parent holding", flush=True)
time.sleep(3600)
"""
QUERY = ["nvidia-smi", "--query-gpu=index,memory.used,memory.total", "--format=csv,noheader,nounits"]


def used_mib() -> int:
    return int(subprocess.run(QUERY, capture_output=True, text=True).stdout.split(",")[1])


def main() -> int:
    out = Path(os.environ.get("OUT", "."))
    root = Path(tempfile.mkdtemp())
    (root / "test_gpu_hog.py").write_text(HOG)
    timeout = float(os.environ.get("HOG_TIMEOUT_S", "25"))
    plan = RunPlan("gpu-check", str(root), str(root / "reports"), (PlannedFile("test_gpu_hog.py", 1),), timeout, 600,
                   file_runs(load_config(env={})), 1.0)
    before = used_mib()
    samples: list[tuple[float, int]] = []
    log = io.StringIO()
    started = time.monotonic()
    import threading

    stop = threading.Event()

    def sample():
        while not stop.is_set():
            samples.append((round(time.monotonic() - started, 2), used_mib()))
            time.sleep(0.5)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    (result,) = run_plan(plan, log)
    returned = time.monotonic() - started
    released_at = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if used_mib() <= before + 512:
            released_at = time.monotonic() - started
            break
        time.sleep(0.2)
    stop.set()
    peak = max(m for _, m in samples) if samples else -1
    report = (f"status {result.status} ({result.reason}); runner returned {returned:.2f} s after start "
              f"(timeout {timeout:g} s)\nVRAM used before {before} MiB, peak {peak} MiB, back to baseline at "
              f"{released_at and round(released_at, 2)} s\nsamples (s, MiB): {samples}\n--- runner log ---\n{log.getvalue()}")
    (out / "gpu_timeout_report.txt").write_text(report)
    print(report)
    return 0 if result.status == "timeout" and released_at is not None and peak > before + 40000 else 1


if __name__ == "__main__":
    sys.exit(main())
