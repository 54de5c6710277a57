"""The shipped config against SGLang's own checkout (../shared/sglang, read only): every stage and
the nightly stage plan on MI300X, MI325X and MI355X with every budget holding, every per-commit
AMD registration runs in exactly one job on each arch pool SGLang runs it on (read from SGLang's
workflow files, the test's oracle) and nowhere else, and a copy of the tree with planted mistakes
gets all of them reported at once.

Nothing here counts on this snapshot's numbers of files: what is expected is derived from the tree
and from SGLang's workflows, so the tests keep their meaning when the tree moves upstream."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import yaml

from ci.arch import ArchResolution
from ci.config import AUTO, load_config
from ci.plan import build_plan, load_tree
from ci.routing import runner_label
from ci.suites import Problem
from tests.conftest import base_env, run_doors, sglang_checkout

ARCHES = ("mi300", "mi325", "mi355")
TODAY = dt.date(2026, 8, 22)
# The SGLang workflows whose per-commit jobs (pull requests, schedule, dispatch) run AMD suites.
PER_COMMIT_WORKFLOWS = ("pr-test-amd-rocm720.yml", "pr-test-amd-extra.yml")


# --- the oracle: what SGLang's own workflows run, and where -------------------------------------------
def _step_commands(step: dict) -> list[str]:
    """A step's shell lines with backslash continuations joined."""
    return re.sub(r"\\\n\s*", " ", step.get("run") or "").splitlines()


def _evaluate(expression, arch: str) -> int:
    """A number, or SGLang's `${{ (inputs.runner_arch || 'mi300') == 'mi300' && A || B }}`."""
    text = str(expression).strip()
    if text.isdigit():
        return int(text)
    chosen = re.fullmatch(r"\$\{\{\s*\(inputs\.runner_arch \|\| '(\w+)'\) == '(\w+)' && (\d+) \|\| (\d+)\s*\}\}", text)
    assert chosen, f"an expression this oracle cannot read: {text}"
    _, compared, yes, no = chosen.groups()
    return int(yes) if arch == compared else int(no)


def sglang_per_commit_jobs(workflows: Path) -> list[dict]:
    """Each `run_suite.py --hw amd --suite NAME` step (without --nightly) of SGLang's per-commit
    AMD workflows: the suite, the arch pools its job runs on, its runner label per pool, the
    partition count, the per-file timeout and the step's timeout-minutes."""
    jobs = []
    for name in PER_COMMIT_WORKFLOWS:
        document = yaml.safe_load((workflows / name).read_text())
        inputs = document[True]["workflow_dispatch"]["inputs"]["runner_arch"]  # YAML reads `on:` as True
        input_pools, default_pool = list(inputs["options"]), inputs["default"]
        for job in document["jobs"].values():
            runs_on = str(job.get("runs-on", ""))
            matrix = job.get("strategy", {}).get("matrix", {})
            labels = {}
            if "matrix.runner" in runs_on:
                for label in matrix["runner"]:
                    assert label.startswith("linux-mi35x-"), label
                    labels["mi355"] = label  # SGLang's MI35x runner labels: linux-mi35x-gpu-N
            else:
                template = re.fullmatch(r"\$\{\{ format\('(linux-\{0\}-[^']+)', inputs\.runner_arch \|\| '(\w+)'\) \}\}", runs_on)
                if template is None:
                    continue  # ubuntu-latest: gates and bookkeeping
                assert template.group(2) == default_pool
                labels = {pool: template.group(1).format(pool) for pool in input_pools}
            for step in job.get("steps", []):
                for line in _step_commands(step):
                    found = re.search(r"(?<![/\w])run_suite\.py\s+(.*)", line)  # not multimodal_gen's run_suite.py
                    if not found:
                        continue
                    args = found.group(1)
                    assert "--hw amd" in args, line
                    if "--nightly" in args.split():
                        continue  # nightly=True files, run by a nightly stage here
                    per_file = re.search(r"--timeout-per-file\s+(\$\{\{.*?\}\}|\d+)", args)
                    jobs.append({
                        "suite": re.search(r"--suite\s+(\S+)", args).group(1),
                        "labels": labels,
                        "partitions": len(matrix.get("part", [0])),
                        "per_file": {pool: _evaluate(per_file.group(1), pool) if per_file else 1200 for pool in labels},
                        "step_minutes": {pool: _evaluate(step["timeout-minutes"], pool) for pool in labels},
                    })
    return jobs


