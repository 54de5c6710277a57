"""Nothing the container can write is ever run on the host: the toolkit is installed outside the
workspace, read-only, non-editable into its own virtualenv, and the container spec refuses a
read-write mount that reaches it (a real container trying: tests/test_trust_docker.py)."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ci.config import MountSpec, load_config
from ci.container import HostView, build_spec
from ci.errors import ToolFailure
from ci.toolkit import exposed_by, host_run_files
from tests.conftest import ROOT, base_env

pytestmark = pytest.mark.timeout(300)
CONFIG = load_config(env={})


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """ci/setup_toolkit.py as the setup action runs it (offline: dependencies from this Python)."""
    base = tmp_path_factory.mktemp("runner")
    workspace, temp = base / "work" / "sglang", base / "temp"
    (workspace / "test" / "registered").mkdir(parents=True)
    (workspace / "test" / "registered" / "test_one.py").write_text(
        'register_amd_ci(est_time=60, suite="stage-a-test-1-gpu-small-amd")\nimport unittest\n'
        'if __name__ == "__main__":\n    unittest.main()\n')
    github_env, github_path = base / "github_env", base / "github_path"
    done = subprocess.run([sys.executable, str(ROOT / "ci" / "setup_toolkit.py"), "--home", str(temp / "sgl-ci"), "--no-deps"],
                          env=base_env(GITHUB_WORKSPACE=str(workspace), GITHUB_ENV=str(github_env),
                                       GITHUB_PATH=str(github_path)), capture_output=True, text=True, cwd=base)
    assert done.returncode == 0, done.stdout + done.stderr
    home = temp / "sgl-ci" / "src"
    assert github_env.read_text() == f"SGL_CI_HOME={home}\n"
    assert github_path.read_text() == f"{temp / 'sgl-ci' / 'venv' / 'bin'}\n"
    return home, temp / "sgl-ci" / "venv", workspace


def installed_env(home: Path, workspace: Path) -> dict[str, str]:
    """A CI step's environment after the setup action: no path back to this checkout."""
    env = base_env(SGL_CI_HOME=str(home), GITHUB_WORKSPACE=str(workspace))
    env.pop("PYTHONPATH", None)
    return env


def venv_run(installed, code: str) -> str:
    home, venv, workspace = installed
    done = subprocess.run([str(venv / "bin" / "python"), "-c", code], cwd=workspace, capture_output=True, text=True,
                          env=installed_env(home, workspace))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_installed_toolkit_is_a_read_only_copy_and_a_non_editable_install(installed):
    home, venv, workspace = installed
    assert (home / "tasks.py").is_file() and (home / "config" / "stages.yaml").is_file()
    assert not (home / ".git").exists() and not list(home.glob("*.egg-info"))
    for path in [home, *home.rglob("*")]:
        assert not stat.S_IMODE(path.lstat().st_mode) & 0o222, path  # nobody may write it
    where = venv_run(installed, "import ci, ci.container, ci.config; "
                                "print(ci.__file__, ci.container.TOOLKIT, ci.config.DEFAULT_CONFIG_DIR)").split()
    assert Path(where[0]).is_relative_to(venv / "lib")  # non-editable: the venv's own copy
    assert where[1:] == [str(home), str(home / "config")]
    assert workspace not in Path(where[0]).parents and workspace not in home.parents


def test_the_installed_doors_work(installed):
    home, venv, workspace = installed
    done = subprocess.run([str(venv / "bin" / "python"), "-m", "invoke", "--search-root", str(home), "plan", "--arch", "mi300",
                           "--stage", "stage-a"], cwd=workspace, capture_output=True, text=True,
                          env=installed_env(home, workspace))
    assert done.returncode == 0, done.stderr
    assert "test_one.py" in done.stdout


def test_the_container_mounts_reach_no_file_the_host_runs(installed):
    home, venv, workspace = installed
    mounts = venv_run(installed, (
        "import os\nfrom ci.config import load_config\nfrom ci.container import HostView, build_spec\n"
        "c = load_config()\nspec = build_spec(c.container, c.arches['mi300'], 'default', 'img:t', "
        "HostView(os.environ, exists=lambda p: True))\n"
        "for m in spec.mounts: print(m.source, m.target, m.read_only)"))
    table = [line.split() for line in mounts.splitlines()]
    assert [str(home), "/sgl-ci", "True"] in table  # the toolkit: read-only
    writable = [Path(source) for source, _, read_only in table if read_only == "False"]
    assert Path(workspace) in writable
    for path in [*host_run_files(home), venv / "bin" / "python", *(venv / "lib").rglob("ci/*.py")]:
        assert not any(w == path or w in path.parents for w in writable), path


def test_install_refuses_a_home_inside_the_workspace(tmp_path):
    workspace = tmp_path / "sglang"
    workspace.mkdir()
    done = subprocess.run([sys.executable, str(ROOT / "ci" / "setup_toolkit.py"), "--home", str(workspace / "sgl-ci"), "--no-deps"],
                          env=base_env(GITHUB_WORKSPACE=str(workspace)), capture_output=True, text=True)
    assert done.returncode != 0 and "is inside the workspace" in done.stderr and "Traceback" not in done.stderr
    assert not (workspace / "sgl-ci").exists()


def test_a_spec_whose_writable_mount_reaches_the_toolkit_is_refused(tmp_path):
    host = HostView({"GITHUB_WORKSPACE": "/work/sglang"}, exists=lambda p: True, read_text=lambda p: None,
                    toolkit="/work/sglang/sgl-ci")  # the old layout: the toolkit checked out inside the workspace
    with pytest.raises(ToolFailure, match=r"the toolkit \(/work/sglang/sgl-ci\) is inside the read-write mount /work/sglang"):
        build_spec(CONFIG.container, CONFIG.arches["mi300"], "default", "img:t", host)
    venv_inside = [MountSpec("/work/sglang", "/sglang-checkout")]
    assert exposed_by(venv_inside, Path("/opt/sgl-ci"), interpreter=Path("/work/sglang/.venv"))[0].startswith("the Python")
    assert exposed_by([MountSpec("/work/sglang", "/x", read_only=True)], Path("/work/sglang/sgl-ci"), Path("/usr")) is None
    link = tmp_path / "sgl-ci-link"
    link.symlink_to("/work/sglang/sgl-ci")  # a link into the mount counts as inside it
    assert exposed_by([MountSpec("/work/sglang", "/x")], link, Path("/usr")) is not None
