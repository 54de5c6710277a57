"""Preflight: before any test runs, whether this machine is fit to run the job (config/health.yaml).

Checks, each fail / warn / off in config:
- gpus: the job's GPU count is present and every GPU is the arch's product;
- leaked_vram: VRAM in use on a GPU that no process holds, counting every PID namespace: the
  host's /proc (container processes included, with their PID inside their own namespace and their
  container), the GPU tool's own process list, and the engine's view of GPU containers;
- ecc: uncorrectable ECC/RAS errors, or a GPU the driver marks unhealthy (amd-smi; nvidia-smi);
- disk: free space under the Docker data root and the workspace;
- reachability: the registries and the Hugging Face endpoint answer within a short timeout.

A GPU with leaked VRAM or marked unhealthy may be reset (`reset.mode`: auto, warn, off), and only
when no process holds its device files; the report says what was reset and what the tools said
before and after. Everything that touches the machine comes in through `Host`, so the decisions
are tested on recorded tool outputs and on real processes holding stand-in device files."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import Enum

import requests

from ci import gpu_tools
from ci.arch import run_device_tool
from ci.config import DOCKER_ROOT_SOURCE, WORKSPACE_SOURCE, ArchSpec, Config, HealthConfig
from ci.gpu import parse_rocm_smi_vram
from ci.gpu_tools import Ecc, Gpu, GpuProcess, Vram
from ci.tags import api_base


class Status(str, Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    OFF = "off"


ICON = {Status.OK: "✅", Status.WARN: "⚠️", Status.FAIL: "❌", Status.OFF: "–"}


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    summary: str
    details: tuple[str, ...] = ()


@dataclass(frozen=True)
class Holder:
    """A process with a GPU device file open, wherever it lives."""

    pid: int  # as this host's /proc sees it
    paths: frozenset[str]
    command: str = "?"
    ns_pids: tuple[int, ...] = ()  # NSpid: its pid in each nested PID namespace (last: its own)
    pid_ns: str = ""  # the PID namespace (pid:[inode])
    container: str = ""  # a container id from its cgroup, when it has one

    def describe(self) -> str:
        inner = f", pid {self.ns_pids[-1]} in its namespace {self.pid_ns}" if len(self.ns_pids) > 1 else ""
        where = f", container {self.container[:12]}" if self.container else ""
        return f"pid {self.pid} ({self.command}{inner}{where})"


@dataclass(frozen=True)
class GpuState:
    """One reading of the GPUs through whichever tools answered."""

    tool: str  # "" when none answered
    gpus: tuple[Gpu, ...] = ()
    vram: tuple[Vram, ...] = ()
    ecc: tuple[Ecc, ...] | None = None  # None: no tool reported error counts
    processes: tuple[GpuProcess, ...] = ()
    notes: tuple[str, ...] = ()

    def vram_of(self, gpu: str) -> Vram | None:
        return next((v for v in self.vram if v.gpu == gpu), None)

    def ecc_of(self, gpu: str) -> Ecc | None:
        return next((e for e in self.ecc or () if e.gpu == gpu), None)

    def bus_of(self, gpu: str) -> str:
        return next((g.bus_id for g in self.gpus if g.index == gpu), "")


Runner = Callable[[Sequence[str], float], "str | None"]


def read_gpu_state(run: Runner, timeout_s: float) -> GpuState:
    """amd-smi first, rocm-smi where amd-smi is missing or silent, then nvidia-smi."""
    static = run(("amd-smi", "static", "--asic", "--bus", "--ras"), timeout_s)
    gpus = gpu_tools.amd_smi_gpus(static) if static else []
    gpus = [g for g in gpus if g.name]
    if gpus or run(("rocm-smi", "--showproductname"), timeout_s):
        return _read_amd(run, timeout_s, gpus, static or "")
    text = run(("nvidia-smi", f"--query-gpu={gpu_tools.NVIDIA_GPU_QUERY}", "--format=csv,noheader,nounits"), timeout_s)
    if text:
        listed, vram, ecc = gpu_tools.nvidia_gpus(text)
        apps = run(("nvidia-smi", f"--query-compute-apps={gpu_tools.NVIDIA_APPS_QUERY}", "--format=csv,noheader,nounits"),
                   timeout_s)
        return GpuState("nvidia-smi", tuple(listed), tuple(vram), tuple(ecc), tuple(gpu_tools.nvidia_apps(apps or "")))
    return GpuState("", notes=("no GPU tool answered (amd-smi, rocm-smi, nvidia-smi)",))


def _read_amd(run: Runner, timeout_s: float, gpus: list[Gpu], static: str) -> GpuState:
    notes = []
    tool = "amd-smi" if gpus else "rocm-smi"
    if not gpus:
        gpus = gpu_tools.rocm_smi_gpus(run(("rocm-smi", "--showproductname"), timeout_s) or "")
    metric = run(("amd-smi", "metric", "--mem-usage", "--ecc", "--ecc-blocks"), timeout_s) if tool == "amd-smi" else None
    vram = gpu_tools.amd_smi_vram(metric or "")
    if not vram and tool == "amd-smi":  # amd-smi's own table (ROCm 7: `amd-smi` with no subcommand)
        vram = gpu_tools.amd_smi_table(run(("amd-smi",), timeout_s) or "")[1]
    if not vram:
        vram = [Vram(r.gpu, r.used_bytes, r.total_bytes)
                for r in parse_rocm_smi_vram(run(("rocm-smi", "--showmeminfo", "vram"), timeout_s) or "")]
    ecc = gpu_tools.amd_smi_ecc(metric or "") if metric else None
    if ecc is not None:
        flags = gpu_tools.amd_smi_ras_flags(static)
        ecc = [replace(e, flags=e.flags + flags.get(e.gpu, ())) for e in ecc]
    else:
        notes.append("ECC not read: amd-smi did not answer (rocm-smi's RAS output is not parsed: no recorded sample of it)")
    listing = run(("amd-smi", "process"), timeout_s) if tool == "amd-smi" else None
    processes = gpu_tools.amd_smi_processes(listing) if listing else gpu_tools.rocm_smi_pids(
        run(("rocm-smi", "--showpids"), timeout_s) or "")
    return GpuState(tool, tuple(gpus), tuple(vram), tuple(ecc) if ecc is not None else None, tuple(processes), tuple(notes))


# --- who holds what -----------------------------------------------------------------------------
def _proc_text(proc: str, pid: str, name: str) -> str:
    try:
        with open(os.path.join(proc, pid, name), "rb") as handle:
            return handle.read().decode(errors="replace")
    except OSError:
        return ""


def scan_holders(paths: Iterable[str], proc: str = "/proc") -> list[Holder]:
    """Every process with one of `paths` open, in any PID namespace /proc shows (the host's /proc
    shows container processes too), with its pid inside its own namespace and its container."""
    wanted = {os.path.realpath(p) for p in paths}
    found: list[Holder] = []
    if not wanted:
        return found
    me = str(os.getpid())
    for pid in os.listdir(proc):
        if not pid.isdigit() or pid == me:
            continue
        try:
            fds = os.listdir(os.path.join(proc, pid, "fd"))
        except OSError:
            continue
        held = set()
        for fd in fds:
            try:
                target = os.readlink(os.path.join(proc, pid, "fd", fd))
            except OSError:
                continue
            if target in wanted:
                held.add(target)
        if not held:
            continue
        status = _proc_text(proc, pid, "status")
        nspid = re.search(r"^NSpid:\s*(.+)$", status, re.MULTILINE)
        try:
            namespace = os.readlink(os.path.join(proc, pid, "ns", "pid"))
        except OSError:
            namespace = ""
        container = re.search(r"(?:docker[-/]|containerd[-/]|cri-containerd-)([0-9a-f]{64})", _proc_text(proc, pid, "cgroup"))
        command = _proc_text(proc, pid, "cmdline").split("\0")[0] or "?"
        found.append(Holder(int(pid), frozenset(held), command,
                            tuple(int(n) for n in nspid.group(1).split()) if nspid else (), namespace,
                            container.group(1) if container else ""))
    return found


def gpu_device_nodes(bus_id: str, sys_root: str = "/") -> set[str]:
    """The device files sysfs says belong to the GPU at bus_id: its DRM render/card nodes (amdgpu)
    or /dev/nvidiaN from the NVIDIA driver's information file. Empty when it cannot tell."""
    if not bus_id:
        return set()
    nodes = {f"/dev/dri/{os.path.basename(p)}"
             for p in glob.glob(os.path.join(sys_root, "sys/bus/pci/devices", bus_id, "drm", "*"))
             if re.fullmatch(r"(renderD|card)\d+", os.path.basename(p))}
    info = _proc_text(os.path.join(sys_root, "proc/driver/nvidia/gpus"), bus_id, "information")
    minor = re.search(r"Device Minor:\s*(\d+)", info)
    if minor:
        nodes.add(f"/dev/nvidia{minor.group(1)}")
    return nodes


