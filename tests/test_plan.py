"""The plan: units, partitions and budgets, checked before anything runs. Every number here comes
from the small fixture config (tests/fixtures/config/stages.yaml), worked out by hand:

  fx-a-test-fixed-amd  2 partitions; budget 0.8 x 20 min = 960 s on mi300, 0.8 x 10 min = 480 s on
                       mi325; per-file timeout 600 s, 450 s on mi325
  fx-a-test-auto-amd   partitions: auto (at most 6); budget 480 s; per-file 600 s
  fx-a-test-cmd-amd    2 partitions of commands: `every` (100 s) in each, `pinned` (50 s) in the
                       first, `free` (30 s) wherever it fits
  fx-b-test-4-gpu-amd  auto (at most 4); budget 0.5 x 20 min = 600 s
"""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest

from ci.arch import ArchResolution
from ci.errors import ConfigError, UserError
from ci.plan import BudgetProblems, build_plan, load_tree, normalize_durations, render_plan
from tests.conftest import base_env, run_door, write_tree

FIXED, AUTO, CMD, MI35X = "fx-a-test-fixed-amd", "fx-a-test-auto-amd", "fx-a-test-cmd-amd", "fx-a-test-8-gpu-mi35x-amd"
FOUR, NIGHTLY = "fx-b-test-4-gpu-amd", "fx-nightly-test-1-gpu-amd"
TODAY = dt.date(2026, 8, 22)
MAIN = '\nif __name__ == "__main__":\n    unittest.main()\n'
CLASSIC = [300, 300, 300, 200, 100]  # 1200 s: total/480 says 3 partitions, but any 3 put 300 + 200 together


def reg(suite: str, est: float, nightly: bool = False) -> str:
    return f'register_amd_ci(est_time={est!r}, suite="{suite}", nightly={nightly}){MAIN}'


def tree(root, **suites: list[float]):
    """A test tree: per suite (keyword with _ for -), one file per estimate, named <suite>/t<i>.py."""
    files = {}
    for key, estimates in suites.items():
        suite = key.replace("_", "-")
        nightly = suite == NIGHTLY
        files.update({f"{suite}/t{i}.py": reg(suite, est, nightly) for i, est in enumerate(estimates)})
    write_tree(root / "test" / "registered", files)
    return root


def plan(config, root, stage="fx-a", arch="mi300", **kwargs):
    return build_plan(config, stage, ArchResolution(config.arch(arch), "test"), TODAY,
                      load_tree(config, root / "test" / "registered"), **kwargs)


def job(stage_plan, suite):
    return next(j for j in stage_plan.jobs if j.job.suite == suite)


def base_suites(**overrides):
    """A tree every fx-a job fits in, with some jobs changed."""
    return {"fx_a_test_fixed_amd": [100, 100], "fx_a_test_auto_amd": [100], **overrides}


# --- partitions: auto ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "estimates, count, makespan",
    [
        (CLASSIC, 4, 300),  # 3 cannot hold 300 + 200 (500 > 480); 4 can: {300}, {300}, {300}, {200, 100}
        ([100] * 10, 3, 400),  # ceil(1000 / 480) = 3 fits: 400 + 300 + 300
        ([480], 1, 480),  # exactly the budget fits
        ([240] * 4, 2, 480),
        ([241] * 4, 4, 241),  # 2 x 241 = 482 > 480 on any partition with two: one each
        ([], 1, 0),  # nothing to run: one (empty) partition
    ],
)
def test_auto_picks_the_smallest_count_that_fits(tmp_path, small_config, estimates, count, makespan):
    root = tree(tmp_path, **base_suites(fx_a_test_auto_amd=estimates))
    for arch in ("mi300", "mi325"):
        planned = job(plan(small_config, root, arch=arch), AUTO)
        assert (planned.total, planned.auto, planned.makespan) == (count, True, makespan)
        assert planned.budget_s == 480
        assert sorted(u.name for n in range(1, count + 1) for u in planned.part(n)) == sorted(
            f"{AUTO}/t{i}.py" for i in range(len(estimates)))


def test_auto_sizes_each_arch_on_its_own_budget(tmp_path, small_config):
    # fx-b: 600 s budget; six files of 250 s: 3 partitions (500 s each).
    root = tree(tmp_path, **base_suites(fx_b_test_4_gpu_amd=[250] * 6))
    for arch in ("mi300", "mi325", "mi355"):
        planned = job(plan(small_config, root, "fx-b", arch), FOUR)
        assert (planned.total, planned.makespan, planned.budget_s) == (3, 500, 600)


