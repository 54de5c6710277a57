"""One boundary for every door: bad config, overrides, env values, test trees, durations files and
output paths, each through the real `invoke`/`nox` process: one stderr line naming the input, what
was wrong and what is allowed, exit code 2, no traceback, no hang, nothing half-done."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ci.config import load_config
from ci.suites import Problem, scan_tree
from tests.conftest import ROOT, base_env, run_door

pytestmark = pytest.mark.timeout(120)
CONFIG = load_config(env={})
REGISTERED = 'register_amd_ci(est_time=60, suite="stage-a-test-1-gpu-small-amd")\nimport unittest\nif __name__ == "__main__":\n    unittest.main()\n'


def ours(stderr: str) -> list[str]:
    """stderr without nox's own banner lines."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("nox >")]


@pytest.fixture
def workspace(tmp_path) -> Path:
    root = tmp_path / "sglang"
    (root / "test" / "registered").mkdir(parents=True)
    (root / "test" / "registered" / "test_one.py").write_text(REGISTERED)
    return root


def one_line_exit_2(done, *expected: str) -> None:
    lines = ours(done.err)
    assert done.code == 2, (done.code, done.out[-500:], done.err[-2000:])
    assert "Traceback" not in done.err + done.out, done.err
    assert len(lines) == 1, lines
    for text in expected:
        assert text in lines[0], lines[0]


def override(tmp_path: Path, text: str | bytes, name: str = "override.yaml") -> dict[str, str]:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return {"SGL_CI_CONFIG_OVERRIDE": str(path)}


BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(9))

OVERRIDES = [
    ("YAML alias", "images: &i {lookback_days: 7}\npull: *i\n", "YAML aliases (*name) are not allowed"),
    ("billion laughs", BILLION_LAUGHS, "YAML aliases (*name) are not allowed"),
    ("deep nesting", "images: " + "[" * 3000 + "]" * 3000 + "\n", "nested deeper than 64 levels"),
    ("not UTF-8", b"images: {lookback_days: \xff}\n", "not UTF-8 text"),
    ("invalid date", "known_issues: [{test: x, arches: [mi300], mode: skip, reason: r, link: l, expires: 2026-02-30}]\n",
     "'2026-02-30' is not a valid date"),
    ("infinite timeout", "pull: {public: {stall_s: .inf}}\n", "public.stall_s: must be a finite number"),
    ("NaN timeout", "pull: {probe_timeout_s: .nan}\n", "probe_timeout_s: must be a finite number"),
    ("absurd timeout", "pull: {public: {stall_s: 1.0e+12}}\n", "public.stall_s: must be <= 86400 (limits.yaml seconds)"),
    ("absurd lookback", "images: {lookback_days: 100000}\n", "lookback_days: must be <= 60 (limits.yaml days)"),
    ("absurd retries", "stages: {stage-a: {retries: 1000}}\n", "stage-a.retries: must be <= 10 (limits.yaml retries)"),
    ("absurd attempts", "pull: {login: {attempts: 100000}}\n", "login.attempts: must be <= 20"),
    ("absurd public slots", "pull: {host: {public_slots: 10000}}\n", "host.public_slots: must be <= 64 (limits.yaml slots)"),
    ("a budget of zero", "pull: {lan: {budget_s: 0}}\n", "lan.budget_s: must be > 0"),
    ("label that does not render", "arches: {arches: {mi300: {pool: {label: 'linux-mi300-{gpus}-{gpu}'}}}}\n",
     "placeholder {gpu} does not render"),
    ("label with a huge pad", "arches: {arches: {mi300: {pool: {label: 'x-{gpus:>999999999}'}}}}\n", "does not render"),
    ("build arg that does not render", "images: {build: {args: {GPU_ARCH: '{gfx'}}}\n", "is not a format string that renders"),
    ("registry that is no address", "images: {registries: {public: 'https://hub'}}\n", "is not a registry address"),
    ("secret name nobody masks", "container: {secret_env: [HF_TOKEN, AWS_SECRET]}\n", "'AWS_SECRET' is not a secret the toolkit masks"),
    ("key that is a list", "images:\n  ? [a, b]\n  : 1\n", "a key must be a plain value"),
    ("publish runner is a test pool", "workflows: {build_runner: linux-mi300-8gpu-sglang}\n", "is a label test jobs run on"),
    ("toolkit ref is a branch", "workflows: {toolkit_ref: main}\n", "must be a full 40-hex commit SHA"),
]


