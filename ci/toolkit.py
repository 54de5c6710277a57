"""Where this toolkit lives: the folder with config/, tasks.py, noxfile.py and the code the CI
container runs read-only. In CI it is installed outside every read-write mount ($SGL_CI_HOME,
under $RUNNER_TEMP, set by the setup action); in a checkout it is the checkout."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

HOME_ENV = "SGL_CI_HOME"


def toolkit_home(env: Mapping[str, str] | None = None) -> Path:
    """$SGL_CI_HOME when set (an installed toolkit), else the source tree this module is in."""
    env = os.environ if env is None else env
    named = env.get(HOME_ENV)
    return Path(named).resolve() if named else Path(__file__).resolve().parent.parent


def host_run_files(home: Path) -> list[Path]:
    """The files of the toolkit that the host runs or reads as instructions after the container
    has started: the doors, the library and the config. None may be writable from the container."""
    found = [home / "tasks.py", home / "noxfile.py"]
    for folder in ("ci", "config"):
        found += sorted(p for p in (home / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return [p for p in found if p.is_file()]


def exposed_by(mounts: Iterable, home: Path, interpreter: Path | None = None) -> tuple[str, str] | None:
    """(what, mount source) when a read-write mount reaches the toolkit or the Python the host
    runs it with: test code in the container could then rewrite what the host runs next."""
    interpreter = Path(sys.prefix) if interpreter is None else interpreter
    for mount in mounts:
        if mount.read_only:
            continue
        source = Path(os.path.realpath(mount.source))
        for what, path in (("the toolkit", home), ("the Python that runs it", interpreter)):
            path = Path(os.path.realpath(path))
            if path == source or source in path.parents:
                return f"{what} ({path})", str(source)
    return None
