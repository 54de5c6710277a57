"""Shared fixtures: a writable copy of config/ (and of the small fixture config), running the real
doors (invoke, nox) as processes, SGLang's test tree, and Docker access that fails under CI=true
rather than skipping."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "config"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
# SGLang's checkout next to this repository (read only): the real test tree and workflows.
SGLANG = ROOT.parent / "shared" / "sglang"

# Variables a developer's shell or a runner may carry that would change what the tests see.
_AMBIENT = ("RUNNER_ARCH", "RUNNER_NAME", "LOCAL_DOCKER_REGISTRY", "PUBLIC_DOCKER_REGISTRY",
            "SGL_CI_CONFIG_OVERRIDE", "SGL_CI_CONFIG_DIR", "GITHUB_ACTIONS", "GITHUB_OUTPUT",
            "GITHUB_STEP_SUMMARY", "DOCKERHUB_AMD_USERNAME", "DOCKERHUB_AMD_TOKEN", "HF_TOKEN", "ROCM_VERSION",
            "AMD_CI_IMAGE", "GITHUB_WORKSPACE")


def pytest_configure(config):
    """Hypothesis keeps no example database and writes its caches to a temporary folder, never
    into the checkout (.hypothesis/ in the current folder is its default)."""
    try:
        from hypothesis import settings
        from hypothesis.configuration import set_hypothesis_home_dir
    except ImportError:  # only the property tests need it
        return
    config._sgl_hypothesis_home = tempfile.mkdtemp(prefix="sgl-ci-hypothesis-")
    set_hypothesis_home_dir(config._sgl_hypothesis_home)
    settings.register_profile("sgl-ci", database=None)
    settings.load_profile("sgl-ci")


def pytest_unconfigure(config):
    home = getattr(config, "_sgl_hypothesis_home", None)
    if home:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in _AMBIENT:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def config_dir(tmp_path) -> Path:
    """A private copy of config/ that a test may break."""
    target = tmp_path / "config"
    shutil.copytree(CONFIG, target)
    return target


def make_small_config_dir(target: Path) -> Path:
    """config/ with the small stages and suites of tests/fixtures/config laid over it: numbers a
    test can check by hand, which do not move when the shipped config does."""
    shutil.copytree(CONFIG, target)
    for path in (FIXTURES / "config").iterdir():
        shutil.copy(path, target / path.name)
    return target


@pytest.fixture
def small_config_dir(tmp_path) -> Path:
    """A private copy of the small fixture config that a test may change."""
    return make_small_config_dir(tmp_path / "small-config")


@pytest.fixture(scope="session")
def small_config(tmp_path_factory):
    """The small fixture config, loaded (frozen, so one for the whole session)."""
    from ci.config import load_config

    return load_config(make_small_config_dir(tmp_path_factory.mktemp("small") / "config"), env={})


@pytest.fixture
def fake_kfd(tmp_path):
    """A character device node of our own (same numbers as /dev/null), standing in for /dev/kfd:
    what GPU hygiene and the preflight look for holders of, on a box with no GPU."""
    node = tmp_path / "kfd"
    try:
        os.mknod(node, 0o666 | 0o020000, os.makedev(1, 3))
    except PermissionError:
        if os.environ.get("CI") == "true":
            pytest.fail("mknod needs root under CI=true")
        pytest.skip("mknod needs root")
    return node


def write_tree(root: Path, files: dict[str, str]) -> Path:
    """Write test files (path under root -> text); returns root."""
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def sglang_checkout() -> Path:
    """SGLang's checkout, or skip (locally) / fail (under CI=true) when it is not there."""
    if not (SGLANG / "test" / "registered").is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"SGLang's checkout needed under CI=true at {SGLANG}")
        pytest.skip(f"no SGLang checkout at {SGLANG}")
    return SGLANG


@dataclass
class Done:
    code: int
    out: str
    err: str


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _AMBIENT}
    env["RUNNER_NAME"] = "test-host-without-arch"  # never let the test machine's name pick an arch
    # The doors import `ci` from this checkout, not from wherever the package is installed.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env.update(extra)
    return env


def _door_argv(argv: tuple[str, ...]) -> list[str]:
    tool = {"invoke": [sys.executable, "-m", "invoke"], "nox": [sys.executable, "-m", "nox"]}.get(argv[0], [argv[0]])
    return tool + list(argv[1:])


def run_door(*argv: str, env: dict[str, str] | None = None, timeout: float = 120) -> Done:
    """Run `invoke ...` or `nox ...` (or any argv) from the repo root, as a user would."""
    done = subprocess.run(_door_argv(argv), cwd=ROOT, env=env or base_env(), capture_output=True,
                          text=True, timeout=timeout)
    return Done(done.returncode, done.stdout, done.stderr)


def run_doors(runs: dict[str, tuple[tuple[str, ...], dict[str, str]]], timeout: float = 240) -> dict[str, Done]:
    """Several doors at once (name -> (argv, env)), each as run_door runs one: for slow runs that
    each read a large tree."""
    started = {name: subprocess.Popen(_door_argv(argv), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True) for name, (argv, env) in runs.items()}
    done = {}
    try:
        for name, process in started.items():
            out, err = process.communicate(timeout=timeout)
            done[name] = Done(process.returncode, out, err)
    finally:
        for process in started.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    return done


def docker_client():
    """A docker client, or skip (locally) / fail (under CI=true) when no engine answers."""
    import docker

    try:
        client = docker.from_env(timeout=30)
        client.ping()
        return client
    except Exception as exc:  # any reason the engine is unusable
        if os.environ.get("CI") == "true":
            pytest.fail(f"Docker Engine needed under CI=true and not answering: {exc}")
        pytest.skip(f"no Docker Engine: {exc}")


@pytest.fixture(scope="session")
def docker():
    return docker_client()


pytest_plugins = ["pytester"]


KILL_GRACE_S = 1.0  # the runner tests' stage setting (stages.yaml kill_grace_s): a second, as the fixture stages have


@functools.cache
def file_runs():
    """config/runner.yaml as a stage passes it to the runner (ci.stage.file_runs), for tests that run
    ci.runner directly."""
    from ci.config import load_config
    from ci.stage import file_runs as from_config

    return from_config(load_config(CONFIG, env={}))