@pytest.mark.parametrize("estimates", [[481], [400] * 7], ids=["one file over the budget", "more than max_partitions"])
def test_auto_with_no_count_that_fits_is_a_budget_problem(tmp_path, small_config, estimates):
    root = tree(tmp_path, **base_suites(fx_a_test_auto_amd=estimates))
    with pytest.raises(BudgetProblems) as caught:
        plan(small_config, root)
    assert str(caught.value).splitlines() == [
        "1 budget problem(s):",
        f"  {AUTO} on mi300: no partition count up to max_partitions 6 fits the budget of 480 s (0.8 of 10 min)"]


# --- fixed counts, per-file timeouts, one line per problem -----------------------------------------
def test_a_fixed_count_over_budget_names_the_smallest_count_that_fits(tmp_path, small_config):
    root = tree(tmp_path, **base_suites(fx_a_test_fixed_amd=CLASSIC))
    assert job(plan(small_config, root, arch="mi300"), FIXED).makespan == 600  # 960 s budget on mi300: fits
    with pytest.raises(BudgetProblems) as caught:
        plan(small_config, root, arch="mi325")  # 480 s on mi325: {300, 300} / {300, 200, 100} = 600 s does not
    assert str(caught.value).splitlines() == [
        "1 budget problem(s):",
        f"  {FIXED} on mi325: makespan 600 s over 2 partition(s) exceeds the budget of 480 s (0.8 of 10 min); "
        f"the smallest count that fits is 4 (or set partitions: auto)"]


def test_a_fixed_count_that_no_count_can_fix(tmp_path, small_config):
    root = tree(tmp_path, **base_suites(fx_a_test_fixed_amd=[400] * 7))  # 7 x 400: 6 partitions hold 800 s somewhere
    with pytest.raises(BudgetProblems, match=f"{FIXED} on mi325: makespan 1600 s over 2 partition.* no count up to 6 fits"):
        plan(small_config, root, arch="mi325")


def test_every_budget_problem_of_a_stage_at_once_one_line_each(tmp_path, small_config):
    root = tree(tmp_path, fx_a_test_fixed_amd=CLASSIC, fx_a_test_auto_amd=[481])
    durations = {f"{FIXED}/t0.py": 460.0}  # recorded: over mi325's 450 s per-file timeout
    # {460, 200} / {300, 300, 100}: 700 s is the best 2 partitions can do with these
    with pytest.raises(BudgetProblems) as caught:
        plan(small_config, root, arch="mi325", recorded=durations)
    lines = str(caught.value).splitlines()
    assert lines[0] == "3 budget problem(s):" and len(lines) == 4
    assert lines[1] == (f"  {FIXED} on mi325: {FIXED}/t0.py is estimated at 460 s, over the per-file timeout of 450 s "
                        f"(raise per_file_timeout_s or fix the estimate)")
    assert lines[2].startswith(f"  {FIXED} on mi325: makespan 700 s over 2 partition(s) exceeds the budget of 480 s")
    assert lines[3].startswith(f"  {AUTO} on mi325: no partition count up to max_partitions 6 fits")


def test_more_partitions_than_units_is_a_budget_problem(tmp_path, small_config):
    root = tree(tmp_path, **base_suites(fx_a_test_fixed_amd=[100]))
    with pytest.raises(BudgetProblems, match=re.escape(
            f"{FIXED} on mi300: 2 partitions but only 1 unit(s): partitions would be empty (lower `partitions`, or use auto)")):
        plan(small_config, root)


def test_budgets_that_hold_say_so_in_the_plan(tmp_path, small_config):
    root = tree(tmp_path, **base_suites(fx_a_test_fixed_amd=CLASSIC, fx_a_test_auto_amd=CLASSIC))
    stage_plan = plan(small_config, root)
    for planned in stage_plan.jobs:
        assert planned.makespan <= planned.budget_s
        assert all(u.seconds <= planned.per_file_timeout_s for u in planned.units.values())
    lines = render_plan(stage_plan)
    assert f"  job {FIXED} (linux-mi300-1gpu-sglang): 1 GPU(s), 2 partition(s), 5 unit(s), per-file timeout 600 s, " \
           f"step 20 min, job timeout 50 min" in lines
    assert f"  job {AUTO} (linux-mi300-2gpu-sglang): 2 GPU(s), 4 partition(s) (auto), 5 unit(s), per-file timeout 600 s, " \
           f"step 10 min, job timeout 40 min" in lines
    assert "    makespan 600 s of a 960 s budget; lower bound 600 s (max of longest unit and total/N)" in lines
    assert "    makespan 300 s of a 480 s budget; lower bound 300 s (max of longest unit and total/N)" in lines


