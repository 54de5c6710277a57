"""partitions: auto against hand-checked cases: the smallest count whose makespan fits the budget,
capped by the runners behind the job's label; what the plan shows (count, makespan, bound,
budget, a chart in Markdown); estimates measured, then est_time, then the suite's mean."""

from __future__ import annotations

import dataclasses
import re

import pytest
import yaml

from ci.config import load_config
from ci.gantt import label, measured_chart, partitions_chart
from ci.plan import BudgetProblems, plan_job, render_plan_markdown
from ci.suites import RegisteredFile
from tests.conftest import CONFIG as CONFIG_DIR
from tests.conftest import FIXTURES

FLEET = FIXTURES / "auto-partitions.yaml"  # the fleet and the fx-auto stage, numbers checked by hand
CONFIG = load_config(env={"SGL_CI_CONFIG_OVERRIDE": str(FLEET)})
EXTRA = CONFIG.stage("fx-auto")
JOB = EXTRA.job("fx-auto-test-1-gpu-small-amd")  # auto, 1 GPU, 45 min: budget 0.8 x 45 x 60 = 2160 s


def files(*seconds: float) -> list[RegisteredFile]:
    return [RegisteredFile(f"t/f{i}.py", JOB.suite, s) for i, s in enumerate(seconds)]


def plan(arch: str, estimates, recorded=None, config=CONFIG, job=JOB):
    problems: list[str] = []
    made = plan_job(config, config.stage("fx-auto"), job, config.arch(arch), files(*estimates), [], recorded or {}, problems)
    if problems:
        raise BudgetProblems(problems)
    return made


def test_budget_and_cap_come_from_config():
    assert JOB.partitions == "auto" and EXTRA.budget_share == 0.8 and JOB.timeout_for("mi300") == 45
    assert CONFIG.arches["mi300"].pool.runners[1] == 16 and CONFIG.arches["mi325"].pool.runners[1] == 8
    assert load_config(env={}).arches["mi300"].pool.runners == {}  # shipped: no fleet sizes until known


def test_the_smallest_count_that_fits_hand_checked():
    # 4100 s: 2 partitions at best {1500, 700} | {1000, 900} = 2200 s > 2160 s; 3 fit with 1600 s
    three = plan("mi300", [1500, 1000, 900, 700])
    assert (three.total, three.makespan, three.budget_s) == (3, 1600, 2160)
    assert sorted(three.loads()) == [1000, 1500, 1600]
    # exactly the budget fits in one
    assert plan("mi300", [1000, 1160]).total == 1
    assert plan("mi300", [1000, 1161]).total == 2
    # every file alone over half the budget: one partition each
    assert plan("mi300", [1100] * 5).total == 5


def test_the_count_is_capped_by_the_runners_behind_the_label():
    # 10 files of 1700 s (per-file timeout 1800 s) need 10 partitions; mi300 has 16 1-GPU runners, mi325 only 8
    assert plan("mi300", [1700] * 10).total == 10
    with pytest.raises(BudgetProblems, match=r"no partition count up to 8 \(8 runner\(s\) behind linux-mi325-1gpu-sglang\)"):
        plan("mi325", [1700] * 10)
    # measured times past the cap: planned at the cap with a note, never a failure of the route
    measured = {f"t/f{i}.py": 1700.0 for i in range(10)}
    capped = plan("mi325", [100] * 10, measured)
    assert capped.total == 8 and "measured estimates fit no partition count up to 8" in capped.notes[0]
    # a stage's max_partitions below the runners caps first
    tight = dataclasses.replace(CONFIG, stages={**CONFIG.stages, "fx-auto": dataclasses.replace(EXTRA, max_partitions=4)})
    with pytest.raises(BudgetProblems, match=r"no partition count up to max_partitions 4 fits the budget of 2160 s"):
        plan("mi300", [1700] * 10, config=tight)


