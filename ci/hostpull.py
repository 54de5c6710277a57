"""What the pulling jobs of one host share, through flock'd files under the state dir: one pull
per (engine, image) at a time, a cap on concurrent public pulls, and the recorded rates per registry."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ci.pullpace import with_rate

RATES_FILE = "rates.json"


def _open_lock(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


@contextlib.contextmanager
def image_lock(state_dir: Path, engine_id: str, image: str, say: Callable[[str], None],
               clock: Callable[[], float] = time.monotonic) -> Iterator[float]:
    """Held while this job pulls `image` into the engine `engine_id`; another job of the host
    asking for the same waits here (the seconds waited are yielded), then finds the image local.
    The kernel drops a flock with its process, so a killed job never leaves it held."""
    key = hashlib.sha256(f"{engine_id}\0{image}".encode()).hexdigest()[:24]
    fd = _open_lock(state_dir / "locks" / f"{key}.lock")
    try:
        started = clock()
        if not _try_lock(fd):
            say(f"waiting for another job's pull of {image} into this engine")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield clock() - started
    finally:
        os.close(fd)  # releases the lock


@dataclass
class PublicSlot:
    index: int
    fd: int
    waited_s: float

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@dataclass(frozen=True)
class PublicSlots:
    """At most `count` public pulls at once on this host: slot files, each flock'd by its holder."""

    state_dir: Path
    count: int
    poll_s: float

    def try_take(self) -> PublicSlot | None:
        for index in range(self.count):
            fd = _open_lock(self.state_dir / "public-slots" / f"{index}.lock")
            if _try_lock(fd):
                return PublicSlot(index, fd, 0.0)
            os.close(fd)
        return None

    def take(self, say: Callable[[str], None], sleep: Callable[[float], None] = time.sleep,
             clock: Callable[[], float] = time.monotonic) -> PublicSlot:
        """A slot, waiting for one when all are held (said once)."""
        started = clock()
        slot = self.try_take()
        if slot is None:
            say(f"all {self.count} public pull slot(s) of this host are taken; waiting for one")
        while slot is None:
            sleep(self.poll_s)
            slot = self.try_take()
        slot.waited_s = clock() - started
        return slot


def read_rates(state_dir: Path) -> dict[str, list[float]]:
    """Recorded bytes/s per registry; an unreadable file counts as none recorded."""
    try:
        data = json.loads((state_dir / RATES_FILE).read_text())
        return {str(k): [float(x) for x in v] for k, v in data.items() if isinstance(v, list)}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}


def record_rate(state_dir: Path, registry: str, rate: float, kept: int) -> None:
    """Add one pull's rate, under a lock so concurrent jobs do not lose each other's; written
    to a temporary file and renamed, so a reader never sees half a file."""
    fd = _open_lock(state_dir / f"{RATES_FILE}.lock")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        updated = with_rate(read_rates(state_dir), registry, rate, kept)
        temporary = state_dir / f"{RATES_FILE}.{os.getpid()}"
        temporary.write_text(json.dumps(updated, indent=1, sort_keys=True))
        os.replace(temporary, state_dir / RATES_FILE)
    finally:
        os.close(fd)