# --- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sglang() -> Path:
    return sglang_checkout()


@pytest.fixture(scope="module")
def shipped():
    return load_config(env={})


@pytest.fixture(scope="module")
def tree(sglang, shipped):
    return load_tree(shipped, sglang / shipped.suites.test_root)  # raises on any unacknowledged mistake


@pytest.fixture(scope="module")
def plans(shipped, tree):
    """Every stage's plan on every arch it has jobs on (BudgetProblems here: a budget that fails)."""
    return {(name, arch): build_plan(shipped, name, ArchResolution(shipped.arch(arch), "test"), TODAY, tree)
            for name, stage in shipped.stages.items() for arch in ARCHES if stage.jobs_for(arch)}


@pytest.fixture(scope="module")
def oracle(sglang):
    jobs = sglang_per_commit_jobs(sglang / ".github" / "workflows")
    pools: dict[str, set[str]] = defaultdict(set)
    for job in jobs:
        pools[job["suite"]] |= set(job["labels"])
    return jobs, dict(pools)


def planned_files(plans, cadence: str):
    """(arch, suite, path) -> how many times the arch's plans of this cadence run the file."""
    runs: Counter = Counter()
    for (_, arch), plan in plans.items():
        if plan.stage.cadence != cadence:
            continue
        for job in plan.jobs:
            units = [u for u in job.units_to_run() if u.style != "command"]
            # A long file may run as shards of whole test classes: each class once, the file once.
            classes = [(u.file, c) for u in units for c in u.selectors]
            assert len(classes) == len(set(classes)), f"{job.job.suite}: a class runs in two shards"
            for file in {u.file for u in units}:
                runs[(arch, job.job.suite, file)] += 1
    return runs


# --- the tree against the shipped config -------------------------------------------------------------
def test_the_shipped_config_takes_the_whole_tree_with_only_acknowledged_mistakes(shipped, tree):
    scan, check = tree
    assert scan.files and not check.problems
    known = set(shipped.known_suites())
    unknown = {f.suite for f in scan.files} - known
    assert unknown and all(shipped.acknowledged(s) for s in unknown)  # every stray suite acknowledged, with a reason
    # ...and the other way round: every suite config names has work in the tree (or in config).
    registered = {f.suite for f in scan.files} | set(shipped.suites.files) | set(shipped.suites.commands)
    assert known <= registered, f"config names suites the tree does not have: {sorted(known - registered)}"
    acknowledged = {s for a in shipped.suites.acknowledged for s in a.suites}
    assert acknowledged <= {f.suite for f in scan.files}, "an acknowledgement names a suite the tree does not have"
    acknowledgements = [a for a in shipped.suites.acknowledged if set(a.suites) & unknown]
    assert len(check.warnings) == len(acknowledgements)
    for ack, warning in zip(acknowledgements, check.warnings):
        files = [f for f in scan.files if f.suite in ack.suites]
        assert warning.startswith(f"acknowledged: {len(files)} file(s) in ") and ack.reason in warning and ack.link in warning


def test_every_per_commit_registration_runs_once_on_each_pool_sglang_runs_it_on(tree, plans, oracle):
    scan, _ = tree
    _, pools = oracle
    runs = planned_files(plans, "per-commit")
    expected = Counter()
    for f in scan.files:
        if not f.nightly and not f.disabled:
            for arch in pools.get(f.suite, ()):
                expected[(arch, f.suite, f.path)] += 1
    assert expected, "SGLang's workflows name no suite that the tree registers: the oracle is broken"
    missing = sorted(key for key in expected if runs[key] == 0)
    twice = sorted(key for key in expected if runs[key] > 1)
    assert not missing, f"{len(missing)} registration(s) SGLang runs that no job here runs, e.g. {missing[:5]}"
    assert not twice, f"{len(twice)} registration(s) run more than once on an arch, e.g. {twice[:5]}"
    assert {arch for arch, _, _ in expected} == set(ARCHES)  # every pool has per-commit work


