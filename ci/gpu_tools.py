"""What the GPU tools say, as data: pure parsers of amd-smi, rocm-smi and nvidia-smi text output
(no process is run here). Each parser is tested on recorded outputs of the real tools; see
tests/fixtures/devices/README.md for where each recording came from, and which outputs have no
public recording (those paths are parsed by the same code but are not claimed as tested on one).

Shapes read:
- amd-smi's indented text (`amd-smi static`, `amd-smi metric`, `amd-smi process`): "GPU: N" blocks
  of "KEY: value" lines nested by indentation, "N/A" for unsupported values;
- amd-smi's default table (two rows per GPU, "used/total MB" in the second);
- rocm-smi's "GPU[N] : Label: value" lines, its --csv tables, its --showpids table;
- nvidia-smi's --query-gpu / --query-compute-apps CSV (noheader, nounits)."""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

MIB = 2**20


@dataclass(frozen=True)
class Gpu:
    """One GPU as a tool lists it."""

    index: str
    name: str = ""
    bus_id: str = ""  # PCI address, normalized: dddd:bb:dd.f, lower case


@dataclass(frozen=True)
class Vram:
    gpu: str
    used_bytes: int
    total_bytes: int

    @property
    def used_pct(self) -> float:
        return 100.0 * self.used_bytes / self.total_bytes if self.total_bytes else 0.0


@dataclass(frozen=True)
class Ecc:
    """Error counts of one GPU; None where the tool says N/A (unsupported)."""

    gpu: str
    correctable: int | None = None
    uncorrectable: int | None = None
    deferred: int | None = None
    blocks: Mapping[str, tuple[int | None, int | None]] = field(default_factory=dict)  # block -> (corr., uncorr.)
    flags: tuple[str, ...] = ()  # what the driver says is wrong beyond counts (pending retirement, ...)


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    gpu: str  # an index or a bus id, as the tool reports it
    used_bytes: int | None = None
    name: str = ""


def normalize_bus_id(text: str) -> str:
    """00000000:18:00.0 (nvidia-smi) and 0000:18:00.0 (amd-smi, sysfs) are the same device."""
    found = re.search(r"([0-9A-Fa-f]{4,8}):([0-9A-Fa-f]{2}):([0-9A-Fa-f]{2})\.([0-7])", text)
    if not found:
        return ""
    domain, bus, device, function = found.groups()
    return f"{int(domain, 16):04x}:{bus.lower()}:{device.lower()}.{function}"


def _count(value: str | None) -> int | None:
    if value is None:
        return None
    value = value.strip()
    return int(value) if re.fullmatch(r"\d+", value) else None


def _mb(value: str | None) -> int | None:
    found = re.fullmatch(r"\s*(\d+)\s*MB\s*", value or "")
    return int(found.group(1)) * MIB if found else None


# --- amd-smi: indented text ----------------------------------------------------------------------
def parse_amd_smi_tree(text: str, default_gpu: str = "0") -> dict[str, dict[str, str]]:
    """amd-smi's text output as {gpu: {"SECTION/SUB/KEY": value}}. Lines before any "GPU: N" (a
    fragment such as `amd-smi metric -g 0 | grep -A3 UMC`) belong to `default_gpu`."""
    gpus: dict[str, dict[str, str]] = {}
    gpu = default_gpu
    stack: list[tuple[int, str]] = []
    for raw in text.splitlines():
        if not raw.strip() or ":" not in raw:
            continue
        indent = len(raw) - len(raw.lstrip(" "))
        key, _, value = raw.strip().partition(":")
        key, value = key.strip(), value.strip()
        if indent == 0 and key == "GPU" and value.isdigit():
            gpu, stack = value, []
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = "/".join([*(name for _, name in stack), key])
        if value:
            gpus.setdefault(gpu, {})[path] = value
        else:
            stack.append((indent, key))
            gpus.setdefault(gpu, {})
    return gpus


def _find(values: Mapping[str, str], *suffixes: str) -> str | None:
    for suffix in suffixes:
        for path, value in values.items():
            if path == suffix or path.endswith("/" + suffix):
                return value
    return None


def amd_smi_gpus(text: str) -> list[Gpu]:
    """`amd-smi static` (--asic --bus): each GPU's market name and PCI address."""
    return [Gpu(gpu, _find(values, "ASIC/MARKET_NAME", "MARKET_NAME") or "", normalize_bus_id(_find(values, "BDF") or ""))
            for gpu, values in parse_amd_smi_tree(text).items()]