@dataclass(frozen=True)
class Host:
    """Everything the preflight asks of the machine; tests replace what they need."""

    run: Runner = run_device_tool
    proc: str = "/proc"
    sys_root: str = "/"
    engine_holders: Callable[[], list[tuple[str, int]]] = list  # (container, host pid) of GPU containers
    docker_root: Callable[[], str | None] = lambda: None
    disk_free: Callable[[str], int] = lambda path: shutil.disk_usage(path).free
    sleep: Callable[[float], None] = time.sleep
    reset_run: Callable[[Sequence[str], float], tuple[int, str]] = lambda argv, timeout: _run_reset(argv, timeout)


def _run_reset(argv: Sequence[str], timeout_s: float) -> tuple[int, str]:
    if shutil.which(argv[0]) is None:
        return 127, f"{argv[0]} not found"
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return 124, f"no answer within {timeout_s:g} s"
    return done.returncode, (done.stdout + done.stderr).strip()[-400:]


@dataclass(frozen=True)
class Owners:
    """Who may own each GPU: per-GPU holders, shared-device holders, the tool's processes, containers."""

    per_gpu: Mapping[str, tuple[str, ...]]

    def of(self, gpu: str) -> tuple[str, ...]:
        return self.per_gpu.get(gpu, ())


def owners(state: GpuState, health: HealthConfig, host: Host) -> Owners:
    nodes = {g.index: gpu_device_nodes(g.bus_id, host.sys_root) for g in state.gpus}
    known = set().union(*nodes.values()) if nodes else set()
    all_gpu = {p for pattern in health.gpu_devices for p in glob.glob(pattern)}
    shared = {p for pattern in health.shared_devices for p in glob.glob(pattern)}
    holders = scan_holders(known | all_gpu | shared, host.proc)
    engine = host.engine_holders()
    result: dict[str, tuple[str, ...]] = {}
    indexes = [g.index for g in state.gpus] or [v.gpu for v in state.vram]
    for index in indexes:
        mine = {os.path.realpath(n) for n in nodes.get(index, set())}
        names = []
        for holder in holders:
            if holder.paths & {os.path.realpath(s) for s in shared}:
                names.append(f"{holder.describe()} holds {', '.join(sorted(holder.paths))}")
            elif mine and holder.paths & mine:
                names.append(f"{holder.describe()} holds {', '.join(sorted(holder.paths & mine))}")
            elif not mine and holder.paths:  # sysfs cannot say whose node it is: it may be this GPU's
                names.append(f"{holder.describe()} holds {', '.join(sorted(holder.paths))}")
        bus = state.bus_of(index)
        for process in state.processes:
            if process.gpu in (index, "*") or (bus and process.gpu == bus):
                names.append(f"pid {process.pid} ({process.name or '?'}) on GPU {index} by {state.tool}")
        names += [f"container {name} (host pid {pid}) has GPU devices" for name, pid in engine]
        result[index] = tuple(dict.fromkeys(names))
    return Owners(result)