def test_no_job_runs_a_file_that_sglang_does_not_run_there(tree, plans, oracle):
    scan, _ = tree
    _, pools = oracle
    registered = {(f.suite, f.path): f for f in scan.files}
    for (arch, suite, path), _count in planned_files(plans, "per-commit").items():
        f = registered.get((suite, path))
        assert f is not None, f"{path} planned in {suite} on {arch} but not registered to it"
        assert arch in pools.get(suite, ()), f"{suite} runs on {arch} here; SGLang runs it on {sorted(pools.get(suite, ()))}"
        assert not f.nightly and not f.disabled, (arch, suite, path)


def test_disabled_registrations_are_listed_and_never_run(tree, plans):
    scan, _ = tree
    disabled = {(f.suite, f.path): f for f in scan.files if f.disabled}
    assert disabled  # the tree disables some files; the plan must say so rather than run them
    for plan in plans.values():
        for job in plan.jobs:
            ran = {(job.job.suite, u.name) for u in job.units_to_run()}
            listed = {(f.suite, f.path) for f in job.disabled}
            assert not ran & set(disabled)
            assert listed == {key for key, f in disabled.items() if f.suite == job.job.suite and f.nightly == plan.stage.nightly}


def test_cadences_never_mix(shipped, tree, plans):
    """Per-commit stages plan only nightly=False files, the nightly stage only nightly=True files,
    and every enabled nightly registration of a suite with a job runs once on each of its arches."""
    scan, _ = tree
    nightly_of = {(f.suite, f.path): f.nightly for f in scan.files}
    per_commit, nightly = planned_files(plans, "per-commit"), planned_files(plans, "nightly")
    assert per_commit and nightly
    assert not [k for k in per_commit if nightly_of[k[1:]]]
    assert not [k for k in nightly if not nightly_of[k[1:]]]
    nightly_jobs = {job.suite: job for stage in shipped.stages.values() if stage.nightly for job in stage.suites}
    expected = Counter((arch, f.suite, f.path) for f in scan.files if f.nightly and not f.disabled and f.suite in nightly_jobs
                       for arch in nightly_jobs[f.suite].arches)
    assert expected and nightly == expected


def test_every_budget_holds_on_every_arch(shipped, plans):
    assert {stage for stage, _ in plans} == set(shipped.stages)
    for (stage, arch), plan in plans.items():
        for job in plan.jobs:
            where = f"{job.job.suite} on {arch}"
            assert job.budget_s == shipped.stages[stage].budget_share * job.job.timeout_for(arch) * 60
            assert job.makespan <= job.budget_s, where
            assert all(u.seconds <= job.per_file_timeout_s for u in job.units.values()), where
            if job.job.partitions == AUTO:
                assert 1 <= job.total <= shipped.stages[stage].max_partitions, where
            else:
                assert job.total == job.job.partitions, where
            assert all(job.part(n) for n in range(1, job.total + 1)) or not job.units, f"{where}: an empty partition"


def test_the_jobs_match_sglangs(shipped, plans, oracle):
    """Per SGLang job: the same runner label on each pool, the same partition count where ours is
    fixed, and never a shorter per-file or step timeout than SGLang gives."""
    jobs, _ = oracle
    ours = {(j.job.suite, arch): j for (_, arch), p in plans.items() for j in p.jobs}
    for theirs in jobs:
        for pool, label in theirs["labels"].items():
            job = ours.get((theirs["suite"], pool))
            assert job is not None, f"SGLang runs {theirs['suite']} on {pool}; no job here does"
            assert job.route.label == label
            if job.job.partitions != AUTO:
                assert job.job.partitions == theirs["partitions"], theirs["suite"]
            assert job.per_file_timeout_s >= theirs["per_file"][pool], (theirs["suite"], pool)
            assert job.job.timeout_for(pool) >= theirs["step_minutes"][pool], (theirs["suite"], pool)
    arch = shipped.arch("mi355")
    assert runner_label(arch, 8, ".fabric") in {t["labels"].get("mi355") for t in jobs}


