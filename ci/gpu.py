"""GPU hygiene before a container starts: stop stale CI containers and containers holding GPU
devices, TERM then KILL host processes holding /dev/kfd or /dev/dri/renderD*, and re-check VRAM
(rocm-smi, or nvidia-smi on NVIDIA boxes) for a few rounds; fail with a table when it stays used."""

from __future__ import annotations

import glob
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TextIO

from rich.console import Console
from rich.table import Table

from ci import procs
from ci.arch import run_device_tool
from ci.config import ContainerConfig, HygieneSpec
from ci.errors import ToolFailure
from ci.gpu_tools import Vram as VramReading  # one reading type for hygiene and the preflight

# The tools that report VRAM, in the order asked, with the parser of each one's output.
VRAM_TOOLS: tuple[tuple[str, ...], ...] = (
    ("rocm-smi", "--showmeminfo", "vram"),
    ("nvidia-smi", "--query-gpu=index,memory.used,memory.total", "--format=csv,noheader,nounits"),
)


def parse_rocm_smi_vram(text: str) -> list[VramReading]:
    total: dict[str, int] = {}
    used: dict[str, int] = {}
    for gpu, what, value in re.findall(r"GPU\[(\d+)\]\s*:\s*VRAM Total (Used )?Memory \(B\):\s*(\d+)", text):
        (used if what else total)[gpu] = int(value)
    return [VramReading(g, used[g], total[g]) for g in total if g in used]


def parse_nvidia_smi(text: str) -> list[VramReading]:
    readings = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and all(p.isdigit() for p in parts):
            readings.append(VramReading(parts[0], int(parts[1]) * 1048576, int(parts[2]) * 1048576))
    return readings


PARSERS: dict[str, Callable[[str], list[VramReading]]] = {"rocm-smi": parse_rocm_smi_vram, "nvidia-smi": parse_nvidia_smi}


def read_vram(timeout_s: float, run=run_device_tool) -> tuple[str, list[VramReading]] | None:
    for argv in VRAM_TOOLS:
        text = run(argv, timeout_s)
        if text:
            readings = PARSERS[argv[0]](text)
            if readings:
                return argv[0], readings
    return None


def device_holders(device_globs: Iterable[str], proc: str = "/proc") -> dict[int, set[str]]:
    """Host processes with an open file descriptor on one of the device paths (not ourselves)."""
    paths = {os.path.realpath(p) for pattern in device_globs for p in glob.glob(pattern)}
    holders: dict[int, set[str]] = {}
    if not paths:
        return holders
    me = os.getpid()
    for entry in os.listdir(proc):
        if not entry.isdigit() or int(entry) == me:
            continue
        fd_dir = os.path.join(proc, entry, "fd")
        try:
            fds = os.listdir(fd_dir)
        except OSError:  # gone, or not ours to read
            continue
        for fd in fds:
            try:
                target = os.readlink(os.path.join(fd_dir, fd))
            except OSError:
                continue
            if target in paths:
                holders.setdefault(int(entry), set()).add(target)
    return holders


def terminate(pids: Sequence[int], grace_s: float, kill_wait_s: float, say: Callable[[str], None]) -> list[int]:
    """SIGTERM, wait up to grace_s, then SIGKILL what is left (procs.stop). Returns the pids still alive."""
    def told(stubborn: list[int]) -> None:
        for pid in stubborn:
            say(f"process {pid} ignored SIGTERM for {grace_s:g} s: SIGKILL")

    return procs.stop(pids, grace_s, kill_wait_s, on_kill=told)


def _command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read().split(b"\0")[0].decode(errors="replace") or "?"
    except OSError:
        return "?"


def gpu_containers(client, config: ContainerConfig, device_globs: Iterable[str]) -> list:
    """Stale CI containers (by name) and any container with a GPU device mapped in."""
    found = []
    patterns = [re.compile(re.escape(g).replace(r"\*", ".*") + r"\Z") for g in device_globs]
    for container in client.containers.list(all=False):
        devices = (container.attrs.get("HostConfig") or {}).get("Devices") or []
        holds = any(any(p.match(d.get("PathOnHost", "")) for p in patterns) for d in devices)
        if container.name == config.name or holds:
            found.append(container)
    return found


def vram_table(readings: list[VramReading], threshold_pct: float, tool: str) -> str:
    table = Table(title=f"VRAM in use ({tool}), threshold {threshold_pct:g} %")
    for column in ("GPU", "used", "total", "used %"):
        table.add_column(column)
    for r in readings:
        mark = " !" if r.used_pct >= threshold_pct else ""
        table.add_row(r.gpu, f"{r.used_bytes / 2**30:.2f} GiB", f"{r.total_bytes / 2**30:.2f} GiB", f"{r.used_pct:.1f}{mark}")
    console = Console(width=100, record=True, file=open(os.devnull, "w"))  # noqa: SIM115 - lives as long as the console
    console.print(table)
    return console.export_text()


def gpu_clean(config: ContainerConfig, client, out: TextIO, sleep=time.sleep,
              read=lambda timeout: read_vram(timeout)) -> None:
    """Leave the GPUs clean for the next container, or fail saying what still holds VRAM."""
    hygiene: HygieneSpec = config.hygiene

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    for round_number in range(1, hygiene.rounds + 1):
        if client is not None:
            for container in gpu_containers(client, config, hygiene.device_globs):
                say(f"stopping container {container.name} ({container.short_id}): stale CI container or GPU holder")
                container.stop(timeout=int(config.stop.stop_timeout_s))
                container.remove(force=True)
        holders = device_holders(hygiene.device_globs)
        if holders:
            for pid, paths in sorted(holders.items()):
                say(f"process {pid} ({_command(pid)}) holds {', '.join(sorted(paths))}: SIGTERM")
            left = terminate(sorted(holders), hygiene.term_grace_s, hygiene.kill_wait_s, say)
            if left:
                say(f"still alive after SIGKILL: {left}")
        reading = read(hygiene.tool_timeout_s)
        if reading is None:
            say("no VRAM tool answered (rocm-smi, nvidia-smi): device holders cleared, VRAM not checked")
            return
        tool, readings = reading
        busy = [r for r in readings if r.used_pct >= hygiene.vram_threshold_pct]
        if not busy and not device_holders(hygiene.device_globs):
            say(f"GPUs clean: {len(readings)} GPU(s) under {hygiene.vram_threshold_pct:g} % VRAM ({tool})")
            return
        if round_number < hygiene.rounds:
            say(f"round {round_number}/{hygiene.rounds}: {len(busy)} GPU(s) still at or over "
                f"{hygiene.vram_threshold_pct:g} % VRAM; checking again in {hygiene.interval_s:g} s")
            sleep(hygiene.interval_s)
    raise ToolFailure(f"VRAM still in use after {hygiene.rounds} rounds:\n" + vram_table(readings, hygiene.vram_threshold_pct, tool))
