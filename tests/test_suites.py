"""The test tree: registration calls read with `ast` (nothing is ever imported), every problem of a
tree found in one scan and reported grouped by kind with file:line, acknowledged mistakes said as
warnings. Suites are the small fixture config's (tests/fixtures/config), so no shipped number
matters here."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ci.config import load_config
from ci.errors import UserError
from ci.plan import load_tree
from ci.suites import Problem, TreeProblems, check_tree, scan_tree, select
from tests.conftest import write_tree

FIXED = "fx-a-test-fixed-amd"  # per-commit, mi300 + mi325, per-file 600 s (450 s on mi325)
FOUR = "fx-b-test-4-gpu-amd"  # per-commit, stage fx-b, runner config 4-gpu-amd
NIGHTLY = "fx-nightly-test-1-gpu-amd"  # nightly
MAIN = '\nif __name__ == "__main__":\n    unittest.main()\n'

GOOD = {
    "srt/test_keyword.py": f'from sglang.test.ci.ci_register import register_amd_ci\nregister_amd_ci(est_time=141, suite="{FIXED}")\n{MAIN}',
    "srt/test_positional.py": f'register_amd_ci(60, "{FIXED}"){MAIN}',
    "srt/test_stage_config.py": f'register_amd_ci(300, stage="fx-b", runner_config="4-gpu-amd"){MAIN}',
    "srt/test_disabled.py": f'register_amd_ci(est_time=30, suite="{FIXED}", disabled="flaky on ROCm 7")\n',  # no main: disabled
    "srt/test_nightly.py": f'register_amd_ci(400, "{NIGHTLY}", True){MAIN}',
    "srt/test_two_suites.py": f'register_amd_ci(10, "{FIXED}")\nregister_amd_ci(12, "{FOUR}"){MAIN}',
    "srt/test_cuda_only.py": 'register_cuda_ci(est_time=20, suite="stage-b-test-1-gpu-small")\n',
    "srt/test_pytest_file.py": f'import pytest\nregister_amd_ci(15, "{FIXED}")\ndef test_x():\n    pass\n',
    "srt/test_not_at_module_level.py": 'def helper():\n    register_amd_ci(est_time=1, suite="no-such-suite")\n',
    "srt/test_assigned_not_called.py": "x = register_amd_ci\n",
    "srt/helpers.py": "IMPORTING_THIS_WOULD_FAIL = 1 / 0\n",
    "srt/test_side_effects.py": f'raise SystemExit("never import test files")\nregister_amd_ci(5, "{FIXED}"){MAIN}',
    "srt/test_retired.py": f'register_amd_ci(50, "fx-retired-amd"){MAIN}',
    "srt/test_retired_too.py": f'register_amd_ci(50, "fx-retired-too-amd"){MAIN}',
}
BULK = 40


def write(root: Path, files: dict[str, str] = GOOD) -> Path:
    write_tree(root, files)
    write_tree(root, {f"bulk/test_bulk_{i:02}.py": f'register_amd_ci(est_time={30 + i * 7}, suite="{FIXED}"){MAIN}'
                      for i in range(BULK)})  # bulk: a realistic number of plain registrations
    return root


def findings(root: Path, config) -> list:
    return list(check_tree(scan_tree(root, config), config).problems)


def test_every_registration_style(tmp_path, small_config):
    scan = scan_tree(write(tmp_path), small_config)
    files = {f.path: f for f in scan.files if not f.path.startswith("bulk/")}
    assert files["srt/test_keyword.py"].suite == FIXED and files["srt/test_keyword.py"].est_time == 141
    assert files["srt/test_keyword.py"].line == 2
    assert files["srt/test_positional.py"].suite == FIXED and files["srt/test_positional.py"].est_time == 60
    assert files["srt/test_stage_config.py"].suite == FOUR
    assert files["srt/test_disabled.py"].disabled == "flaky on ROCm 7"
    assert files["srt/test_nightly.py"].nightly is True and files["srt/test_keyword.py"].nightly is False
    assert files["srt/test_pytest_file.py"].style == "pytest" and files["srt/test_keyword.py"].style == "unittest"
    assert files["srt/test_side_effects.py"].line == 2  # parsed, never imported: the SystemExit never ran
    assert files["srt/test_keyword.py"].has_main and not files["srt/test_disabled.py"].has_main
    for absent in ("srt/test_cuda_only.py", "srt/test_not_at_module_level.py", "srt/test_assigned_not_called.py", "srt/helpers.py"):
        assert absent not in files
    both = [f.suite for f in scan.files if f.path == "srt/test_two_suites.py"]
    assert both == [FIXED, FOUR]
    # CUDA-only files are parsed only when an unknown suite needs their names.
    assert "stage-b-test-1-gpu-small" not in scan.cuda_suites
    assert "stage-b-test-1-gpu-small" in scan.all_cuda_suites(small_config.suites.cuda_register_function)
    assert sum(f.path.startswith("bulk/") for f in scan.files) == BULK
    assert scan.findings == ()


def test_a_good_tree_checks_clean_and_warns_about_acknowledged_mistakes(tmp_path, small_config):
    _, check = load_tree(small_config, write(tmp_path))
    assert check.problems == ()
    assert check.warnings == ("acknowledged: 2 file(s) in fx-retired-amd, fx-retired-too-amd run nowhere: "
                              "registered, but retired upstream (https://example.invalid/retired)",)
    jobs = {job.suite for stage in small_config.stages.values() for job in stage.suites}
    assert not jobs & {"fx-retired-amd", "fx-retired-too-amd"}  # nothing would run them


def test_select_splits_disabled_and_nightly(tmp_path, small_config):
    scan = scan_tree(write(tmp_path), small_config)
    run, disabled = select(scan.files, FIXED, nightly=False)
    named = {"srt/test_keyword.py", "srt/test_positional.py", "srt/test_two_suites.py",
             "srt/test_pytest_file.py", "srt/test_side_effects.py"}
    assert {f.path for f in run} == named | {f"bulk/test_bulk_{i:02}.py" for i in range(BULK)}
    assert [f.path for f in disabled] == ["srt/test_disabled.py"]
    nightly, _ = select(scan.files, NIGHTLY, nightly=True)
    assert [f.path for f in nightly] == ["srt/test_nightly.py"]
    assert select(scan.files, NIGHTLY, nightly=False) == ([], [])
    assert select(scan.files, FIXED, nightly=True) == ([], [])


BROKEN = [
    # (name, source, kind, message)
    ("unknown suite", f'register_amd_ci(est_time=10, suite="no-such-suite-amd"){MAIN}', Problem.NEVER_RUNS,
     "suite 'no-such-suite-amd' has no job in stages.yaml"),
    ("CUDA name", f'register_cuda_ci(10, "base-b-test-1-gpu-small")\nregister_amd_ci(est_time=10, suite="base-b-test-1-gpu-small"){MAIN}',
     Problem.CUDA_SUITE, "suite 'base-b-test-1-gpu-small' is a CUDA suite"),
    ("string nightly", f'register_amd_ci(10, "{NIGHTLY}", "true"){MAIN}', Problem.BAD_VALUE, "nightly must be True or False, got 'true'"),
    ("nightly file in a per-commit suite", f'register_amd_ci(10, "{FIXED}", nightly=True){MAIN}', Problem.NEVER_RUNS,
     f"registered nightly=True but suite '{FIXED}' runs in a per-commit stage"),
    ("per-commit file in a nightly suite", f'register_amd_ci(10, "{NIGHTLY}"){MAIN}', Problem.NEVER_RUNS,
     f"registered nightly=False but suite '{NIGHTLY}' runs in a nightly stage"),
    ("duplicate", f'register_amd_ci(10, "{FIXED}")\nregister_amd_ci(20, "{FIXED}"){MAIN}', Problem.DUPLICATE,
     f"already registered to '{FIXED}' on line 1"),
    ("over the per-file timeout", f'register_amd_ci(500, "{FIXED}"){MAIN}', Problem.OVER_BUDGET,
     "estimated at 500 s on mi325 (per-file timeout 450 s)"),
    ("non-literal argument", f'X = 5\nregister_amd_ci(est_time=X, suite="{FIXED}"){MAIN}', Problem.BAD_CALL, "est_time must be a literal, got `X`"),
    ("f-string suite", f'register_amd_ci(10, f"stage-{{1}}"){MAIN}', Problem.BAD_CALL, "suite must be a literal"),
    ("unknown keyword", f'register_amd_ci(10, "{FIXED}", weight=3){MAIN}', Problem.BAD_CALL, "unknown argument 'weight'"),
    ("keyword given twice", f'register_amd_ci(10, "{FIXED}", suite="{FIXED}"){MAIN}', Problem.BAD_CALL, "suite given twice"),
    ("stage without runner_config", f'register_amd_ci(10, stage="fx-b"){MAIN}', Problem.BAD_CALL,
     "give suite=, or stage= and runner_config= (both strings), not a mix"),
    ("suite and stage", f'register_amd_ci(10, "{FIXED}", stage="fx-b", runner_config="4-gpu-amd"){MAIN}', Problem.BAD_CALL, "not a mix"),
    ("no suite", f"register_amd_ci(est_time=10){MAIN}", Problem.BAD_CALL, "no suite"),
    ("negative est_time", f'register_amd_ci(-5, "{FIXED}"){MAIN}', Problem.BAD_VALUE, "est_time must be a finite number of seconds > 0, got -5"),
    ("zero est_time", f'register_amd_ci(0, "{FIXED}"){MAIN}', Problem.BAD_VALUE, "est_time must be a finite number of seconds > 0, got 0"),
    ("infinite est_time", f'register_amd_ci(1e999, "{FIXED}"){MAIN}', Problem.BAD_VALUE, "est_time must be a finite number of seconds > 0, got inf"),
    ("NaN est_time", f'register_amd_ci(float("nan"), "{FIXED}"){MAIN}', Problem.BAD_CALL, "est_time must be a literal"),
    ("string est_time", f'register_amd_ci("10", "{FIXED}"){MAIN}', Problem.BAD_VALUE, "got '10'"),
    ("bool est_time", f'register_amd_ci(True, "{FIXED}"){MAIN}', Problem.BAD_VALUE, "got True"),
    ("disabled not a string", f'register_amd_ci(10, "{FIXED}", disabled=True){MAIN}', Problem.BAD_VALUE,
     "disabled must be a reason (a non-empty string) or absent, got True"),
    ("disabled empty", f'register_amd_ci(10, "{FIXED}", disabled=" "){MAIN}', Problem.BAD_VALUE, "disabled must be a reason"),
    ("attribute call", f'import sglang.test.ci.ci_register as ci\nci.register_amd_ci(est_time=20, suite="{FIXED}"){MAIN}',
     Problem.BAD_CALL, "SGLang's collector reads only a bare `register_amd_ci(...)` call"),
    ("starred", "register_amd_ci(*ARGS)\n", Problem.BAD_CALL, "*args/**kwargs cannot be read statically"),
    ("double starred", "register_amd_ci(**KW)\n", Problem.BAD_CALL, "*args/**kwargs cannot be read statically"),
    ("too many positional", 'register_amd_ci(10, "a", False, None, 5)\n', Problem.BAD_CALL, "register_amd_ci takes at most 4 positional arguments"),
    ("no executable main", f'import unittest\nregister_amd_ci(10, "{FIXED}")\nclass T(unittest.TestCase):\n    pass\n',
     Problem.NO_MAIN, "`python3 FILE -f` would exit 0 without running a test"),
    ("main that runs nothing", f'register_amd_ci(10, "{FIXED}")\nif __name__ == "__main__":\n    pass\n', Problem.NO_MAIN, "would exit 0"),
    ("syntax error", 'def broken(:\n    pass\nregister_amd_ci(1, "x")\n', Problem.UNREADABLE, "cannot parse"),
]


@pytest.mark.parametrize("source, kind, message", [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_broken_registrations_name_file_line_and_kind(tmp_path, small_config, source, kind, message):
    write_tree(tmp_path, {"sub/bad.py": source})
    found = findings(tmp_path, small_config)
    assert len(found) >= 1 and {f.kind for f in found} == {kind}, found
    line = next(i for i, text in enumerate(source.splitlines(), 1) if "register_amd_ci(" in text or "def broken" in text)
    if kind is Problem.DUPLICATE:
        line += 1
    assert any(f.where == f"sub/bad.py:{line}" and message in f.message for f in found), found
    with pytest.raises(TreeProblems) as caught:  # and through the loader: a UserError, exit code 2
        load_tree(small_config, tmp_path)
    assert isinstance(caught.value, UserError) and caught.value.multiline
    assert f"  {kind.value} ({len(found)}):" in str(caught.value) and f"    sub/bad.py:{line}: " in str(caught.value)


def test_fine_variants_are_not_problems(tmp_path, small_config):
    write_tree(tmp_path, {
        "a.py": f'import pytest\nregister_amd_ci(10, "{FIXED}")\ndef test_x():\n    pass\n',  # pytest-style: no main needed
        "b.py": f'register_amd_ci(10, "{FIXED}", disabled="not on ROCm")\n',  # disabled: runs nothing anyway
        "c.py": f'register_amd_ci(10, "{FIXED}")\nif __name__ == "__main__":\n    import sys; sys.exit(main())\n',
        "d.py": f'register_amd_ci(450, "{FIXED}"){MAIN}',  # exactly the per-file timeout is allowed
        "e.py": f'register_amd_ci(10, "{FIXED}")\nregister_amd_ci(10, "{FOUR}"){MAIN}',  # two suites: no duplicate
        "f.py": f'register_amd_ci(10, "{NIGHTLY}", nightly=True, disabled=None){MAIN}',
        "g.py": f'register_amd_ci(10, "{FIXED}", False, None){MAIN}',  # every positional, defaults spelled out
    })
    assert findings(tmp_path, small_config) == []


def test_every_problem_of_a_tree_in_one_report_grouped_by_kind(tmp_path, small_config):
    files = {f"case_{i:02}.py": source for i, (_, source, _, _) in enumerate(BROKEN)}
    write(tmp_path, files)  # among good files
    with pytest.raises(TreeProblems) as caught:
        load_tree(small_config, tmp_path)
    report = str(caught.value).splitlines()
    found = findings(tmp_path, small_config)
    assert report[0] == (f"the test tree {tmp_path} has {len(found)} problem(s); fix the tree or config "
                         f"(stages.yaml jobs, suites.yaml acknowledged):")
    headers = [line.strip() for line in report if line.startswith("  ") and not line.startswith("    ")]
    assert headers == [f"{kind.value} ({sum(f.kind is kind for f in found)}):" for kind in Problem]  # every kind, in order
    entries = [line.strip() for line in report if line.startswith("    ")]
    assert len(entries) == len(found)
    for i, (name, _, _kind, message) in enumerate(BROKEN):
        assert any(e.startswith(f"case_{i:02}.py:") and message in e for e in entries), name
    assert not any(e.startswith(("srt/", "bulk/")) for e in entries)  # the good files stay quiet


def test_over_budget_uses_the_per_arch_estimate(small_config_dir, tmp_path):
    path = small_config_dir / "suites.yaml"
    path.write_text(path.read_text().replace("est_time_overrides: {}", "est_time_overrides:\n  mi300: {slow.py: 700}"))
    config = load_config(small_config_dir, env={})
    write_tree(tmp_path, {"slow.py": f'register_amd_ci(400, "{FIXED}"){MAIN}'})
    [finding] = findings(tmp_path, config)
    assert finding.kind is Problem.OVER_BUDGET and finding.where == "slow.py:1"
    assert "700 s on mi300 (per-file timeout 600 s)" in finding.message and "mi325" not in finding.message


def test_unreadable_files_and_links(tmp_path, small_config):
    outside = write_tree(tmp_path / "outside", {"test_elsewhere.py": f'register_amd_ci(10, "no-such-suite"){MAIN}'})
    root = write_tree(tmp_path / "root", {"ok.py": f'register_amd_ci(10, "{FIXED}"){MAIN}'})
    (root / "latin1.py").write_bytes(b'register_amd_ci(10, "x")  # caf\xe9\n')
    (root / "no_registration.py").write_bytes(b"\xff\xfe not text and no registration\n")
    os.symlink(outside / "test_elsewhere.py", root / "linked.py")
    os.symlink(outside, root / "linked_dir")
    os.symlink(root, root / "loop")
    scan = scan_tree(root, small_config)
    assert [f.path for f in scan.files] == ["ok.py"]  # links are never followed: nothing outside the root
    assert [(f.kind, f.where, f.message) for f in scan.findings] == [
        (Problem.UNREADABLE, "latin1.py", "not UTF-8 text"), (Problem.UNREADABLE, "no_registration.py", "not UTF-8 text")]


def test_the_loader_wants_a_directory(tmp_path, small_config):
    with pytest.raises(UserError, match=f"test root {tmp_path / 'nope'} is not a directory"):
        load_tree(small_config, tmp_path / "nope")


def test_config_listed_files_and_per_arch_overrides(small_config_dir, tmp_path):
    import datetime as dt

    from ci.arch import ArchResolution
    from ci.plan import build_plan

    path = small_config_dir / "suites.yaml"
    path.write_text(path.read_text().replace("files: {}", f"files:\n  {FIXED}:\n    - {{path: listed/test_listed.py, est_time: 77}}")
                    .replace("est_time_overrides: {}", "est_time_overrides:\n  mi300: {srt/test_keyword.py: 500}"))
    config = load_config(small_config_dir, env={})
    tree = load_tree(config, write_tree(tmp_path, GOOD))

    def units(arch):
        plan = build_plan(config, "fx-a", ArchResolution(config.arch(arch), "test"), dt.date(2026, 1, 1), tree, suite=FIXED)
        return plan.jobs[0].units

    assert units("mi300")["listed/test_listed.py"].seconds == 77
    assert units("mi300")["srt/test_keyword.py"].seconds == 500
    assert units("mi325")["srt/test_keyword.py"].seconds == 141


# --- properties: whatever the registration calls say, a clean scan or findings, never a crash ------
SUITES = [FIXED, FOUR, NIGHTLY, "fx-retired-amd", "no-such-suite-amd", "base-b-test-1-gpu-small", ""]
LITERALS = st.one_of(
    st.integers(-10, 10**6).map(repr), st.floats(allow_nan=False).map(repr), st.just("1e999"), st.just("-1e999"),
    st.sampled_from(SUITES).map(repr), st.text(max_size=12).map(repr), st.booleans().map(repr), st.just("None"),
    st.lists(st.integers(0, 9), max_size=3).map(repr), st.just("{}"), st.just("b'x'"),
)
EXPRESSIONS = LITERALS | st.sampled_from(["X", "f'{X}'", "float('nan')", "1 + 2", "[X]", "lambda: 1", "*ARGS", "(yield)"])
KEYWORD_NAMES = st.sampled_from(["est_time", "suite", "nightly", "disabled", "stage", "runner_config", "weight", "**"])


@st.composite
def registration_call(draw) -> str:
    function = draw(st.sampled_from(["register_amd_ci", "ci.register_amd_ci", "register_cuda_ci"]))
    if draw(st.booleans()):  # well formed, or nearly
        args = [repr(draw(st.floats(0.001, 5000) | st.integers(1, 5000))), repr(draw(st.sampled_from(SUITES)))]
        keywords = [f"nightly={draw(st.booleans())}"] if draw(st.booleans()) else []
        if draw(st.booleans()):
            keywords.append(f"disabled={draw(st.sampled_from(['None', repr('flaky'), 'True']))}")
    else:
        args = draw(st.lists(EXPRESSIONS, max_size=5))
        keywords = [("**KW" if name == "**" else f"{name}={draw(EXPRESSIONS).lstrip('*') or 'X'}")
                    for name in draw(st.lists(KEYWORD_NAMES, max_size=4))]
    return f"{function}({', '.join(args + keywords)})"


@st.composite
def source_file(draw) -> str:
    lines = draw(st.lists(registration_call(), min_size=1, max_size=4))
    head = draw(st.sampled_from(["", "import pytest\n", "import unittest\n", "def f(:\n", "register_amd_ci = 1\n"]))
    tail = draw(st.sampled_from(["", MAIN, '\nif __name__ == "__main__":\n    pass\n']))
    return head + "\n".join(lines) + "\n" + tail


@settings(max_examples=250, deadline=2000, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(files=st.lists(source_file(), min_size=1, max_size=3))
def test_scan_and_check_give_a_clean_result_or_findings_never_a_crash(tmp_path_factory, small_config, files):
    root = tmp_path_factory.mktemp("prop-tree")
    write_tree(root, {f"t{i}.py": text for i, text in enumerate(files)})
    started = time.monotonic()
    scan = scan_tree(root, small_config)
    check = check_tree(scan, small_config)
    assert time.monotonic() - started < 1.0  # a handful of files: fast
    event("clean" if not check.problems else "findings")
    event(f"registrations read: {min(len(scan.files), 3)}")
    for problem in check.problems:
        path, _, line = problem.where.partition(":")
        assert path in {f"t{i}.py" for i in range(len(files))} and problem.message and "\n" not in problem.message
        assert line == "" or int(line) >= 0
    try:
        load_tree(small_config, root)
    except TreeProblems as exc:
        assert check.problems and all(f"    {p.where}: {p.message}" in str(exc) for p in check.problems)
    else:
        assert not check.problems
    # Every AMD call at module level of a parsed file is either a registration or a finding at its line.
    for i, text in enumerate(files):
        if any(f.kind is Problem.UNREADABLE and f.where.startswith(f"t{i}.py") for f in scan.findings):
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if "register_amd_ci(" not in line:
                continue
            registered = any(f.path == f"t{i}.py" and f.line == number for f in scan.files)
            found = any(f.where == f"t{i}.py:{number}" for f in scan.findings)
            assert registered != found, (line, scan.files, scan.findings)