def amd_smi_ecc(text: str, default_gpu: str = "0") -> list[Ecc]:
    """`amd-smi metric --ecc --ecc-blocks` (or a fragment of it): totals and per-block counts."""
    found = []
    for gpu, values in parse_amd_smi_tree(text, default_gpu).items():
        blocks: dict[str, tuple[int | None, int | None]] = {}
        for path, value in values.items():
            parts = path.split("/")
            if len(parts) >= 2 and parts[-1] == "CORRECTABLE_COUNT":
                block = parts[-2]
                blocks[block] = (_count(value), _count(values.get("/".join([*parts[:-1], "UNCORRECTABLE_COUNT"]))))
        totals = [_count(_find(values, f"ECC/TOTAL_{kind}_COUNT")) for kind in ("CORRECTABLE", "UNCORRECTABLE", "DEFERRED")]
        if blocks or any(t is not None for t in totals) or _find(values, "ECC/TOTAL_CORRECTABLE_COUNT"):
            if totals[0] is None and blocks:  # a per-block listing only: its sums are the totals
                totals[0] = sum(c or 0 for c, _ in blocks.values())
                totals[1] = sum(u or 0 for _, u in blocks.values())
            found.append(Ecc(gpu, totals[0], totals[1], totals[2], blocks))
    return found


def amd_smi_ras_flags(text: str) -> dict[str, tuple[str, ...]]:
    """`amd-smi static --ras`: what marks a GPU unhealthy there (the bad-page threshold exceeded)."""
    flags: dict[str, tuple[str, ...]] = {}
    for gpu, values in parse_amd_smi_tree(text).items():
        exceeded = (_find(values, "RAS/BAD_PAGE_THRESHOLD_EXCEEDED") or "").strip().upper()
        flags[gpu] = ("bad page threshold exceeded",) if exceeded in ("TRUE", "YES", "1") else ()
    return flags


def amd_smi_vram(text: str) -> list[Vram]:
    """`amd-smi metric --mem-usage`: MEM_USAGE/USED_VRAM and TOTAL_VRAM (MB)."""
    found = []
    for gpu, values in parse_amd_smi_tree(text).items():
        used, total = _mb(_find(values, "MEM_USAGE/USED_VRAM")), _mb(_find(values, "MEM_USAGE/TOTAL_VRAM"))
        if used is not None and total:
            found.append(Vram(gpu, used, total))
    return found


_TABLE_FIRST = re.compile(r"^\|\s*([0-9A-Fa-f]{4}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7])\s+(.+?)\s*\|")
_TABLE_SECOND = re.compile(r"^\|\s*(\d+)\s+.*\|\s*.*?(\d+)/(\d+)\s*MB\s*\|\s*$")


def amd_smi_table(text: str) -> tuple[list[Gpu], list[Vram]]:
    """`amd-smi` with no subcommand (its table): per GPU a row with the PCI address and name, then
    one with the index and "used/total MB"."""
    gpus, vram = [], []
    pending: tuple[str, str] | None = None
    for line in text.splitlines():
        first = _TABLE_FIRST.match(line)
        if first:
            pending = (normalize_bus_id(first.group(1)), first.group(2))
            continue
        second = _TABLE_SECOND.match(line)
        if second and pending:
            index = second.group(1)
            gpus.append(Gpu(index, pending[1], pending[0]))
            vram.append(Vram(index, int(second.group(2)) * MIB, int(second.group(3)) * MIB))
            pending = None
    return gpus, vram


def amd_smi_processes(text: str) -> list[GpuProcess]:
    """`amd-smi process`: PROCESS_INFO blocks (NAME, PID, MEM_USAGE/VRAM_MEM); "No running processes"."""
    found = []
    for gpu, values in parse_amd_smi_tree(text).items():
        by_process: dict[str, dict[str, str]] = {}
        for path, value in values.items():
            parts = path.split("/")
            if len(parts) >= 2 and parts[0] == "PROCESS_INFO":
                by_process.setdefault(parts[1], {})["/".join(parts[2:])] = value
        for info in by_process.values():
            pid = _count(info.get("PID"))
            if pid is not None:
                used = _find(info, "MEM_USAGE/VRAM_MEM", "VRAM_MEM")
                amount = re.match(r"\s*([\d.]+)\s*(B|KB|MB|GB)", used or "")
                size = int(float(amount.group(1)) * {"B": 1, "KB": 2**10, "MB": MIB, "GB": 2**30}[amount.group(2)]) if amount else None
                found.append(GpuProcess(pid, gpu, size, info.get("NAME", "")))
    return found


