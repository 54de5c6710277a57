"""Long files split by test class: discovery on real files of the SGLang snapshot (bases, mixins,
imported kits, classes made at run time), the shards and their timeouts, and a real split run: a
unittest file with three classes run as two shards in two processes, each reporting only its
classes, with JUnit and a durations record per shard."""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from ci.arch import ArchResolution
from ci.config import load_config
from ci.durations import EMPTY_STORE, estimates, merge, parse_record, record_json
from ci.history import run_record
from ci.plan import build_plan, load_tree
from ci.report import write_reports
from ci.runner import RunPlan, run_plan
from ci.shards import CaseClass, discover, discover_file, plan_shards, shard_timeout
from ci.stage import planned_files
from tests.conftest import CONFIG as CONFIG_DIR
from tests.conftest import KILL_GRACE_S, ROOT, file_runs

CONFIG = load_config(env={})
BASES = tuple(CONFIG.durations.splitting.testcase_bases)
SGLANG = ROOT.parent / "shared" / "sglang"
TREE = SGLANG / "test" / "registered"
PYTHON = (SGLANG / "python",)


def real(path: str, style: str = "unittest"):
    file = TREE / path
    if not file.is_file():
        pytest.fail(f"{file} (the SGLang snapshot in ../shared) is missing")
    return discover_file(file, file.stat().st_mtime_ns, style, BASES, PYTHON, "")


def shape(found):
    return [(c.name, c.tests) for c in found.classes]


def test_real_file_of_nine_test_cases_splits_into_nine():
    found = real("amd/test_moriep_small.py")
    assert found.splittable and len(found.classes) == 9 and {c.tests for c in found.classes} == {1}
    assert found.classes[0].name == "TestPureDP" and found.classes[-1].name == "TestEPLBMoriStat"


def test_real_mixins_with_tests_are_not_shards_but_their_tests_count():
    # HiCacheStorageBaseMixin holds test_basic_backup_and_prefetch and is no TestCase: not a shard;
    # every TestCase mixing it in runs that test, the accuracy class one more of its own.
    found = real("hicache/test_hicache_storage_file_backend.py")
    assert shape(found) == [("TestHiCacheStoragePageFirstLayout", 1), ("TestHiCacheStorageMLA", 1),
                            ("TestHiCacheStoragePageFirstDirectIO", 1), ("TestHiCacheStorageAccuracy", 2)]
    assert "BaseTestSoftWatchdog" not in [c.name for c in real("debug_utils/test_soft_watchdog.py").classes]


def test_real_testcase_bases_with_tests_are_shards_and_pass_their_tests_on():
    assert shape(real("radix_cache/test_radix_attention.py")) == [
        ("TestRadixCacheFCFS", 1), ("TestRadixCacheLPM", 1), ("TestRadixCacheNonOverlapLPM", 1)]


def test_real_files_that_must_run_whole_say_why():
    kits = real("hicache/test_hicache_variants.py")  # MMLUMixin comes from a kit the snapshot lacks
    assert not kits.splittable and "MMLUMixin is imported from sglang.test.kits.eval_accuracy_kit" in kits.reason
    made = real("unit/mem_cache/test_unified_radix_cache_unittest.py")
    assert not made.splittable and "run time" in made.reason
    one = real("amd/test_kimi_k2_instruct.py")
    assert not one.splittable and one.reason == "1 test class(es): nothing to split"


def test_abstract_bases_without_tests_are_not_shards_and_imported_mixins_are_followed(tmp_path):
    """SGLang's constrained-decoding file: a TestCase base with no tests (ServerWithGrammar) and
    test mixins from kits. With the kits under an import root, its three backends are the shards."""
    source = (TREE / "constrained_decoding" / "test_constrained_decoding.py").read_text()
    assert not discover(source, "unittest", BASES).splittable  # kits not there: cannot count
    kits = tmp_path / "sglang" / "test" / "kits"
    kits.mkdir(parents=True)
    imports = re.findall(r"from (sglang\.test\.kits\.\w+) import (\w+)", source)
    assert imports, "the file no longer imports its mixins from sglang.test.kits"
    for module, names in imports:
        body = "".join(f"class {n.strip()}:\n    def test_{n.strip().lower()}(self):\n        pass\n"
                       f"    def helper(self):\n        pass\n" for n in names.split(",") if n.strip())
        (tmp_path / Path(*module.split("."))).with_suffix(".py").write_text("import os\n" + body)
    from ci.shards import ImportResolver
    found = discover(source, "unittest", BASES, ImportResolver([tmp_path], BASES))
    assert found.splittable
    names = [c.name for c in found.classes]
    assert "ServerWithGrammar" not in names and len(names) == 3 and all(c.tests >= 2 for c in found.classes)


