"""Secrets stay secret: masked before any output in Actions, scrubbed (raw, JSON-escaped, base64 at
any alignment) from what we print and write, never in the container's config or a dataclass repr,
given to each exec only; and exec exit codes that are unknown are failures, never 0."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ci import github, secrets
from ci.config import load_config
from ci.container import Containers, HostView, build_spec, exit_code_of
from ci.errors import ExitCodeUnknown
from ci.pull import Puller
from ci.runner import PlannedFile, RunPlan, run_plan
from tests.conftest import KILL_GRACE_S, base_env, file_runs, run_door

CONFIG = load_config(env={})
CANARY = "hf_Cän+/9d2e1f0a7b6c5d4e"  # non-ASCII: its JSON-escaped form differs
TOKEN_CHARS = st.characters(min_codepoint=33, max_codepoint=0x2FF, blacklist_characters="\\\"")


def forms(value: str, prefix: str) -> list[str]:
    """Every way a value can leak: raw, JSON-escaped, base64 inside a longer blob (both alphabets)."""
    blob = (prefix + value).encode()
    return [value, json.dumps({"k": prefix + value}), base64.b64encode(blob).decode(),
            base64.urlsafe_b64encode(blob).decode(), base64.b64encode(json.dumps({"auth": prefix + value}).encode()).decode()]


@settings(max_examples=300, deadline=1000, database=None)
@given(value=st.text(TOKEN_CHARS, min_size=secrets.MIN_SCRUB_LENGTH, max_size=60),
       prefix=st.text(max_size=5), around=st.text(max_size=30))
def test_no_form_of_a_secret_survives_scrubbing(value, prefix, around):
    for leaked in forms(value, prefix):
        text = f"{around}{leaked}{around}"
        cleaned = secrets.scrub(text, [value])
        assert value not in cleaned
        blob = base64.b64encode((prefix + value).encode()).decode()
        if blob in text:  # the encoded value's own middle is gone, whatever its alignment
            core = secrets._base64_cores(value)
            assert not any(c in cleaned for c in core)


@settings(max_examples=200, deadline=1000, database=None)
@given(before=st.text(max_size=40), after=st.text(max_size=40), cuts=st.lists(st.integers(0, 200), max_size=8))
def test_a_secret_split_across_writes_is_still_scrubbed(before, after, cuts):
    data = f"{before}{CANARY}{after}\n".encode()
    sink = io.BytesIO()
    scrubbing = secrets.ScrubbingSink(sink, [CANARY])
    points = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    for start, end in zip(points, points[1:]):
        scrubbing.write(data[start:end])
        scrubbing.flush()
    scrubbing.close()
    out = sink.getvalue().decode()
    assert CANARY not in out and "***" in out
    assert out == data.decode().replace(CANARY, "***")


def test_whole_lines_are_not_held_back():
    sink = io.BytesIO()
    scrubbing = secrets.ScrubbingSink(sink, [CANARY])
    scrubbing.write(b"progress 1\n")
    scrubbing.flush()
    assert sink.getvalue() == b"progress 1\n"


def test_masks_come_first_and_once(capsys):
    env = {"GITHUB_ACTIONS": "true", "HF_TOKEN": CANARY, "DOCKERHUB_AMD_TOKEN": "dckr_pat_0123456789"}
    github._MASKED.clear()
    secrets.mask_all(env)
    secrets.mask_all(env)
    lines = capsys.readouterr().out.splitlines()
    assert f"::add-mask::{CANARY}" in lines and "::add-mask::dckr_pat_0123456789" in lines
    assert json.dumps(CANARY)[1:-1] != CANARY and f"::add-mask::{json.dumps(CANARY)[1:-1]}" in lines  # its JSON form too
    assert len(lines) == len(set(lines))
    github._MASKED.clear()
    secrets.mask_all({"HF_TOKEN": CANARY})  # outside Actions: nothing
    assert capsys.readouterr().out == ""


def test_the_door_masks_before_its_first_line_and_scrubs_its_error():
    env = base_env(GITHUB_ACTIONS="true", HF_TOKEN=CANARY, DOCKERHUB_AMD_TOKEN="dckr_pat_0123456789")
    done = run_door("invoke", "plan", "--arch", CANARY, env=env)  # a secret pasted where it should not be
    assert done.code == 2
    first = done.out.splitlines()[:3]
    assert first[0].startswith("::add-mask::") and f"::add-mask::{CANARY}" in first
    assert CANARY not in done.err and "unknown arch '***'" in done.err
    assert all(CANARY not in line for line in done.out.splitlines() if not line.startswith("::add-mask::"))


def test_dataclasses_holding_an_environment_do_not_show_it():
    env = {"HF_TOKEN": CANARY, "DOCKERHUB_AMD_TOKEN": CANARY, "GITHUB_WORKSPACE": "/w"}
    host = HostView(env, exists=lambda p: True, read_text=lambda p: None, toolkit="/t")
    spec = build_spec(CONFIG.container, CONFIG.arches["mi300"], "default", "img:t", host)
    shown = [repr(host), repr(spec), repr(Puller(CONFIG, object(), env)),
             repr(Containers(object(), CONFIG.container, secrets=env))]
    assert not [s for s in shown if CANARY in s]
    # Every dataclass field that holds an environment is repr=False, in every module.
    import ci.config
    import ci.container
    import ci.plan
    import ci.pull
    import ci.runner
    import ci.stage
    for module in (ci.config, ci.container, ci.plan, ci.pull, ci.runner, ci.stage):
        for value in vars(module).values():
            if isinstance(value, type) and dataclasses.is_dataclass(value) and value.__module__ == module.__name__:
                for f in dataclasses.fields(value):
                    holds_env = (f.name in ("env", "secrets") or f.name.endswith("_env")) and \
                        any(kind in str(f.type) for kind in ("Mapping", "dict"))
                    if holds_env:
                        assert f.repr is False, f"{value.__name__}.{f.name}"


class FakeApi:
    """The engine's exec endpoints, recording what each exec was given."""

    def __init__(self, output=b"", inspect=None):
        self.created = []
        self.output = output
        self.inspect = inspect or {"Running": False, "ExitCode": 0, "Pid": 0}

    def exec_create(self, container_id, cmd, environment, workdir):
        self.created.append({"cmd": cmd, "env": environment, "workdir": workdir})
        return {"Id": "e1"}

    def exec_start(self, exec_id, stream):
        yield from [self.output[:7], self.output[7:]]

    def exec_inspect(self, exec_id):
        return self.inspect


