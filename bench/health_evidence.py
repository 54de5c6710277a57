"""Evidence on a real GPU (not a CI test): the preflight's NVIDIA paths on an idle card, a busy card
(a process computing on it), and memory held by a process in another PID namespace (made with
`unshare --pid --fork --mount-proc`), plus the collective smoke test (nccl on the GPU, gloo on the
CPU). Writes every tool output and the preflight's reports to $OUT; they are kept as fixtures in
tests/fixtures/devices/ (see its README).

    OUT=out python bench/health_evidence.py   # on a machine with an NVIDIA GPU and PyTorch

The arch is an override whose product is the card's (H200): the gpus check compares names, and no
AMD product is on such a machine. The disk rule for the Docker root is left out (no engine there), and
reachability is off: that machine reaches nothing outside it (the check is tested on loopback).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HOG = r"""
import os, sys, time, torch
gib, busy = int(sys.argv[1]), sys.argv[2] == "busy"
x = torch.empty(gib * 2**30, dtype=torch.uint8, device="cuda"); x.fill_(1)
a = torch.randn(8192, 8192, device="cuda")
torch.cuda.synchronize()
print("holding", os.getpid(), flush=True)
end = time.time() + 600
while time.time() < end:
    if busy:
        for _ in range(20):
            a = (a @ a).clamp_(-1, 1)
        torch.cuda.synchronize()
    else:
        time.sleep(1)
"""

QUERIES = {
    "query": ["nvidia-smi", "--query-gpu=index,name,pci.bus_id,memory.used,memory.total,ecc.errors.corrected.volatile.total,"
              "ecc.errors.uncorrected.volatile.total,retired_pages.pending,remapped_rows.pending,remapped_rows.failure",
              "--format=csv,noheader,nounits"],
    "apps": ["nvidia-smi", "--query-compute-apps=pid,gpu_bus_id,used_memory,process_name", "--format=csv,noheader,nounits"],
    "plain": ["nvidia-smi"],
}


def sh(argv: list[str], timeout: float = 60) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        return done.stdout + (f"\n[stderr]\n{done.stderr}" if done.stderr.strip() else "") + f"\n[exit {done.returncode}]\n"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"[{type(exc).__name__}: {exc}]\n"


def record(out: Path, case: str) -> None:
    for name, argv in QUERIES.items():
        text = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False).stdout
        (out / f"nvidia-smi_{name}_h200_{case}.txt").write_text(text)


def preflight(out: Path, case: str) -> str:
    from ci.config import load_config
    from ci.preflight import Host, run_preflight

    override = Path(tempfile.mkdtemp()) / "override.yaml"
    override.write_text("arches: {arches: {mi300: {product: H200}}}\n"
                        "health: {disk: [{path: $WORKSPACE, min_free_gib: 1}], checks: {reachability: \"off\"}}\n")
    config = load_config(env={"SGL_CI_CONFIG_OVERRIDE": str(override)})
    started = time.monotonic()
    report = run_preflight(config, config.arch("mi300"), 1, str(ROOT), {}, Host())
    text = "\n".join(report.lines()) + f"\n(ok={report.ok}, {time.monotonic() - started:.2f} s)\n\n" + report.markdown()
    (out / f"preflight_h200_{case}.txt").write_text(text)
    return text


def start_hog(gib: int, mode: str, namespace: bool) -> subprocess.Popen:
    argv = [sys.executable, "-c", HOG, str(gib), mode]
    if namespace:
        argv = ["unshare", "--pid", "--fork", "--mount-proc", *argv]
    hog = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    line = hog.stdout.readline().strip()
    if not line.startswith("holding"):
        raise RuntimeError(f"hog did not start: {line!r} {hog.stderr.read()[-2000:]}")
    hog.inner_pid = int(line.split()[1])  # its pid as it sees itself
    return hog


def stop(hog: subprocess.Popen) -> None:
    os.killpg(hog.pid, 9)
    hog.wait()


def host_pid_of(hog: subprocess.Popen) -> str:
    """The holder's host pid and its NSpid line (what the preflight reads in /proc)."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"holding" in cmd or (HOG.encode()[:40] in cmd):
                ns = next((line for line in status.splitlines() if line.startswith("NSpid")), "")
                found.append(f"pid {pid} {ns} ns={os.readlink(f'/proc/{pid}/ns/pid')} self={os.readlink('/proc/self/ns/pid')}")
    return "\n".join(found) + "\n"


def main() -> int:
    out = Path(os.environ.get("OUT", "out"))
    out.mkdir(parents=True, exist_ok=True)
    log = []
    log.append("== idle ==")
    record(out, "idle")
    log.append(preflight(out, "idle"))

    log.append("== busy: a process computing on the card and holding 20 GiB ==")
    hog = start_hog(20, "busy", namespace=False)
    time.sleep(3)
    record(out, "busy")
    log.append(preflight(out, "busy"))
    stop(hog)

    log.append("== held from another PID namespace (unshare --pid --fork --mount-proc), 30 GiB, idle ==")
    try:
        hog = start_hog(30, "idle", namespace=True)
        log.append(f"inner pid (as it sees itself): {hog.inner_pid}")
        log.append(host_pid_of(hog))
        time.sleep(2)
        record(out, "other_ns")
        log.append(preflight(out, "other_ns"))
        stop(hog)
    except (RuntimeError, OSError) as exc:
        log.append(f"another PID namespace could not be made here: {exc}")
    time.sleep(2)
    record(out, "after")
    log.append(preflight(out, "after"))

    log.append("== collective smoke test ==")
    script = str(ROOT / "ci" / "allreduce_smoke.py")
    from ci.config import load_config

    elements = str(load_config(env={}).health.smoke.elements)
    for backend, n in (("nccl", 1), ("gloo", 2)):
        text = sh([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", script,
                   "--backend", backend, "--timeout-s", "60", "--elements", elements], timeout=120)
        (out / f"smoke_{backend}_{n}.txt").write_text(text)
        log.append(f"-- {backend} x{n}\n" + "\n".join(line for line in text.splitlines() if "SGL_CI_SMOKE" in line or "exit" in line))
    log.append(f"unshare: {shutil.which('unshare')}; uid {os.getuid()}")
    (out / "health_evidence_report.txt").write_text("\n".join(log) + "\n")
    print("\n".join(log))
    return 0


if __name__ == "__main__":
    sys.exit(main())
