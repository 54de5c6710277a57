"""When a pull has stopped helping (pure, no Docker): the no-progress deadline, and for the LAN
mirror a predicted time-to-image over budget, held for a jittered span, while the public registry
would plainly be faster. Fed with (time, bytes) samples, so recorded traces replay exactly."""

from __future__ import annotations

import math
import statistics
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

from ci.progress import human_bytes

# A window's span measured between progress events may fall short of window_s by float rounding
# alone; anything within this fraction counts as a whole window (not a policy: a tolerance).
_WHOLE = 0.999


class Leave(str, Enum):
    """Why a pull is abandoned; the value is the word logs show."""

    STALLED = "stalled"  # no progress within the deadline: nothing will come
    OVER_BUDGET = "over-budget"  # bytes come, but too slowly, and public would plainly be faster

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Verdict:
    leave: Leave
    reason: str


@dataclass(frozen=True)
class Budget:
    """The predicted-time rule for one LAN attempt. `hold_s` already holds this job's jitter."""

    budget_s: float  # the image should be in place this long after `started`
    total_bytes: int | None  # the image's download size (manifest); None: judged only once the daemon says
    public_bytes_per_s: float
    faster_by: float
    hold_s: float
    # Each layer's size by the id the daemon's progress events give it (the blob digest's first
    # 12 hex): the layers this engine already has ("Already exists") are not to be downloaded.
    layer_bytes: Mapping[str, int] = field(default_factory=dict)


@dataclass
class Watchdog:
    """Decides when a pull has stopped helping: no progress within `idle_s`; or, with a budget,
    a predicted finish (at the rate kept over the last `window_s`) later than the budget while
    public would be `faster_by` times faster, for `hold_s` without a break."""

    idle_s: float
    window_s: float
    started: float
    budget: Budget | None = None
    _samples: list[tuple[float, int]] = field(default_factory=list)  # (time, bytes downloaded)
    _last_progress: float = 0.0
    _best: int = 0
    _downloaded: int = 0
    _total: int | None = None
    _cached: int = 0  # bytes of the image's layers the engine already had
    _over_since: float | None = None

    def __post_init__(self) -> None:
        self._last_progress = self.started
        self._samples.append((self.started, 0))
        self._total = self.budget.total_bytes if self.budget else None

    def observe(self, now: float, done_bytes: int, downloaded: int | None = None, total: int | None = None,
                present: Collection[str] = ()) -> None:
        """`done_bytes`: any progress (download and extraction); `downloaded`: bytes of the image's
        download so far (defaults to done_bytes); `total`: the daemon's total, used when the
        manifest gave none; `present`: ids of layers the engine already had (not downloaded)."""
        if present and self.budget is not None:
            self._cached = sum(self.budget.layer_bytes.get(layer, 0) for layer in present)
        if done_bytes > self._best:
            self._best = done_bytes
            self._last_progress = now
        self._downloaded = max(self._downloaded, done_bytes if downloaded is None else downloaded)
        if self._total is None and total:
            self._total = total
        self._samples.append((now, self._downloaded))
        while len(self._samples) > 2 and self._samples[1][0] <= now - self.window_s:
            self._samples.pop(0)

    def rate(self, now: float) -> float | None:
        """Bytes/s kept over the last window, once a whole window has passed."""
        since, base = self._samples[0]
        span = now - since
        if now - self.started < self.window_s or span < self.window_s * _WHOLE:
            return None
        return (self._downloaded - base) / span

    def predicted_finish(self, now: float) -> float | None:
        """Seconds from the start until the image is in place at the kept rate (inf: no rate)."""
        rate, total = self.rate(now), self._total
        if rate is None or total is None:
            return None
        remaining = max(total - self._cached - self._downloaded, 0)
        return (now - self.started) + (remaining / rate if rate > 0 else (0.0 if remaining == 0 else math.inf))

    def verdict(self, now: float) -> Verdict | None:
        if now - self._last_progress >= self.idle_s:
            return Verdict(Leave.STALLED, f"no progress for {now - self._last_progress:.1f} s (deadline {self.idle_s:g} s)")
        if self.budget is None:
            return None
        finish, rate = self.predicted_finish(now), self.rate(now)
        plan = self.budget
        over = (finish is not None and rate is not None and finish > plan.budget_s
                and plan.public_bytes_per_s >= plan.faster_by * rate)
        if not over:
            self._over_since = None  # hysteresis: a verdict that lapses starts again from zero
            return None
        if self._over_since is None:
            self._over_since = now
        if now - self._over_since < plan.hold_s:
            return None
        assert rate is not None and finish is not None
        return Verdict(Leave.OVER_BUDGET,
                       f"predicted time-to-image {_seconds(finish)} at {human_bytes(rate)}/s over {self.window_s:g} s "
                       f"(budget {plan.budget_s:g} s; public estimate {human_bytes(plan.public_bytes_per_s)}/s), "
                       f"held {now - self._over_since:.1f} s")


def _seconds(value: float) -> str:
    return "never" if math.isinf(value) else f"{value:.0f} s"


def public_estimate(recorded: Sequence[float], configured: float) -> float:
    """The public registry's expected rate: the median of this host's recorded rates, or the
    configured estimate before any were recorded."""
    kept = [rate for rate in recorded if rate > 0 and math.isfinite(rate)]
    return statistics.median(kept) if kept else configured


def with_rate(rates: Mapping[str, Sequence[float]], registry: str, rate: float, kept: int) -> dict[str, list[float]]:
    """The recorded rates with `rate` added for `registry`, the newest `kept` per registry."""
    updated = {name: list(values) for name, values in rates.items()}
    updated[registry] = ([*updated.get(registry, []), rate])[-kept:]
    return updated


@dataclass(frozen=True)
class ImageSize:
    """An image's download size from its manifest, and each layer's, by the daemon's layer id."""

    total: int  # config plus layers
    layers: Mapping[str, int]


def layer_id(digest: str) -> str:
    """The id the daemon's progress events give a layer: its digest's first 12 hex digits."""
    return digest.partition(":")[2][:12]


def manifest_size(manifest: Mapping, platform: tuple[str, str] = ("linux", "amd64")) -> ImageSize | str:
    """The download size of an image manifest (config plus layers), or, for an index / manifest
    list, the digest (a str) of the manifest for `platform` to fetch next."""
    entries = manifest.get("manifests")
    if isinstance(entries, list):
        for entry in entries:
            wanted = entry.get("platform") or {}
            if (wanted.get("os"), wanted.get("architecture")) == platform:
                return str(entry["digest"])
        raise ValueError(f"no {'/'.join(platform)} manifest in the index")
    layers = manifest.get("layers")
    if not isinstance(layers, list):
        raise ValueError("not an image manifest (no layers)")
    sizes = {layer_id(str(layer.get("digest") or "")): int(layer.get("size") or 0) for layer in layers}
    sizes.pop("", None)
    total = sum(int(layer.get("size") or 0) for layer in layers) + int((manifest.get("config") or {}).get("size") or 0)
    return ImageSize(total, sizes)