@pytest.mark.parametrize("text, expected", [o[1:] for o in OVERRIDES], ids=[o[0] for o in OVERRIDES])
def test_bad_override_is_one_line(tmp_path, workspace, text, expected):
    started = time.monotonic()
    done = run_door("invoke", "plan", "--arch", "mi300", "--stage", "stage-a",
                    env=base_env(GITHUB_WORKSPACE=str(workspace), **override(tmp_path, text)), timeout=60)
    one_line_exit_2(done, expected, "override.yaml")
    assert time.monotonic() - started < 30


def test_an_override_that_is_a_fifo_does_not_hang(tmp_path, workspace):
    fifo = tmp_path / "override.yaml"
    os.mkfifo(fifo)
    done = run_door("invoke", "plan", "--arch", "mi300", env=base_env(SGL_CI_CONFIG_OVERRIDE=str(fifo)), timeout=30)
    one_line_exit_2(done, f"{fifo}: cannot read config file: a FIFO; allowed: a regular file")
    done = run_door("invoke", "plan", "--arch", "mi300", env=base_env(SGL_CI_CONFIG_OVERRIDE="/dev/zero"), timeout=30)
    one_line_exit_2(done, "/dev/zero: cannot read config file: a character device")


def test_bad_input_through_nox_is_still_one_line_of_ours(tmp_path, workspace):
    env = base_env(GITHUB_WORKSPACE=str(workspace), **override(tmp_path, "images: &x {}\nx: *x\n"))
    one_line_exit_2(run_door("nox", "-s", "stage_a", "--", "--arch", "mi300", "--dry-run", env=env), "YAML aliases")


STAGE_ARGS = [
    ("empty partition", ["--partition", ""], "--partition '': expected i/N with whole numbers"),
    ("partition without N", ["--partition", "1/"], "--partition '1/': expected i/N"),
    ("huge partition count", ["--partition", "1/100000"], "--partition '1/100000': N must be <= 64"),
    ("non-ASCII digits", ["--partition", "\u0661/\u0662"], "expected i/N with whole numbers"),
    ("too many retries", ["--retries", "99999"], "--retries 99999: allowed: 0 to 10"),
    ("negative retries", ["--retries", "-1"], "--retries -1: allowed: 0 to 10"),
    ("image without a tag", ["--image", "rocm/sgl-dev"], "'rocm/sgl-dev' has no tag"),
    ("durations is a directory", ["--durations", "/"], "--durations /: cannot read it (a directory"),
    ("durations is a device", ["--durations", "/dev/zero"], "cannot read it (a character device"),
    ("durations not found", ["--durations", "/nonexistent/d.json"], "cannot read it (not found)"),
]


@pytest.mark.parametrize("args, expected", [a[1:] for a in STAGE_ARGS], ids=[a[0] for a in STAGE_ARGS])
def test_bad_stage_argument_is_one_line(workspace, args, expected):
    done = run_door("nox", "-s", "stage_a", "--", "--arch", "mi300", *args, "--dry-run",
                    env=base_env(GITHUB_WORKSPACE=str(workspace)))
    one_line_exit_2(done, expected)