# --- checks ---------------------------------------------------------------------------------------
def _mode_status(mode: str, failed: bool, warned: bool = False) -> Status:
    if mode == "off":
        return Status.OFF
    if failed:
        return Status.FAIL if mode == "fail" else Status.WARN
    return Status.WARN if warned else Status.OK


def product_matches(name: str, product: str) -> bool:
    return re.search(rf"(?<![A-Za-z0-9]){re.escape(product)}(?![A-Za-z0-9])", name, re.IGNORECASE) is not None


def check_gpus(state: GpuState, arch: ArchSpec, wanted: int, mode: str) -> CheckResult:
    if mode == "off":
        return CheckResult("gpus", Status.OFF, "off in config")
    if not state.tool:
        return CheckResult("gpus", _mode_status(mode, True), f"no GPU tool answered: {wanted} {arch.product} wanted",
                           state.notes)
    wrong = [g for g in state.gpus if not product_matches(g.name, arch.product)]
    seen = f"{len(state.gpus)} GPU(s) ({state.tool}: {', '.join(sorted({g.name for g in state.gpus})) or 'no names'})"
    details = tuple(f"GPU {g.index}: {g.name or '?'} is not a {arch.product}" for g in wrong)
    if len(state.gpus) < wanted:
        return CheckResult("gpus", _mode_status(mode, True), f"{seen}; the job needs {wanted} {arch.product}", details)
    if wrong:
        return CheckResult("gpus", _mode_status(mode, True), f"{seen}; not all are {arch.product}", details)
    return CheckResult("gpus", Status.OK, f"{seen}; the job needs {wanted}")


