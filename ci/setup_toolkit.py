"""Install this toolkit for a CI job outside every folder the CI container can write: a read-only
copy (HOME/src) and a virtualenv (HOME/venv) with the toolkit installed non-editable; then
$SGL_CI_HOME and PATH point later steps at them. Stdlib only: `python3 ci/setup_toolkit.py --home DIR`."""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

SOURCE = Path(__file__).resolve().parent.parent
# Not part of the toolkit: VCS data, build leftovers, caches, the linter's node packages.
SKIP = shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", "build", ".nox", ".venv", ".hypothesis",
                              ".pytest_cache", "node_modules", "ci-reports")


def install(source: Path, home: Path, pip_args: list[str], env: dict[str, str]) -> tuple[Path, Path]:
    """Copy, create the virtualenv, pip install (non-editable). Returns (toolkit home, venv bin)."""
    source, home = source.resolve(), home.resolve()
    workspace = env.get("GITHUB_WORKSPACE")
    if workspace and (home == Path(workspace).resolve() or Path(workspace).resolve() in home.parents):
        raise SystemExit(f"error: --home {home} is inside the workspace {workspace}, which the CI container can "
                         "write; allowed: a folder outside it, e.g. $RUNNER_TEMP/sgl-ci")
    if home.exists():
        _make_writable(home)
        shutil.rmtree(home)
    src, venv = home / "src", home / "venv"
    shutil.copytree(source, src, ignore=SKIP, symlinks=False)
    offline = "--no-deps" in pip_args  # tests: this Python's packages, no package index
    subprocess.run([sys.executable, "-m", "venv", *(["--without-pip", "--system-site-packages"] if offline else []),
                    str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "-q",
                    *pip_args, str(src)], check=True, env={**env, "PIP_NO_CACHE_DIR": "1"})
    for leftover in ("build",):  # the wheel build's scratch folder
        shutil.rmtree(src / leftover, ignore_errors=True)
    for egg_info in src.glob("*.egg-info"):
        shutil.rmtree(egg_info, ignore_errors=True)
    _make_read_only(src)
    return src, venv / "bin"


def _make_read_only(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            path.chmod(stat.S_IMODE(path.stat().st_mode) & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _make_writable(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            path.chmod(stat.S_IMODE(path.stat().st_mode) | stat.S_IWUSR)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="setup_toolkit.py", description=__doc__.splitlines()[0])
    parser.add_argument("--home", required=True, help="where to install (outside the workspace), e.g. $RUNNER_TEMP/sgl-ci")
    parser.add_argument("--no-deps", action="store_true",
                        help="take the dependencies from this Python instead of the package index (tests)")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    try:
        src, bin_dir = install(SOURCE, Path(args.home), ["--no-deps", "--no-build-isolation"] if args.no_deps else [], env)
    except subprocess.CalledProcessError as exc:
        print(f"error: installing the toolkit failed: `{' '.join(map(str, exc.cmd[:4]))} ...` exited {exc.returncode}",
              file=sys.stderr)
        return 1
    if env.get("GITHUB_ENV"):
        with open(env["GITHUB_ENV"], "a", encoding="utf-8") as out:
            out.write(f"SGL_CI_HOME={src}\n")
    if env.get("GITHUB_PATH"):
        with open(env["GITHUB_PATH"], "a", encoding="utf-8") as out:
            out.write(f"{bin_dir}\n")
    print(f"installed the CI toolkit: {src} (read-only), virtualenv {bin_dir.parent} (non-editable)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