# --- commands: every partition, pinned, free ---------------------------------------------------------
def test_command_units_fill_in_their_partition_and_pinned_units_stay_put(tmp_path, small_config):
    planned = job(plan(small_config, tree(tmp_path, **base_suites())), CMD)
    assert planned.total == 2
    parts = [{u.name: u for u in planned.part(n)} for n in (1, 2)]
    assert parts[0]["every"].argv == ("python3", "run.py", "--part", "0", "--of", "2")
    assert parts[1]["every"].argv == ("python3", "run.py", "--part", "1", "--of", "2")
    assert "pinned" in parts[0] and "pinned" not in parts[1]
    assert sum("free" in p for p in parts) == 1
    assert planned.loads() == [sum(u.seconds for u in p.values()) for p in parts]
    assert max(planned.loads()) <= planned.budget_s


# --- --partition i/N ---------------------------------------------------------------------------------
def test_partition_selects_one_partition(tmp_path, small_config):
    root = tree(tmp_path, **base_suites(fx_a_test_fixed_amd=CLASSIC))
    whole = job(plan(small_config, root, suite=FIXED), FIXED)
    second = plan(small_config, root, suite=FIXED, partition_arg=(2, 2)).jobs[0]
    assert second.selected == 2 and [u.name for u in second.units_to_run()] == [u.name for u in whole.part(2)]
    assert "<- this run" in next(line for line in render_plan(plan(small_config, root, suite=FIXED, partition_arg=(2, 2)))
                                 if line.startswith("    partition 2/2:"))


@pytest.mark.parametrize(
    "suite, estimates, partition_arg, message",
    [
        (FIXED, CLASSIC, (1, 3), f"--partition 1/3: {FIXED} on mi300 has 2 partition(s); use i/2"),
        (AUTO, CLASSIC, (1, 2), f"--partition 1/2: {AUTO} on mi300 has 4 partition(s) (partitions: auto); use i/4"),
        (AUTO, [], (1, 1), f"--partition 1/1: partition 1 of {AUTO} is empty"),
        (None, CLASSIC, (1, 2), f"--partition needs --suite: fx-a has 3 jobs on mi300 ({FIXED}, {AUTO}, {CMD})"),
    ],
    ids=["N is not the job's count", "N is not the auto count", "empty partition", "several jobs"],
)
def test_a_partition_that_does_not_fit_the_job_is_a_clear_error(tmp_path, small_config, suite, estimates, partition_arg, message):
    root = tree(tmp_path, **base_suites(fx_a_test_auto_amd=estimates))
    with pytest.raises(UserError) as caught:
        plan(small_config, root, suite=suite, partition_arg=partition_arg)
    assert str(caught.value) == message and not caught.value.multiline


def test_suites_and_arches_that_do_not_match(tmp_path, small_config):
    root = tree(tmp_path, **base_suites())
    with pytest.raises(UserError, match=re.escape(f"suite '{FIXED}' does not run on mi355 (its arches: mi300, mi325)")):
        plan(small_config, root, arch="mi355", suite=FIXED)
    with pytest.raises(ConfigError, match="unknown suite 'nope' for fx-a"):
        plan(small_config, root, suite="nope")
    assert [j.job.suite for j in plan(small_config, root, arch="mi355").jobs] == [MI35X]
    assert job(plan(small_config, root, arch="mi355"), MI35X).route.label == "linux-mi35x-gpu-8.fabric"


# --- nightly and per-commit selection --------------------------------------------------------------
def test_nightly_stages_plan_nightly_files_only_and_per_commit_stages_the_rest(tmp_path, small_config):
    root = tree(tmp_path, **base_suites(fx_nightly_test_1_gpu_amd=[100, 200]))
    write_tree(root / "test" / "registered", {"both.py": reg(FIXED, 50) + reg(NIGHTLY, 60, nightly=True).replace(MAIN, "")})
    nightly = plan(small_config, root, "fx-nightly")
    names = sorted(u.name for u in nightly.jobs[0].units_to_run())
    assert names == ["both.py", f"{NIGHTLY}/t0.py", f"{NIGHTLY}/t1.py"]
    assert nightly.jobs[0].units["both.py"].est_time == 60
    assert "both.py" in job(plan(small_config, root), FIXED).units and job(plan(small_config, root), FIXED).units["both.py"].est_time == 50
    assert render_plan(nightly)[0] == "stage fx-nightly on mi300 (MI300X, gfx942, image arch mi30x): nightly"


