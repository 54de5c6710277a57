"""Which runner architecture this run is for: --arch, then RUNNER_ARCH, then the runner's name,
then the device itself (amd-smi / rocm-smi / rocminfo), else a clear error."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ci.config import ArchSpec, Config
from ci.errors import UserError

# The device tools, in the order they are asked; each prints a product name our parser reads.
DEVICE_TOOLS: tuple[tuple[str, ...], ...] = (
    ("amd-smi", "static", "--asic"),
    ("rocm-smi", "--showproductname"),
    ("rocminfo",),
)
# Field names under which the tools print the product ("AMD Instinct MI300X", ...). Board
# fields (amd-smi PRODUCT_NAME, "AMD Instinct MI350 OAM") are left out: they drop the X suffix.
_PRODUCT_LINE = re.compile(
    r"^\s*(?:GPU\[\d+\]\s*:\s*)?(?:MARKET_NAME|Marketing Name|Device Name|Card [Ss]eries)\s*:\s*(.+?)\s*$",
    re.MULTILINE,
)
_PRODUCT_TOKEN = re.compile(r"\bMI\d{3}[A-Z]?\b")
_GFX_TOKEN = re.compile(r"\bgfx9\d\d\b")


@dataclass(frozen=True)
class ArchResolution:
    arch: ArchSpec
    source: str  # how it was found, for the plan and the logs


@dataclass(frozen=True)
class DeviceReport:
    tool: str
    products: tuple[str, ...]  # e.g. ("MI300X",)
    gfx: tuple[str, ...]


def parse_device_output(tool: str, text: str) -> DeviceReport:
    """Read the Instinct product tokens and gfx targets from any of the tools' text output."""
    products: list[str] = []
    for name in _PRODUCT_LINE.findall(text):
        products += _PRODUCT_TOKEN.findall(name)
    # rocm-smi --csv prints the series in a column rather than behind a label.
    if not products and "Card series" in text:
        products = _PRODUCT_TOKEN.findall(text)
    return DeviceReport(tool, tuple(dict.fromkeys(products)), tuple(dict.fromkeys(_GFX_TOKEN.findall(text))))


def arch_from_device(config: Config, report: DeviceReport) -> ArchSpec:
    """Map a device report to one arch; an unknown or mixed product is an error, never a guess."""
    allowed = ", ".join(f"{a.name} ({a.product})" for a in config.arches.values())
    if report.products:
        matches = {a.name: a for a in config.arches.values() if a.product in report.products}
        unknown = [p for p in report.products if p not in {a.product for a in config.arches.values()}]
        if unknown or len(matches) != 1:
            raise UserError(
                f"{report.tool} reports {', '.join(report.products)}: not exactly one known product "
                f"(allowed: {allowed}); pass --arch"
            )
        return next(iter(matches.values()))
    by_gfx = [a for a in config.arches.values() if a.gfx in report.gfx]
    if len(by_gfx) == 1 and len(report.gfx) == 1:
        return by_gfx[0]
    if by_gfx:
        names = ", ".join(a.name for a in by_gfx)
        raise UserError(f"{report.tool} reports {', '.join(report.gfx)} but no product name; "
                        f"{names} share it; pass --arch")
    raise UserError(f"{report.tool} reports no known AMD Instinct GPU (allowed: {allowed}); pass --arch")


def arch_from_runner_name(config: Config, runner_name: str) -> ArchSpec | None:
    match = re.match(config.detection.runner_name_pattern, runner_name)
    if not match:
        return None
    token = match.group("token")
    for arch in config.arches.values():
        if token in (arch.runner_aliases or (arch.name,)):
            return arch
    return None


Runner = Callable[[Sequence[str], float], "str | None"]


def run_device_tool(argv: Sequence[str], timeout_s: float) -> str | None:
    """Run one device tool; None when it is missing, fails or hangs."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s, check=False)
    except (subprocess.TimeoutExpired, OSError):
        return None
    return done.stdout if done.returncode == 0 else None


def probe_device(config: Config, run: Runner = run_device_tool) -> DeviceReport | None:
    """Ask each device tool in turn; the first that names a product or gfx target answers."""
    for argv in DEVICE_TOOLS:
        text = run(argv, config.detection.tool_timeout_s)
        if text:
            report = parse_device_output(" ".join(argv), text)
            if report.products or report.gfx:
                return report
    return None


def resolve_arch(
    config: Config,
    flag: str | None = None,
    env: Mapping[str, str] | None = None,
    hostname: str | None = None,
    probe: Callable[[Config], DeviceReport | None] = probe_device,
) -> ArchResolution:
    """flag > RUNNER_ARCH > runner name (RUNNER_NAME, else hostname) > device > error."""
    env = {} if env is None else env
    if flag:
        return ArchResolution(config.arch(flag), "--arch")
    if env.get("RUNNER_ARCH"):
        try:
            return ArchResolution(config.arch(env["RUNNER_ARCH"]), "RUNNER_ARCH")
        except UserError:
            raise UserError(f"RUNNER_ARCH={env['RUNNER_ARCH']!r} is not a known arch "
                            f"(allowed: {', '.join(config.arches)})") from None
    runner_name = env.get("RUNNER_NAME") or hostname or socket.gethostname()
    found = arch_from_runner_name(config, runner_name)
    if found:
        origin = "RUNNER_NAME" if env.get("RUNNER_NAME") else "hostname"
        return ArchResolution(found, f"{origin} {runner_name}")
    report = probe(config)
    if report is not None:
        return ArchResolution(arch_from_device(config, report), f"device ({report.tool}: {', '.join(report.products or report.gfx)})")
    raise UserError(
        f"cannot tell the arch: no --arch, no RUNNER_ARCH, runner name {runner_name!r} names none, "
        f"and no amd-smi/rocm-smi/rocminfo answered; pass --arch (allowed: {', '.join(config.arches)})"
    )