def test_durations_file_not_utf8_or_a_fifo(tmp_path, workspace):
    bad = tmp_path / "d.json"
    bad.write_bytes(b'{"a": \xff}')
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    for path, expected in ((bad, "not UTF-8 text"), (fifo, "a FIFO")):
        # named by a person (a plan, a stage session): one line, exit 2, never a hang
        done = run_door("invoke", "plan", "--arch", "mi300", "--durations", str(path),
                        env=base_env(GITHUB_WORKSPACE=str(workspace)), timeout=30)
        one_line_exit_2(done, f"--durations {path}: cannot read it", expected)
        # the route job's store is a cache: the same file is a warning and est_time, never a hang
        done = run_door("invoke", "route", "--event", "schedule", "--durations", str(path),
                        env=base_env(GITHUB_WORKSPACE=str(workspace)), timeout=30)
        assert done.code == 0 and expected in done.out and "partitions from est_time" in done.out, done.out + done.err


def test_report_dir_that_cannot_be_made_fails_before_anything_runs(tmp_path, workspace):
    blocker = workspace / "a-file"
    blocker.write_text("")
    done = run_door("nox", "-s", "stage_a", "--", "--arch", "mi300", "--report-dir", str(blocker),
                    env=base_env(GITHUB_WORKSPACE=str(workspace)))
    one_line_exit_2(done, f"--report-dir {blocker}: exists and is not a directory")


@pytest.mark.parametrize("kind", ["directory", "fifo", "missing-folder"])
def test_github_output_that_cannot_be_written(tmp_path, workspace, kind):
    path = {"directory": tmp_path, "fifo": tmp_path / "out.fifo", "missing-folder": tmp_path / "no" / "out"}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    done = run_door("invoke", "route", "--event", "schedule",
                    env=base_env(GITHUB_WORKSPACE=str(workspace), GITHUB_OUTPUT=str(path)), timeout=30)
    one_line_exit_2(done, f"GITHUB_OUTPUT={path}: cannot be written", "allowed: a writable regular file")
    assert "stage-a" not in done.out  # checked before any work: nothing half-done


def test_a_closed_stdout_is_one_line(workspace):
    env = base_env(GITHUB_WORKSPACE=str(workspace))
    door = subprocess.Popen([sys.executable, "-m", "invoke", "plan", "--arch", "mi300"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    door.stdout.close()  # `invoke plan | head -1` with the reader gone before the output comes
    err = door.stderr.read().decode()
    assert door.wait(30) == 2
    assert "Traceback" not in err and "Exception ignored" not in err
    assert err.strip().splitlines() == [err.strip()] and "stdout was closed before the output ended" in err


def test_exec_with_nothing_after_the_dashes():
    one_line_exit_2(run_door("invoke", "exec"), "nothing to run: give the command after --")
    one_line_exit_2(run_door("invoke", "exec", "--"), "nothing to run")


def test_known_issues_plugin_options_are_usage_errors(tmp_path):
    (tmp_path / "test_a.py").write_text("def test_a():\n    pass\n")
    for args, expected in ((["--sgl-arch", "mi999"], "unknown arch 'mi999'"),
                           (["--sgl-arch", "mi300", "--sgl-today", "2026-13-45"], "--sgl-today '2026-13-45' is not a date")):
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "ci.known_issues", *args,
                               str(tmp_path / "test_a.py")], cwd=tmp_path, capture_output=True, text=True,
                              env=base_env(PYTHONPATH=str(ROOT)), timeout=60)
        assert done.returncode == 4, done.stdout + done.stderr  # pytest's usage error, not an INTERNALERROR
        assert "INTERNALERROR" not in done.stdout + done.stderr and "Traceback" not in done.stdout + done.stderr
        assert expected in done.stderr


def test_sigterm_through_the_door_is_one_line_and_fails():
    # 'ready' from inside the command: the door's signal handling is in place by then
    script = ("from ci import cli\nimport time\n"
              "def wait():\n    print('ready', flush=True)\n    time.sleep(60)\n"
              "cli.run(wait)\n")
    for sig, code, name in ((signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "SIGINT")):
        door = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=base_env(PYTHONPATH=str(ROOT)),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert door.stdout.readline() == "ready\n"
        door.send_signal(sig)
        assert door.wait(10) == code
        err = door.stderr.read()
        assert "Traceback" not in err and err.strip() == f"interrupted ({name}): stopped before the end; the exit code says failed"