# --- recorded durations --------------------------------------------------------------------------
@pytest.mark.parametrize("prefix", ["", "test/registered/", "/sglang-checkout/test/registered/", "./"])
def test_recorded_durations_match_whatever_path_form_they_carry(tmp_path, small_config, prefix):
    root = tree(tmp_path, **base_suites(fx_a_test_fixed_amd=[100, 100, 100]))
    recorded = {f"{prefix}{FIXED}/t0.py": 7.0, f"{prefix}{FIXED}/t1.py": 8.0, f"{prefix}elsewhere/test_gone.py": 9.0}
    stage_plan = plan(small_config, root, recorded=recorded)
    units = job(stage_plan, FIXED).units
    assert (units[f"{FIXED}/t0.py"].seconds, units[f"{FIXED}/t0.py"].recorded) == (7.0, True)
    assert (units[f"{FIXED}/t1.py"].seconds, units[f"{FIXED}/t1.py"].est_time) == (8.0, 100)
    assert (units[f"{FIXED}/t2.py"].seconds, units[f"{FIXED}/t2.py"].recorded) == (100, False)
    assert stage_plan.recorded == 2
    assert "  durations: 2 unit(s) took recorded durations" in render_plan(stage_plan)
    assert normalize_durations(recorded, small_config) == {f"{FIXED}/t0.py": 7.0, f"{FIXED}/t1.py": 8.0,
                                                           "elsewhere/test_gone.py": 9.0}


def test_recorded_durations_that_match_nothing_are_warned_about(tmp_path, small_config):
    root = tree(tmp_path, **base_suites())
    lines = render_plan(plan(small_config, root, recorded={"test/registered/gone.py": 1.0}))
    assert "  warning: no unit matched the durations file: est_time used throughout" in lines
    assert not any("durations" in line for line in render_plan(plan(small_config, root)))  # none given: nothing said


def test_recorded_durations_drive_the_partitions(tmp_path, small_config):
    """est_time says 4 x 100 s; the last run took 400, 10, 10, 10: balanced on what really happened."""
    root = tree(tmp_path, **base_suites(fx_a_test_fixed_amd=[100] * 4))
    real = {f"{FIXED}/t0.py": 400.0, **{f"{FIXED}/t{i}.py": 10.0 for i in (1, 2, 3)}}
    planned = job(plan(small_config, root, recorded=real), FIXED)
    assert sorted(planned.loads()) == [30, 400]
    assert sorted([u.name for u in planned.part(n)] for n in (1, 2)) == [
        [f"{FIXED}/t0.py"], [f"{FIXED}/t1.py", f"{FIXED}/t2.py", f"{FIXED}/t3.py"]]
    assert job(plan(small_config, root), FIXED).loads() == [200, 200]  # est_time alone: 2 + 2


# --- through the doors ---------------------------------------------------------------------------
def ours(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("nox >")]


def door_env(config_dir, workspace, **extra):
    return base_env(SGL_CI_CONFIG_DIR=str(config_dir), GITHUB_WORKSPACE=str(workspace), **extra)


def test_budget_problems_through_the_door_exit_2_one_line_each(tmp_path, small_config_dir):
    root = tree(tmp_path / "ws", fx_a_test_fixed_amd=CLASSIC, fx_a_test_auto_amd=[481])
    done = run_door("nox", "-s", "fx_a", "--", "--arch", "mi325", "--dry-run", env=door_env(small_config_dir, root))
    assert done.code == 2, done.err
    lines = ours(done.err)
    assert lines[0] == "error: 2 budget problem(s):" and len(lines) == 3
    assert lines[1].startswith(f"  {FIXED} on mi325: makespan 600 s") and "the smallest count that fits is 4" in lines[1]
    assert lines[2].startswith(f"  {AUTO} on mi325: no partition count")
    assert "Traceback" not in done.err + done.out and "stage fx-a on" not in done.out  # nothing planned