# --- through the doors -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def doors(sglang, shipped, tmp_path_factory):
    """Every stage session (the nightly one included) and `invoke plan` on each arch, and `invoke
    route` for a pull request and a schedule, dry, on the real tree: started at once, they read the
    tree in parallel."""
    sessions = [name.replace("-", "_") for name in shipped.stages]
    outputs = tmp_path_factory.mktemp("route-outputs")
    env = base_env(GITHUB_WORKSPACE=str(sglang))
    runs = {}
    for arch in ARCHES:
        runs[f"nox {arch}"] = (("nox", "-s", *sessions, "--", "--arch", arch, "--dry-run"), env)
        runs[f"plan {arch}"] = (("invoke", "plan", "--arch", arch), env)
    for event in ("pull_request", "schedule"):
        runs[f"route {event}"] = (("invoke", "route", "--event", event),
                                  {**env, "GITHUB_ACTIONS": "true", "GITHUB_OUTPUT": str(outputs / event)})
    done = run_doors(runs, timeout=280)
    return done, outputs


@pytest.mark.timeout(600)
@pytest.mark.parametrize("arch", ARCHES)
def test_every_stage_session_plans_the_real_tree(doors, shipped, tree, plans, arch):
    done = doors[0][f"nox {arch}"]
    assert done.code == 0, done.err[-3000:]
    _, check = tree
    for name, stage in shipped.stages.items():
        session = name.replace("-", "_")
        assert f"* {session}(runner_arch='{arch}'): success" in done.err
        if stage.jobs_for(arch):
            assert f"stage {name} on {arch} " in done.out
            for job in plans[(name, arch)].jobs:
                assert f"  job {job.route.job_name}: {job.route.gpus} GPU(s), {job.total} partition(s)" in done.out
        else:
            assert f"stage {name}: no job runs on {arch}" in done.out
    for warning in check.warnings:
        assert f"  warning: {warning}" in done.out  # the acknowledged mistakes, said on every plan
    assert "Traceback" not in done.err


@pytest.mark.timeout(600)
@pytest.mark.parametrize("arch", ARCHES)
def test_invoke_plan_plans_the_real_tree(doors, shipped, tree, plans, arch):
    done = doors[0][f"plan {arch}"]
    assert done.code == 0, done.err[-3000:]
    for name, stage in shipped.stages.items():
        assert (f"stage {name} on {arch} " in done.out) == bool(stage.jobs_for(arch))
    planned = [(name, j.route.job_name) for (name, a), p in plans.items() if a == arch for j in p.jobs]
    assert len(re.findall(r"^  job ", done.out, flags=re.MULTILINE)) == len(planned)
    for warning in tree[1].warnings:
        assert f"  warning: {warning}" in done.out


@pytest.mark.timeout(600)
def test_the_nightly_session_on_mi325(doors, shipped, plans):
    done = doors[0]["nox mi325"]
    assert done.code == 0
    nightly = done.out[done.out.index("stage nightly on mi325 (MI325X, gfx942, image arch mi30x): nightly"):]
    assert len(re.findall(r"^  job ", nightly, flags=re.MULTILINE)) == len(plans[("nightly", "mi325")].jobs)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("event, arches", [("pull_request", ("mi300", "mi355")), ("schedule", ("mi325", "mi355"))])
def test_route_sizes_each_job_as_its_stage_session_plans_it(doors, plans, event, arches):
    done = doors[0][f"route {event}"]
    assert done.code == 0, done.err
    written = dict(line.split("=", 1) for line in (doors[1] / event).read_text().splitlines())
    assert written["arches"] == ",".join(arches)
    routed = json.loads(written["jobs"])
    expected = {}
    for (_, arch), plan in plans.items():
        if plan.stage.cadence == "per-commit" and arch in arches:
            for job in plan.jobs:
                if next(a for a in arches if a in job.job.arches) == arch:
                    expected[job.job.suite] = (arch, job.total, job.route.label)
    assert {s: (j["arch"], j["total"], j["label"]) for s, j in routed.items()} == expected


# --- a copy of the tree with planted mistakes: every one of them, in one run ------------------------
MAIN = '\nif __name__ == "__main__":\n    unittest.main()\n'


