"""`invoke exec -- ARGV` runs exactly the argv typed, through the real door against a stand-in engine
on loopback (invoke's remainder joined the words: `sh -c 'exit 3'` returned 0); the secret reaches
the exec only, its output is scrubbed, and an exit code never recorded is a failure."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ci.cli import argv_after_dashes
from tests.conftest import base_env, run_door
from tests.support.fakeengine import FakeEngine

pytestmark = pytest.mark.timeout(120)
CANARY = "hf_exec_canary_0a1b2c3d4e"


@settings(database=None)
@given(before=st.lists(st.text().filter(lambda w: w != "--")), after=st.lists(st.text()))
def test_the_words_after_the_first_dashes_come_back_exactly(before, after):
    assert argv_after_dashes(["invoke", *before, "--", *after]) == after
    assert argv_after_dashes(["invoke", *before]) == []


@pytest.fixture
def engine(tmp_path):
    with FakeEngine(str(tmp_path)) as fake:
        yield fake


def door(engine, *argv):
    return run_door("invoke", "exec", "--", *argv, env=base_env(DOCKER_HOST=engine.url, HF_TOKEN=CANARY))


def test_sh_c_exit_3_returns_3(engine):
    done = door(engine, "sh", "-c", "exit 3")
    assert done.code == 3, done.err
    assert [e["cmd"] for e in engine.execs] == [["sh", "-c", "exit 3"]] * 2  # and its offline retry


@pytest.mark.parametrize("argv, out", [
    (["printf", "%s|", "a b", "", "c"], "a b||c|"),  # spaces and an empty string kept
    (["printf", "%s|", "it's", '"q"', "$HOME", "*"], "it's|\"q\"|$HOME|*|"),  # no shell, no expansion
    (["printf", "%s|", "--", "-x"], "--|-x|"),  # a second -- belongs to the command
])
def test_quoting_spaces_and_empty_strings_survive(engine, argv, out):
    done = door(engine, *argv)
    assert done.code == 0 and done.out == out, done.err
    assert engine.execs[0]["cmd"] == argv


def test_the_secret_goes_to_the_exec_and_never_to_the_output(engine):
    done = door(engine, "sh", "-c", 'echo "token=$HF_TOKEN"')
    assert done.code == 0
    assert engine.execs[0]["env"]["HF_TOKEN"] == CANARY  # the exec had it...
    assert done.out == "token=***\n" and CANARY not in done.err  # ...what it printed did not


def test_an_exit_code_the_engine_never_recorded_is_a_failure(engine):
    engine.exit_code_known = False
    done = door(engine, "true")
    assert done.code == 1, (done.out, done.err)
    assert done.err.strip().splitlines() == [done.err.strip()] and "its result is unknown, counted as failed" in done.err
    assert "Traceback" not in done.err


def test_kernel_tests_get_the_pytest_arguments_as_typed(tmp_path):
    done = run_door("invoke", "kernel-tests", "--arch", "mi325", "--host", "--", "-k", "not nosuch and not other", "-rs",
                    env=base_env(GITHUB_WORKSPACE=str(tmp_path)))
    assert done.code == 5, done.out + done.err  # pytest ran (and found nothing to run), not a usage error (4)
    assert "file or directory not found" not in done.out + done.err