def vram_verdicts(state: GpuState, health: HealthConfig, found: Owners) -> tuple[list[str], list[str]]:
    """(GPUs with leaked VRAM, lines); leaked = at or over the threshold with no owner anywhere."""
    leaked, lines = [], []
    for reading in state.vram:
        if reading.used_pct < health.vram_threshold_pct:
            continue
        used = f"GPU {reading.gpu}: {reading.used_bytes / 2**30:.1f} of {reading.total_bytes / 2**30:.1f} GiB ({reading.used_pct:.1f} %)"
        who = found.of(reading.gpu)
        if who:
            lines.append(f"{used} held by " + "; ".join(who))
        else:
            leaked.append(reading.gpu)
            lines.append(f"{used} with no owning process in any PID namespace: leaked")
    return leaked, lines


def check_vram(state: GpuState, health: HealthConfig, found: Owners) -> tuple[CheckResult, list[str]]:
    mode = health.checks.leaked_vram
    if mode == "off":
        return CheckResult("leaked VRAM", Status.OFF, "off in config"), []
    if not state.vram:
        return CheckResult("leaked VRAM", _mode_status(mode, False, True), "no tool reported VRAM", state.notes), []
    leaked, lines = vram_verdicts(state, health, found)
    held = len(lines) - len(leaked)
    summary = (f"{len(leaked)} GPU(s) with leaked VRAM" if leaked else
               f"{held} GPU(s) in use by a process (GPU hygiene stops them)" if held else
               f"{len(state.vram)} GPU(s) under {health.vram_threshold_pct:g} % VRAM")
    return CheckResult("leaked VRAM", _mode_status(mode, bool(leaked), bool(held)), summary, tuple(lines)), leaked


def ecc_verdicts(ecc: Sequence[Ecc], health: HealthConfig) -> tuple[list[str], list[str], list[str]]:
    """(unhealthy GPUs, GPUs to warn about, lines)."""
    bad, warn, lines = [], [], []
    for counts in ecc:
        reasons = list(counts.flags)
        if counts.uncorrectable is not None and counts.uncorrectable > health.max_uncorrectable:
            reasons.append(f"{counts.uncorrectable} uncorrectable ECC error(s)")
        blocks = ", ".join(f"{b} {c}/{u}" for b, (c, u) in counts.blocks.items() if (c or u))
        if reasons:
            bad.append(counts.gpu)
            lines.append(f"GPU {counts.gpu}: " + "; ".join(reasons) + (f" (blocks, correctable/uncorrectable: {blocks})" if blocks else ""))
        elif counts.correctable is not None and counts.correctable > health.warn_correctable:
            warn.append(counts.gpu)
            lines.append(f"GPU {counts.gpu}: {counts.correctable} correctable ECC error(s)" + (f" ({blocks})" if blocks else ""))
        elif counts.correctable:
            lines.append(f"GPU {counts.gpu}: {counts.correctable} correctable ECC error(s), under {health.warn_correctable}"
                         + (f" ({blocks})" if blocks else ""))
    return bad, warn, lines


def check_ecc(state: GpuState, health: HealthConfig) -> tuple[CheckResult, list[str]]:
    mode = health.checks.ecc
    if mode == "off":
        return CheckResult("ECC/RAS", Status.OFF, "off in config"), []
    if state.ecc is None:
        return CheckResult("ECC/RAS", _mode_status(mode, False, True), "not read", state.notes), []
    bad, warn, lines = ecc_verdicts(state.ecc, health)
    summary = (f"{len(bad)} GPU(s) unhealthy" if bad else f"{len(warn)} GPU(s) with many correctable errors" if warn
               else f"{len(state.ecc)} GPU(s) without uncorrectable errors ({state.tool})")
    return CheckResult("ECC/RAS", _mode_status(mode, bool(bad), bool(warn)), summary, tuple(lines)), bad