TWO = ("import unittest\nclass TestA(unittest.TestCase):\n    def test_a(self): pass\n"
       "class TestB(unittest.TestCase):\n    def test_b(self): pass\n")


@pytest.mark.parametrize("source, why", [
    (TWO, "no __main__ block"),
    ("import sys, pytest\n" + TWO + "if __name__ == '__main__':\n    sys.exit(pytest.main([__file__]))\n",
     "does not call unittest.main"),
    (TWO + "if __name__ == '__main__':\n    unittest.main(argv=['x'])\n", "own argv"),
    (TWO + "if __name__ == '__main__':\n    import sys\n    sys.argv = sys.argv[:1]\n    unittest.main()\n", "rewrites sys.argv"),
    ("def load_tests(*a): pass\n" + TWO + "if __name__ == '__main__':\n    unittest.main()\n", "load_tests"),
])
def test_files_whose_main_or_loader_would_not_honour_class_names_run_whole(source, why):
    assert why in discover(source, "unittest", BASES).reason


def test_a_module_imported_under_a_test_name_is_no_test_case_even_re_exported(tmp_path):
    """`import json as TestData` is a module, which unittest does not load: in the file itself or
    re-exported by another module (once followed as a class named None: "cannot be counted")."""
    from ci.shards import ImportResolver
    main = "if __name__ == '__main__':\n    unittest.main()\n"
    (tmp_path / "kit.py").write_text("import json as TestData\n")
    direct = discover("import json as TestData\n" + TWO + main, "unittest", BASES, ImportResolver([tmp_path], BASES))
    assert direct.splittable, direct.reason
    re_exported = discover("from kit import TestData\n" + TWO + main, "unittest", BASES, ImportResolver([tmp_path], BASES))
    assert re_exported.splittable, re_exported.reason
    assert [c.name for c in re_exported.classes] == ["TestA", "TestB"]


def test_pytest_files_split_by_class_unless_tests_live_outside_classes():
    classes = "class TestA:\n    def test_a(self): pass\n    def test_b(self): pass\nclass TestB:\n    def test_c(self): pass\n"
    assert [(c.name, c.tests) for c in discover("import pytest\n" + classes, "pytest", BASES).classes] == [("TestA", 2), ("TestB", 1)]
    loose = discover("import pytest\ndef test_x(): pass\n" + classes, "pytest", BASES)
    assert not loose.splittable and "module-level test functions" in loose.reason


def test_shards_group_whole_classes_by_estimate_and_prefer_measurements():
    classes = [CaseClass(f"T{i}", i, tests) for i, tests in enumerate([1, 1, 2, 4])]
    shards = plan_shards("f.py", classes, 800.0, {}, min_shard_s=300, max_shards=16, overhead_s=20)
    # 800 s over 8 tests: 100, 100, 200, 400; at least 300 s a shard -> 2 shards, balanced
    assert [(s.name, s.seconds) for s in shards] == [("f.py::T0+T1+T2", 420.0), ("f.py::T3", 420.0)]
    measured = plan_shards("f.py", classes, 800.0, {"f.py::T3": 100.0, "f.py::T0": 500.0}, 300, 16, 20)
    assert sorted(s.name for s in measured) == ["f.py::T0", "f.py::T1+T3", "f.py::T2"]  # 900 s: 3 shards
    assert plan_shards("f.py", classes, 500.0, {}, 300, 16, 20) == ()  # two shards would be under 300 s
    assert len(plan_shards("f.py", classes, 10_000.0, {}, 300, 3, 20)) == 3  # max_shards