def plant(root: Path, shipped, scan) -> dict[str, tuple[Problem, str]]:
    """Planted files (path -> (kind, text the report must carry)); every name and limit is taken
    from the tree and the shipped config."""
    stage = next(s for s in shipped.stages.values() if not s.nightly)
    job = stage.suites[0]
    nightly_suite = next(j.suite for s in shipped.stages.values() if s.nightly for j in s.suites)
    known = set(shipped.known_suites())
    cuda = min(s for s in scan.cuda_suites if s not in known and not shipped.acknowledged(s))
    over = max(job.per_file_timeout_for(a) for a in job.arches) + 1
    planted = {
        "unknown_suite.py": (f'register_amd_ci(est_time=10, suite="planted-no-such-suite-amd"){MAIN}', Problem.NEVER_RUNS,
                             "suite 'planted-no-such-suite-amd' has no job"),
        "cuda_name.py": (f'register_amd_ci(est_time=10, suite="{cuda}"){MAIN}', Problem.CUDA_SUITE, f"suite '{cuda}' is a CUDA suite"),
        "string_nightly.py": (f'register_amd_ci(10, "{nightly_suite}", nightly="true"){MAIN}', Problem.BAD_VALUE,
                              "nightly must be True or False, got 'true'"),
        "duplicate.py": (f'register_amd_ci(10, "{job.suite}")\nregister_amd_ci(20, "{job.suite}"){MAIN}', Problem.DUPLICATE,
                         f"already registered to '{job.suite}' on line 1"),
        "over_budget.py": (f'register_amd_ci({over}, "{job.suite}"){MAIN}', Problem.OVER_BUDGET, f"estimated at {over:g} s on"),
        "infinite.py": (f'register_amd_ci(1e999, "{job.suite}"){MAIN}', Problem.BAD_VALUE, "est_time must be a finite number of seconds > 0, got inf"),
        "zero.py": (f'register_amd_ci(0, "{job.suite}"){MAIN}', Problem.BAD_VALUE, "got 0"),
        "disabled_not_a_string.py": (f'register_amd_ci(10, "{job.suite}", disabled=True){MAIN}', Problem.BAD_VALUE,
                                     "disabled must be a reason"),
        "non_literal.py": (f'EST = 10\nregister_amd_ci(EST, "{job.suite}"){MAIN}', Problem.BAD_CALL, "est_time must be a literal, got `EST`"),
        "unknown_keyword.py": (f'register_amd_ci(10, "{job.suite}", timeout=3){MAIN}', Problem.BAD_CALL, "unknown argument 'timeout'"),
        "no_main.py": (f'import unittest\nregister_amd_ci(10, "{job.suite}")\nclass T(unittest.TestCase):\n    pass\n',
                       Problem.NO_MAIN, "would exit 0 without running a test"),
    }
    out = {}
    for name, (text, kind, message) in planted.items():
        path = root / "zz_planted" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        line = [i for i, t in enumerate(text.splitlines(), 1) if "register_amd_ci(" in t][-1]
        out[f"zz_planted/{name}:{line}"] = (kind, message)
    return out


@pytest.mark.timeout(600)
def test_a_tree_with_planted_mistakes_gets_all_of_them_in_one_run(tmp_path, sglang, shipped, tree):
    workspace = tmp_path / "sglang"
    root = workspace / shipped.suites.test_root
    shutil.copytree(sglang / shipped.suites.test_root, root, symlinks=True)
    planted = plant(root, shipped, tree[0])
    env = base_env(GITHUB_WORKSPACE=str(workspace))
    done = run_doors({"nox": (("nox", "-s", "stage_b", "--", "--arch", "mi300", "--dry-run"), env),
                      "plan": (("invoke", "plan", "--arch", "mi355"), env)})
    for door, result in done.items():
        assert result.code == 2, (door, result.err[-2000:])
        report = [line for line in result.err.splitlines() if line.strip() and not line.startswith("nox >")]
        assert report[0] == (f"error: the test tree {root} has {len(planted)} problem(s); fix the tree or config "
                             f"(stages.yaml jobs, suites.yaml acknowledged):"), door
        entries = [line.strip() for line in report if line.startswith("    ")]
        assert len(entries) == len(planted), (door, entries)  # the planted ones, and nothing else
        kinds = Counter(kind for kind, _ in planted.values())
        headers = [line.strip() for line in report[1:] if not line.startswith("    ")]
        assert headers == [f"{kind.value} ({kinds[kind]}):" for kind in Problem if kinds[kind]], door
        for where, (kind, message) in planted.items():
            entry = next((e for e in entries if e.startswith(f"{where}: ")), None)
            assert entry is not None and message in entry, (door, where, entries)
            group = report[:report.index(f"    {entry}")]
            assert [h for h in group if not h.startswith("    ")][-1].strip().startswith(kind.value)
        assert "Traceback" not in result.err and "stage stage-b on" not in result.out