class FakeClient:
    def __init__(self, api):
        self.api = api
        self.containers = self

    def get(self, name):
        return type("C", (), {"id": "c1", "name": name})()


class Clock:
    """A clock the waits read and advance: no test sleeps for real."""

    def __init__(self) -> None:
        self.now, self.slept = 0.0, []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_exec_gets_the_secret_the_container_config_never_does():
    api = FakeApi(output=f"token={CANARY}\n".encode())
    sink = io.BytesIO()
    clock = Clock()
    containers = Containers(FakeClient(api), CONFIG.container, secrets={"HF_TOKEN": CANARY, "OTHER": "x"},
                            clock=clock, sleep=clock.sleep)
    assert containers.exec(["python3", "-V"], {"A": "1"}, "/w", sink) == 0
    assert api.created[0]["env"] == {"A": "1", "HF_TOKEN": CANARY}  # by name from config, nothing else
    assert sink.getvalue() == b"token=***\n"


@pytest.mark.parametrize("inspect, why", [({"Running": True, "ExitCode": None}, "still running"),
                                          ({"Running": False, "ExitCode": None}, "exit code None"),
                                          ({"Running": False}, "exit code None"),
                                          ({"Running": False, "ExitCode": "0"}, "exit code '0'")])
def test_an_unknown_exit_code_is_a_failure_never_zero(inspect, why):
    clock = Clock()
    containers = Containers(FakeClient(FakeApi(inspect=inspect)), CONFIG.container, clock=clock, sleep=clock.sleep)
    with pytest.raises(ExitCodeUnknown, match=why):
        containers.exec(["sh", "-c", "exit 0"], {}, "/", io.BytesIO())
    spec = CONFIG.container.exec  # a still-running exec is asked again for exit_code_wait_s, every exit_code_poll_s
    if inspect["Running"]:
        assert set(clock.slept) == {spec.exit_code_poll_s}
        assert spec.exit_code_wait_s <= sum(clock.slept) < spec.exit_code_wait_s + spec.exit_code_poll_s
    else:
        assert clock.slept == []
    assert exit_code_of({"Running": False, "ExitCode": 3}, ["x"], "c") == 3


def test_the_runner_scrubs_what_a_test_prints(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", CANARY)
    leak = ("import base64, json, os, sys\nt = os.environ['HF_TOKEN']\nprint('raw', t)\nprint('json', json.dumps({'t': t}))\n"
            "print('b64', base64.b64encode(('user:' + t).encode()).decode())\n"
            "raise AssertionError('accuracy ' + t)\n")
    root = tmp_path / "tests"
    root.mkdir()
    (root / "test_leak.py").write_text(leak)
    plan = RunPlan("s", str(root), str(tmp_path / "reports"), (PlannedFile("test_leak.py", 1),), 30, 60, file_runs(), KILL_GRACE_S, python=sys.executable)
    out = io.StringIO()
    results = run_plan(plan, out)
    written = "".join(p.read_text() for p in (tmp_path / "reports").rglob("*") if p.is_file())
    everything = out.getvalue() + written + json.dumps([dataclasses.asdict(r) for r in results])
    assert "raw ***" in out.getvalue()  # it did print the token, and it was caught
    for leaked in forms(CANARY, "user:"):
        assert leaked not in everything
    assert CANARY not in everything and results[0].status == "failed"


def test_a_registry_with_credentials_is_refused_without_echoing_them(tmp_path):
    override = tmp_path / "o.yaml"
    override.write_text("images: {registries: {lan: 'ci:hunter2secret@mirror:5000'}}\n")
    for env in ({"SGL_CI_CONFIG_OVERRIDE": str(override)}, {"LOCAL_DOCKER_REGISTRY": "ci:hunter2secret@mirror:5000"}):
        done = run_door("invoke", "plan", "--arch", "mi300", env=base_env(**env))
        assert done.code == 2 and "carries credentials" in done.err and "***@mirror:5000" in done.err
        assert "hunter2secret" not in done.err + done.out and len(done.err.strip().splitlines()) == 1
    assert Path(override).exists()