# --- rocm-smi ----------------------------------------------------------------------------------
def rocm_smi_gpus(text: str) -> list[Gpu]:
    """`rocm-smi --showproductname` / `-i`: "GPU[N] : Card Series|Device Name: ..." lines, or the
    --csv form (device,Card series,...)."""
    names: dict[str, str] = {}
    for gpu, label, value in re.findall(r"GPU\[(\d+)\]\s*:\s*(Card [Ss]eries|Device Name|Card SKU)\s*:\s*(.+)", text):
        if label != "Card SKU" or gpu not in names:
            names[gpu] = value.strip()
    if not names and text.lstrip().startswith("device,"):
        for row in csv.DictReader(text.strip().splitlines()):
            card = re.sub(r"\D", "", row.get("device", ""))
            series = row.get("Card series") or row.get("Card Series") or ""
            if card:
                names[card] = series
    return [Gpu(g, n) for g, n in sorted(names.items(), key=lambda item: int(item[0]))]


def rocm_smi_csv_vram(text: str) -> list[Vram]:
    """`rocm-smi --showmeminfo vram --csv` (alone or with other columns)."""
    found = []
    for row in csv.DictReader(text.strip().splitlines()):
        total, used = row.get("VRAM Total Memory (B)"), row.get("VRAM Total Used Memory (B)")
        card = re.sub(r"\D", "", row.get("device") or "")
        if card and _count(total) and _count(used) is not None:
            found.append(Vram(card, int(used), int(total)))
    return found


def rocm_smi_pids(text: str) -> list[GpuProcess]:
    """`rocm-smi --showpids`: the KFD process table (PID, name, GPU(s), VRAM used); the legacy
    "PID: n" lines too. A process on several GPUs is one entry per GPU."""
    found = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("\t")]
        if len(cells) >= 4 and cells[0].isdigit():
            for gpu in re.findall(r"\d+", cells[2]):
                found.append(GpuProcess(int(cells[0]), gpu, _count(cells[3]), cells[1]))
        else:
            legacy = re.match(r"^PID:\s*(\d+)", line.strip())
            if legacy:
                found.append(GpuProcess(int(legacy.group(1)), "*"))
    return found


# --- nvidia-smi --------------------------------------------------------------------------------
NVIDIA_GPU_QUERY = ("index,name,pci.bus_id,memory.used,memory.total,ecc.errors.corrected.volatile.total,"
                    "ecc.errors.uncorrected.volatile.total,retired_pages.pending,remapped_rows.pending,"
                    "remapped_rows.failure")
NVIDIA_APPS_QUERY = "pid,gpu_bus_id,used_memory,process_name"


def _csv_rows(text: str) -> list[list[str]]:
    return [[cell.strip() for cell in row] for row in csv.reader(text.splitlines()) if row and any(c.strip() for c in row)]


def nvidia_gpus(text: str) -> tuple[list[Gpu], list[Vram], list[Ecc]]:
    """`nvidia-smi --query-gpu=<NVIDIA_GPU_QUERY> --format=csv,noheader,nounits`. Counters a GPU
    does not support read "[N/A]" (None); a pending retirement or remap, or a failed remap, is a flag."""
    gpus, vram, ecc = [], [], []
    for row in _csv_rows(text):
        if len(row) < 5 or not row[0].isdigit():
            continue
        index, name, bus = row[0], row[1], normalize_bus_id(row[2])
        gpus.append(Gpu(index, name, bus))
        if row[3].isdigit() and row[4].isdigit():
            vram.append(Vram(index, int(row[3]) * MIB, int(row[4]) * MIB))
        extra = row[5:] + [""] * (10 - len(row))
        flags = tuple(what for what, value in (("retired pages pending", extra[2]), ("row remapping pending", extra[3]),
                                               ("row remapping failed", extra[4]))
                      if value.strip().lower() in ("yes", "1", "true"))
        ecc.append(Ecc(index, _count(extra[0]), _count(extra[1]), None, {}, flags))
    return gpus, vram, ecc


def nvidia_apps(text: str) -> list[GpuProcess]:
    """`nvidia-smi --query-compute-apps=<NVIDIA_APPS_QUERY> --format=csv,noheader,nounits`."""
    found = []
    for row in _csv_rows(text):
        if len(row) >= 3 and row[0].isdigit():
            used = int(row[2]) * MIB if row[2].isdigit() else None
            found.append(GpuProcess(int(row[0]), normalize_bus_id(row[1]), used, row[3] if len(row) > 3 else ""))
    return found