# --- test trees (ci/suites.py scans regular files only, and lists every problem at once) ----
def test_a_tree_with_links_fifos_devices_and_odd_names(tmp_path, workspace):
    root = workspace / "test" / "registered"
    (root / "loop").symlink_to(root, target_is_directory=True)  # a symlink loop
    (root / "test_dangling.py").symlink_to(tmp_path / "gone.py")  # a dangling link
    outside = tmp_path / "outside.py"
    outside.write_text(REGISTERED.replace("stage-a-test-1-gpu-small-amd", "never-here"))
    (root / "test_outside.py").symlink_to(outside)  # a link out of the root: not read
    os.mkfifo(root / "test_fifo.py")  # reading it would hang
    (root / "test_dir.py").mkdir()  # a directory named like a test file
    (root / "test_dir.py" / "test_inner.py").write_text(REGISTERED)
    (root / "test_null.py").symlink_to("/dev/null")
    started = time.monotonic()
    done = run_door("invoke", "plan", "--arch", "mi300", "--stage", "stage-a", env=base_env(GITHUB_WORKSPACE=str(workspace)),
                    timeout=60)
    assert done.code == 0, done.err
    assert time.monotonic() - started < 30
    assert "test_one.py" in done.out and "test_dir.py/test_inner.py" in done.out
    assert "never-here" not in done.out + done.err and "test_fifo" not in done.out


def test_a_file_that_cannot_be_read_is_a_problem_not_silence(tmp_path, monkeypatch):
    (tmp_path / "test_locked.py").write_text(REGISTERED)
    real = Path.read_bytes

    def read_bytes(self):
        if self.name == "test_locked.py":
            raise PermissionError(13, "Permission denied")
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    scan = scan_tree(tmp_path, CONFIG)
    assert [(f.kind, f.where, f.message) for f in scan.findings] == [
        (Problem.UNREADABLE, "test_locked.py", "cannot be read: Permission denied")]


def test_tree_problems_are_one_grouped_report_exit_2(workspace):
    (workspace / "test" / "registered" / "test_bad.py").write_bytes(b"register_amd_ci(\xff)\n")
    (workspace / "test" / "registered" / "test_cuda.py").write_text('register_amd_ci(1, "no-such-suite")\n')
    done = run_door("invoke", "plan", "--arch", "mi300", env=base_env(GITHUB_WORKSPACE=str(workspace)))
    assert done.code == 2 and "Traceback" not in done.err
    assert "has 3 problem(s)" in done.err and "not UTF-8 text" in done.err and "no-such-suite" in done.err
    assert "without an executable __main__" in done.err  # every problem at once, grouped


def test_unreadable_job_results_fail_the_finish_job_without_a_traceback():
    for needs in ("[" * 100000, "not json", '{"route": 1}', ""):
        done = run_door("invoke", "finish", env=base_env(NEEDS_JSON=needs))
        assert done.code == 1 and "the jobs' results could not be read" in done.out  # unknown = failed
        assert "Traceback" not in done.err


def test_a_report_dir_outside_the_workspace_is_refused_before_it_is_made(tmp_path, workspace):
    outside = tmp_path / "elsewhere" / "reports"
    done = run_door("nox", "-s", "stage_a", "--", "--arch", "mi300", "--report-dir", str(outside),
                    env=base_env(GITHUB_WORKSPACE=str(workspace)))
    one_line_exit_2(done, f"{outside} is not under the workspace")
    assert not (tmp_path / "elsewhere").exists()  # nothing half-done


@pytest.mark.parametrize("text, expected", [("k: !!timestamp 'yesterday'\n", "'yesterday' is not a valid date"),
                                            ("k: !!bool 'maybe'\n", "'maybe' cannot be read with its tag"),
                                            ("k: !!int 'x'\n", "malformed YAML")])
def test_tagged_values_yaml_cannot_read(tmp_path, text, expected):
    one_line_exit_2(run_door("invoke", "plan", "--arch", "mi300", env=base_env(**override(tmp_path, text))), expected)