def check_disk(health: HealthConfig, workspace: str, host: Host) -> CheckResult:
    mode = health.checks.disk
    if mode == "off":
        return CheckResult("disk", Status.OFF, "off in config")
    lines, short = [], 0
    for rule in health.disk:
        path = {DOCKER_ROOT_SOURCE: host.docker_root() or health.docker_root, WORKSPACE_SOURCE: workspace}.get(rule.path, rule.path)
        probe = path
        while probe and not os.path.exists(probe):  # a data root not made yet: the disk it will be on
            probe = os.path.dirname(probe.rstrip("/")) or "/"
        try:
            free = host.disk_free(probe)
        except OSError as exc:
            short += 1
            lines.append(f"{path}: cannot read free space ({exc.strerror})")
            continue
        ok = free >= rule.min_free_gib * 2**30
        short += not ok
        lines.append(f"{path}: {free / 2**30:.1f} GiB free, {'at least' if ok else 'under'} {rule.min_free_gib:g} GiB")
    return CheckResult("disk", _mode_status(mode, short > 0), f"{len(lines) - short}/{len(lines)} location(s) with room",
                       tuple(lines))


def endpoints(config: Config, env: Mapping[str, str]) -> list[tuple[str, str]]:
    """(name, url): the public registry, the LAN mirror when set, and config's endpoints."""
    found = [(f"registry {config.images.registries.public}", api_base(config.images.registries.public) + "/v2/")]
    if config.images.registries.lan:
        found.append((f"LAN registry {config.images.registries.lan}", api_base(config.images.registries.lan) + "/v2/"))
    for endpoint in config.health.endpoints:
        url = (env.get("HF_ENDPOINT") if endpoint.name == "huggingface" else None) or endpoint.url
        found.append((endpoint.name, url))
    return found


def reach(url: str, timeout_s: float) -> str | None:
    """None when any HTTP answer came back in time (401 and 404 included); else why not."""
    try:
        requests.get(url, timeout=timeout_s, allow_redirects=False, stream=True).close()
    except requests.Timeout:
        return f"no answer within {timeout_s:g} s"
    except requests.ConnectionError as exc:
        text = str(exc)
        return "connection refused" if "refused" in text.lower() else f"cannot connect ({text[:120]})"
    except requests.RequestException as exc:
        return f"{type(exc).__name__}: {str(exc)[:120]}"
    return None


def check_reachability(config: Config, env: Mapping[str, str], probe=reach) -> CheckResult:
    health = config.health
    mode = health.checks.reachability
    if mode == "off":
        return CheckResult("reachability", Status.OFF, "off in config")
    lines, down = [], 0
    for name, url in endpoints(config, env):
        started = time.monotonic()
        why = probe(url, health.reachability_timeout_s)
        down += why is not None
        lines.append(f"{name} ({url}): " + (why or f"answered in {time.monotonic() - started:.2f} s"))
    return CheckResult("reachability", _mode_status(mode, down > 0), f"{len(lines) - down}/{len(lines)} endpoint(s) answered",
                       tuple(lines))


# --- guarded reset ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ResetRecord:
    gpu: str
    why: str
    action: str  # reset | would reset | not reset
    outcome: str
    before: str
    after: str = ""


def _describe(state: GpuState, gpu: str) -> str:
    vram, ecc = state.vram_of(gpu), state.ecc_of(gpu)
    parts = [f"VRAM {vram.used_bytes / 2**30:.1f}/{vram.total_bytes / 2**30:.1f} GiB ({vram.used_pct:.1f} %)" if vram else "VRAM ?"]
    if ecc is not None:
        parts.append(f"ECC {ecc.correctable if ecc.correctable is not None else '?'} correctable, "
                     f"{ecc.uncorrectable if ecc.uncorrectable is not None else '?'} uncorrectable"
                     + (f", {', '.join(ecc.flags)}" if ecc.flags else ""))
    return "; ".join(parts)


