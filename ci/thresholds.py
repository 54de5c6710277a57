"""Performance bounds for test code, per arch, from config/thresholds.yaml; every check is
recorded so the stage report can show the headroom (a relaxed MI300 bound stays visible).

    from ci.thresholds import check
    check("test_score_api_batch_scaling", "avg_latency_ms", res["avg_latency_ms"], batch_size=25)
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ci.config import ARCH_ENV, BoundValue, Config, MetricBound, load_config
from ci.errors import UserError

AMD_ENV = "SGLANG_IS_IN_CI_AMD"
LOG_ENV = "SGL_CI_THRESHOLD_LOG"  # JSON lines, read back by the stage report


@dataclass(frozen=True)
class Bound:
    test: str
    metric: str
    kind: str  # min | max
    value: float  # the bound in force
    default_value: float  # the bound outside AMD CI, for comparison
    unit: str
    source: str  # which entry applied: an arch name, "amd" or "default"
    params: Mapping[str, Any]

    def holds(self, measured: float) -> bool:
        return measured >= self.value if self.kind == "min" else measured <= self.value

    def margin_pct(self, measured: float) -> float:
        """How far inside the bound (positive) or outside (negative), in % of the bound."""
        room = measured - self.value if self.kind == "min" else self.value - measured
        return 100.0 * room / abs(self.value) if self.value else float("inf")


def _pick(value: BoundValue, by: str | None, params: Mapping[str, Any], where: str) -> float:
    if not isinstance(value, Mapping):
        return float(value)
    key = params.get(by) if by else None
    if key is None:
        raise UserError(f"{where} is given per {by}: pass {by}=...")
    if key in value:
        return float(value[key])
    if "else" in value:
        return float(value["else"])
    raise UserError(f"{where}: no bound for {by}={key!r} (given: {', '.join(map(str, value))})")


def bound_for(config: Config, test: str, metric: str, arch: str | None, amd: bool, **params: Any) -> Bound:
    """The bound in force for this arch: arch entry > amd entry > default. Unknown names are errors."""
    if test not in config.thresholds:
        raise UserError(f"unknown threshold test {test!r} (known: {', '.join(config.thresholds)})")
    metrics = config.thresholds[test]
    if metric not in metrics:
        raise UserError(f"unknown metric {metric!r} for {test} (known: {', '.join(metrics)})")
    spec: MetricBound = metrics[metric]
    extra = set(params) - {spec.by}
    if extra:
        raise UserError(f"{test}.{metric} takes no parameter {', '.join(sorted(extra))}")
    where = f"{test}.{metric}"
    if arch and arch in spec.arch:
        chosen, source = spec.arch[arch], arch
    elif amd and spec.amd is not None:
        chosen, source = spec.amd, "amd"
    else:
        chosen, source = spec.default, "default"
    return Bound(test, metric, spec.kind, _pick(chosen, spec.by, params, where),
                 _pick(spec.default, spec.by, params, where), spec.unit, source, dict(params))


def _running(env: Mapping[str, str]) -> tuple[str | None, bool]:
    arch = env.get(ARCH_ENV) or None
    return arch, bool(arch) or env.get(AMD_ENV) == "1"


_CONFIG: Config | None = None


def _config() -> Config:
    global _CONFIG
    if _CONFIG is None:
        _CONFIG = load_config()
    return _CONFIG


def threshold(test: str, metric: str, **params: Any) -> float:
    """The bound in force for the running arch (SGL_CI_ARCH; SGLANG_IS_IN_CI_AMD=1 means AMD)."""
    arch, amd = _running(os.environ)
    return bound_for(_config(), test, metric, arch, amd, **params).value


@dataclass(frozen=True)
class Checked:
    bound: Bound
    measured: float
    ok: bool
    margin_pct: float


def check(test: str, metric: str, measured: float, **params: Any) -> Checked:
    """Compare `measured` with the bound in force, record it, and fail the test when outside."""
    arch, amd = _running(os.environ)
    bound = bound_for(_config(), test, metric, arch, amd, **params)
    result = Checked(bound, float(measured), bound.holds(measured), bound.margin_pct(measured))
    record(result, os.environ.get(LOG_ENV))
    if not result.ok:
        sign = ">=" if bound.kind == "min" else "<="
        raise AssertionError(f"{test}.{metric}{_params(bound.params)} = {measured:g} {bound.unit}, "
                             f"must be {sign} {bound.value:g} ({bound.source} bound)")
    return result


def record(result: Checked, path: str | None) -> None:
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps({"bound": asdict(result.bound), "measured": result.measured,
                                  "ok": result.ok, "margin_pct": result.margin_pct}) + "\n")


def read_records(path: Path) -> list[Checked]:
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            data = json.loads(line)
            records.append(Checked(Bound(**data["bound"]), data["measured"], data["ok"], data["margin_pct"]))
    return records


def _params(params: Mapping[str, Any]) -> str:
    return "[" + ",".join(f"{k}={v}" for k, v in params.items()) + "]" if params else ""


def headroom_markdown(records: list[Checked]) -> str:
    """The stage report's table: measured against the bound in force and the default bound."""
    if not records:
        return ""
    lines = ["| test | metric | measured | bound in force | default bound | margin |", "|---|---|---|---|---|---|"]
    for r in records:
        b = r.bound
        sign = ">=" if b.kind == "min" else "<="
        relaxed = " (relaxed)" if b.value != b.default_value else ""
        flag = "" if r.ok else " **FAIL**"
        lines.append(f"| {b.test} | {b.metric}{_params(b.params)} | {r.measured:g} {b.unit} | {sign} {b.value:g} ({b.source}){relaxed} "
                     f"| {sign} {b.default_value:g} | {r.margin_pct:+.1f} %{flag} |")
    return "\n".join(lines)