def test_a_shards_timeout_comes_from_its_own_estimate_never_over_the_files():
    assert shard_timeout(5400, 600, 1.5, 600) == 1200  # 600 s + 600 s slack beats 1.5 x 600
    assert shard_timeout(5400, 2700, 1.5, 600) == 4050  # 1.5 x 2700
    assert shard_timeout(5400, 4000, 1.5, 600) == 5400  # capped at the per-file timeout


THREE = '''"""Three test classes; each test says which class and process ran it."""
import os
import unittest



def register_amd_ci(**_):  # SGLang's registration, a no-op at run time; the CI reads it with ast
    pass


register_amd_ci(est_time=40, suite="stage-a-test-1-gpu-small-amd")


class Reporting(unittest.TestCase):  # an abstract base: no tests, not a shard
    def say(self):
        with open(os.environ["SPLIT_LOG"], "a") as log:
            log.write(f"{type(self).__name__}.{self._testMethodName} {os.getpid()}\\n")


class TestAlpha(Reporting):
    def test_one(self):
        self.say()

    def test_two(self):
        self.say()


class TestBeta(Reporting):
    def test_one(self):
        self.say()


class TestGamma(Reporting):
    def test_one(self):
        self.say()


if __name__ == "__main__":
    unittest.main()
'''


def test_a_real_split_run_two_shards_in_two_processes(tmp_path, monkeypatch):
    root = tmp_path / "test" / "registered"
    (root / "split").mkdir(parents=True)
    (root / "split" / "test_three.py").write_text(THREE)
    override = tmp_path / "override.yaml"
    jobs = yaml.safe_load((CONFIG_DIR / "stages.yaml").read_text())["stage-a"]["suites"]
    assert jobs[0]["suite"] == "stage-a-test-1-gpu-small-amd"
    override.write_text(yaml.safe_dump({
        "durations": {"splitting": {"split_above_s": 10, "min_shard_s": 1, "max_shards": 2}},
        "stages": {"stage-a": {"suites": [{**jobs[0], "partitions": 2}, *jobs[1:]]}}}))  # one partition keeps files whole
    config = load_config(CONFIG_DIR, env={"SGL_CI_CONFIG_OVERRIDE": str(override)})
    resolution = ArchResolution(config.arch("mi300"), "--arch")
    plan = build_plan(config, "stage-a", resolution, dt.date(2026, 8, 30), load_tree(config, root),
                      suite="stage-a-test-1-gpu-small-amd")
    # 40 s over 4 tests: Alpha 20 s, Beta and Gamma 10 s each -> {Alpha}, {Beta, Gamma}
    units = {u.name: u for u in plan.jobs[0].units.values()}
    assert sorted(units) == ["split/test_three.py::TestAlpha", "split/test_three.py::TestBeta+TestGamma"]
    assert units["split/test_three.py::TestBeta+TestGamma"].weights == (10.0, 10.0)
    files = planned_files(config, plan, tmp_path)
    assert [f.selectors for f in files] == [("TestAlpha",), ("TestBeta", "TestGamma")]
    assert all(0 < f.timeout_s <= plan.jobs[0].per_file_timeout_s for f in files)
    log = tmp_path / "split.log"
    monkeypatch.setenv("SPLIT_LOG", str(log))
    reports = tmp_path / "reports"
    runner = RunPlan("stage-a", str(root), str(reports), files, 60, 120, file_runs(), KILL_GRACE_S, python=sys.executable)
    with open(tmp_path / "out.txt", "w") as out:
        results = run_plan(runner, out=out)
    assert [(r.path, r.status, r.attempts[0].tests) for r in results] == [
        ("split/test_three.py::TestAlpha", "passed", 2), ("split/test_three.py::TestBeta+TestGamma", "passed", 2)]
    ran = [line.split() for line in log.read_text().splitlines()]
    by_pid: dict[str, set[str]] = {}
    for test, pid in ran:
        by_pid.setdefault(pid, set()).add(test.split(".")[0])
    assert sorted(map(sorted, by_pid.values())) == [["TestAlpha"], ["TestBeta", "TestGamma"]]  # two processes
    assert len(ran) == 4  # every test of the file ran exactly once
    write_reports(reports, "stage-a", results, [], {})
    cases = {c.get("name"): c for c in ET.parse(reports / "junit.xml").getroot().iter("testcase")}
    assert set(cases) == {"split/test_three.py::TestAlpha", "split/test_three.py::TestBeta+TestGamma"}
    record = run_record(plan, "stage-a", results, "img", "sha256:x", {"GITHUB_RUN_ID": "7"}, dt.datetime.now(dt.timezone.utc), "rocm700")
    assert [(u.name, u.est_time, sorted(u.classes)) for u in record.units] == [
        ("split/test_three.py::TestAlpha", 40.0, ["TestAlpha"]),
        ("split/test_three.py::TestBeta+TestGamma", 40.0, ["TestBeta", "TestGamma"])]
    beta_gamma = record.units[1]
    assert beta_gamma.classes["TestBeta"] == pytest.approx(beta_gamma.seconds / 2)
    reread = parse_record(json.loads(record_json(record)), "r")
    store = merge(EMPTY_STORE, [reread], reread.finished, CONFIG.durations.history)
    assert sorted(estimates(store, "mi300", None, CONFIG.durations.history)) == [
        "split/test_three.py::TestAlpha", "split/test_three.py::TestBeta", "split/test_three.py::TestGamma"]