def guarded_reset(state: GpuState, why: Mapping[str, str], health: HealthConfig, host: Host,
                  found: Owners) -> tuple[list[ResetRecord], GpuState]:
    """Reset each GPU in `why` that no process holds (auto), or say what would be done (warn)."""
    policy = health.reset
    records: list[ResetRecord] = []
    if policy.mode == "off" or not why:
        return records, state
    did_reset = False
    for gpu, reason in why.items():
        before = _describe(state, gpu)
        held = found.of(gpu)
        if held:
            records.append(ResetRecord(gpu, reason, "not reset", "held by " + "; ".join(held), before))
            continue
        argv = policy.commands.get(state.tool)
        if argv is None:
            records.append(ResetRecord(gpu, reason, "not reset", f"no reset command for {state.tool or 'this machine'}", before))
            continue
        argv = tuple(a.replace("{gpu}", gpu) for a in argv)
        if policy.mode == "warn":
            records.append(ResetRecord(gpu, reason, "would reset", f"`{' '.join(argv)}` (reset.mode warn)", before))
            continue
        code, output = host.reset_run(argv, policy.timeout_s)
        did_reset = did_reset or code == 0
        records.append(ResetRecord(gpu, reason, "reset", f"`{' '.join(argv)}` exited {code}" + (f": {output}" if code and output else ""),
                                   before))
    if not did_reset:
        return records, state
    host.sleep(policy.settle_s)
    after = read_gpu_state(host.run, health.tool_timeout_s)
    return [replace(r, after=_describe(after, r.gpu)) if r.action == "reset" else r for r in records], after


# --- the whole preflight -----------------------------------------------------------------------------
@dataclass(frozen=True)
class PreflightReport:
    checks: tuple[CheckResult, ...]
    resets: tuple[ResetRecord, ...] = ()
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(c.status is not Status.FAIL for c in self.checks)

    @property
    def failure(self) -> str:
        failed = [c for c in self.checks if c.status is Status.FAIL]
        return "; ".join(f"{c.name}: {c.summary}" for c in failed)

    def lines(self) -> list[str]:
        out = [f"preflight {c.name}: {c.status.value.upper()}: {c.summary}" + "".join(f"\n  {d}" for d in c.details)
               for c in self.checks]
        out += [f"preflight reset GPU {r.gpu} ({r.why}): {r.action}: {r.outcome}; before: {r.before}"
                + (f"; after: {r.after}" if r.after else "") for r in self.resets]
        return out

    def markdown(self) -> str:
        rows = ["| | check | result | what it saw |", "|---|---|---|---|"]
        for c in self.checks:
            seen = "<br>".join([c.summary, *c.details]).replace("|", "/")
            rows.append(f"| {ICON[c.status]} | {c.name} | {c.status.value} | {seen} |")
        head = "OK" if self.ok else "**INFRASTRUCTURE FAILURE**"
        parts = [f"### Preflight: {head} in {self.seconds:.1f} s", "", *rows]
        if self.resets:
            parts += ["", "GPU reset:", "", "| GPU | why | action | outcome | before | after |", "|---|---|---|---|---|---|",
                      *[f"| {r.gpu} | {r.why} | {r.action} | {r.outcome.replace('|', '/')} | {r.before} | {r.after or '-'} |"
                        for r in self.resets]]
        return "\n".join(parts) + "\n"


def run_preflight(config: Config, arch: ArchSpec, gpus: int, workspace: str, env: Mapping[str, str],
                  host: Host = Host(), probe=reach) -> PreflightReport:
    """Every check of config/health.yaml, the guarded reset, and the checks again after a reset."""
    health = config.health
    started = time.monotonic()
    state = read_gpu_state(host.run, health.tool_timeout_s)
    found = owners(state, health, host)
    vram_check, leaked = check_vram(state, health, found)
    ecc_check, unhealthy = check_ecc(state, health)
    why = {g: "leaked VRAM" for g in leaked}
    for g in unhealthy:
        why[g] = (why[g] + ", " if g in why else "") + "unhealthy (ECC/RAS)"
    resets, after = guarded_reset(state, why, health, host, found)
    if after is not state:  # judge the machine as it is now
        found = owners(after, health, host)
        vram_check, _ = check_vram(after, health, found)
        ecc_check, _ = check_ecc(after, health)
        state = after
    checks = (check_gpus(state, arch, gpus, health.checks.gpus), vram_check, ecc_check,
              check_disk(health, workspace, host), check_reachability(config, env, probe))
    return PreflightReport(checks, tuple(resets), time.monotonic() - started)