@pytest.mark.parametrize(
    "args, message",
    [
        (["--suite", FIXED, "--partition", "1/3"], f"error: --partition 1/3: {FIXED} on mi300 has 2 partition(s); use i/2"),
        (["--suite", AUTO, "--partition", "2/3"], f"error: --partition 2/3: {AUTO} on mi300 has 4 partition(s) (partitions: auto); use i/4"),
        (["--suite", MI35X, "--partition", "1/1"], f"error: suite '{MI35X}' does not run on mi300 (its arches: mi355)"),
        (["--durations", "missing.json"], "error: --durations missing.json: cannot read it (not found)"),
    ],
    ids=["N is not the job's count", "N is not the auto count", "wrong arch", "missing durations"],
)
def test_partition_and_durations_mistakes_through_the_door(tmp_path, small_config_dir, args, message):
    root = tree(tmp_path / "ws", **base_suites(fx_a_test_auto_amd=CLASSIC))
    done = run_door("nox", "-s", "fx_a", "--", "--arch", "mi300", "--dry-run", *args, env=door_env(small_config_dir, root))
    assert done.code == 2, done.err
    assert ours(done.err) == [message]


def test_an_empty_partition_through_the_door(tmp_path, small_config_dir):
    root = tree(tmp_path / "ws", **base_suites())  # nothing registered to the MI35x job
    done = run_door("nox", "-s", "fx_a", "--", "--arch", "mi355", "--suite", MI35X, "--partition", "1/1", "--dry-run",
                    env=door_env(small_config_dir, root))
    assert done.code == 2 and ours(done.err) == [f"error: --partition 1/1: partition 1 of {MI35X} is empty"]


def test_recorded_durations_through_the_door(tmp_path, small_config_dir):
    root = tree(tmp_path / "ws", **base_suites(fx_a_test_fixed_amd=[100, 100, 100]))
    durations = tmp_path / "durations.json"
    durations.write_text(json.dumps({f"/sglang-checkout/test/registered/{FIXED}/t0.py": 12, f"test/registered/{FIXED}/t1.py": 13,
                                     f"{FIXED}/t2.py": 14}))
    done = run_door("nox", "-s", "fx_a", "--", "--arch", "mi300", "--dry-run", "--durations", str(durations),
                    env=door_env(small_config_dir, root))
    assert done.code == 0, done.err
    assert "  durations: 3 unit(s) took recorded durations" in done.out
    assert f"      {FIXED}/t0.py (12 s, recorded)" in done.out
    durations.write_text(json.dumps({"test/registered/gone.py": 1}))
    done = run_door("nox", "-s", "fx_a", "--", "--arch", "mi300", "--dry-run", "--durations", str(durations),
                    env=door_env(small_config_dir, root))
    assert done.code == 0 and "  warning: no unit matched the durations file: est_time used throughout" in done.out
    durations.write_text('{"a.py": -1}')
    done = run_door("nox", "-s", "fx_a", "--", "--arch", "mi300", "--dry-run", "--durations", str(durations),
                    env=door_env(small_config_dir, root))
    assert done.code == 2 and ours(done.err) == [f"error: --durations {durations}: 'a.py': -1 is not a number of seconds "
                                                 f"(finite, >= 0)"]


def test_route_sizes_auto_jobs_on_the_tree(tmp_path, small_config_dir):
    root = tree(tmp_path / "ws", **base_suites(fx_a_test_auto_amd=CLASSIC, fx_b_test_4_gpu_amd=[250] * 6))
    output = tmp_path / "github_output"
    done = run_door("invoke", "route", "--event", "pull_request",
                    env=door_env(small_config_dir, root, GITHUB_ACTIONS="true", GITHUB_OUTPUT=str(output)))
    assert done.code == 0, done.err
    assert re.search(rf"{AUTO} +linux-mi300-2gpu-sglang +partitions=4 +timeout=40m", done.out)
    assert re.search(rf"{MI35X} +linux-mi35x-gpu-8.fabric +partitions=1 +timeout=40m", done.out)
    assert re.search(rf"{FOUR} +linux-mi300-4gpu-sglang +partitions=3 +timeout=35m", done.out)  # first event arch it lists
    written = dict(line.split("=", 1) for line in output.read_text().splitlines())
    assert written["arches"] == "mi300,mi355"
    assert json.loads(written["jobs"])[AUTO]["partitions"] == [1, 2, 3, 4]