def test_a_job_of_one_partition_keeps_its_long_files_whole(tmp_path):
    root = tmp_path / "test" / "registered"
    (root / "split").mkdir(parents=True)
    (root / "split" / "test_three.py").write_text(THREE)
    override = tmp_path / "override.yaml"
    override.write_text(yaml.safe_dump({"durations": {"splitting": {"split_above_s": 10, "min_shard_s": 1}}}))
    config = load_config(CONFIG_DIR, env={"SGL_CI_CONFIG_OVERRIDE": str(override)})
    plan = build_plan(config, "stage-a", ArchResolution(config.arch("mi300"), "--arch"), dt.date(2026, 8, 30),
                      load_tree(config, root), suite="stage-a-test-1-gpu-small-amd")
    assert list(plan.jobs[0].units) == ["split/test_three.py"]  # nothing to balance: one process, one import


def test_the_stage_writes_its_record_and_draws_its_partitions(tmp_path, monkeypatch):
    """run_stage past the container (nothing to run here): the record, and the chart in the summary."""
    import ci.stage
    from ci.stage import StageOptions, run_stage

    root = tmp_path / "test" / "registered"
    (root / "split").mkdir(parents=True)
    (root / "split" / "test_three.py").write_text(THREE)
    config = load_config(CONFIG_DIR, env={})
    plan = build_plan(config, "stage-a", ArchResolution(config.arch("mi300"), "--arch"), dt.date(2026, 8, 30),
                      load_tree(config, root), suite="stage-a-test-1-gpu-small-amd", partition_arg=(1, 1))
    monkeypatch.setattr(ci.stage, "planned_files", lambda *a: ())
    summary = tmp_path / "summary.md"
    reports = tmp_path / "ci-reports" / "x"
    with open(tmp_path / "out.txt", "w") as out:
        code = run_stage(config, plan, StageOptions(tmp_path, reports, 0, False), {"GITHUB_STEP_SUMMARY": str(summary)},
                         dt.date(2026, 8, 30), out)
    assert code == 1  # nothing ran: never a pass
    record = json.loads((reports / "durations.json").read_text())
    assert (record["format"], record["kind"], record["version"], record["run"]["arch"]) == ("sgl-ci-durations", "run", 1, "mi300")
    assert record["run"]["rocm"] == config.images.rocm and record["units"] == []
    text = summary.read_text()
    assert "### Partitions: stage-a-test-1-gpu-small-amd" in text and "```mermaid\ngantt" in text
    assert "(this run)" in text