def test_estimates_measured_then_est_time_then_the_suite_mean(tmp_path):
    override = tmp_path / "o.yaml"
    override.write_text(yaml.safe_dump({**yaml.safe_load(FLEET.read_text()), "suites": {
        "files": {JOB.suite: [{"path": "t/listed.py"}, {"path": "t/known.py", "est_time": 50}]},
        "est_time_overrides": {"mi300": {"t/f1.py": 700}}}}))
    config = load_config(CONFIG_DIR, env={"SGL_CI_CONFIG_OVERRIDE": str(override)})
    made = plan("mi300", [100, 200, 300], {"t/f0.py": 400.0}, config=config)
    seconds = {u.name: (u.seconds, u.recorded) for u in made.units.values()}
    assert seconds["t/f0.py"] == (400.0, True)  # measured
    assert seconds["t/f1.py"] == (700.0, False)  # the arch's override of est_time
    assert seconds["t/f2.py"] == (300.0, False)  # est_time
    assert seconds["t/listed.py"] == (pytest.approx((400 + 700 + 300 + 50) / 4), False)  # the suite's mean
    assert any("t/listed.py: no est_time and no measurement" in n for n in made.notes)


def test_the_plan_shows_count_makespan_bound_budget_and_a_chart(tmp_path, monkeypatch):
    from ci.arch import ArchResolution
    from ci.plan import StagePlan, render_plan

    job = plan("mi300", [1500, 1000, 900, 700])
    stage = StagePlan(EXTRA, ArchResolution(CONFIG.arch("mi300"), "--arch"), (), False, "pull-time", "shape", (), 7,
                      None, "docker.io", tmp_path, (job,))
    text = "\n".join(render_plan(stage))
    assert "3 partition(s) (auto)" in text
    assert "makespan 1600 s of a 2160 s budget; lower bound 1500 s" in text
    assert ("auto: the smallest count whose makespan fits 0.8 of 45 min = 2160 s, at most 16 "
            "(max_partitions 16 (16 runner(s) behind linux-mi300-1gpu-sglang)): 3") in text
    markdown = "\n".join(render_plan_markdown(stage))
    assert "```text" in markdown and markdown.count("```mermaid\ngantt") == 1
    assert "title fx-auto-test-1-gpu-small-amd on mi300  3 partition(s), makespan 1600 s, bound 1500 s, budget 2160 s" in markdown
    assert "budget 2160 s :done, budget, 0, 2160s" in markdown


def test_partition_chart_lays_units_end_to_end_and_marks_the_budget():
    chart = partitions_chart("t", [[("a.py", 100), ("big.py::TestA+TestB", 250)], [("c.py", 400)]], budget_s=300, highlight=2)
    lines = chart.splitlines()
    assert lines[:5] == ["```mermaid", "gantt", "    title t", "    dateFormat X", "    axisFormat %s"] and lines[-1] == "```"
    assert "    section P1 350 s" in lines and "    section P2 400 s (this run)" in lines
    assert "    a.py (100 s) :p1u0, 0, 100s" in lines
    assert "    big.py [TestA+TestB] (250 s) :crit, p1u1, after p1u0, 250s" in lines  # ends past the budget
    assert "    c.py (400 s) :crit, p2u0, 0, 400s" in lines
    assert lines[-3:-1] == ["    section budget", "    budget 300 s :done, budget, 0, 300s"]
    tasks = [line for line in lines if re.match(r"    \S.* :", line)]
    assert all(line.count(":") == 1 for line in tasks)  # a name never carries Mermaid's separator
    assert label("x::A+B;#y:z") == "x [A+B  y z]"


def test_measured_chart_has_two_bars_per_file():
    chart = measured_chart("m", [("a.py", 100, 300), ("b.py", 50, 55)], {"a.py"})
    assert "    section 1" in chart and "    a.py est_time 100 s :e0, 0, 100s" in chart
    assert "    a.py measured 300 s :crit, m0, 0, 300s" in chart and "    b.py measured 55 s :m1, 0, 55s" in chart
