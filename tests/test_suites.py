"""Suite discovery over a realistic tree written for the test: many files, every registration
style, a few broken ones; nothing is ever imported."""

from __future__ import annotations

from pathlib import Path

import pytest

from ci.config import load_config
from ci.suites import RegistrationError, discover, registrations, select

CONFIG = load_config(env={})

GOOD = {
    "srt/test_keyword.py": 'from sglang.test.ci.ci_register import register_amd_ci\nregister_amd_ci(est_time=141, suite="stage-b-test-1-gpu-small-amd")\n',
    "srt/test_positional.py": 'register_amd_ci(60, "stage-a-test-1-gpu-small-amd")\n',
    "srt/test_stage_config.py": 'register_amd_ci(300, stage="stage-c", runner_config="4-gpu-amd")\n',
    "srt/test_disabled.py": 'register_amd_ci(est_time=30, suite="stage-b-test-1-gpu-small-amd", disabled="flaky on ROCm 7")\n',
    "srt/test_nightly.py": 'register_amd_ci(900, "nightly-test-8-gpu-amd", True)\n',
    "srt/test_two_suites.py": 'register_amd_ci(10, "stage-a-test-1-gpu-small-amd")\nregister_amd_ci(12, "stage-b-test-1-gpu-small-amd")\n',
    "srt/test_attribute.py": 'import sglang.test.ci.ci_register as ci\nci.register_amd_ci(est_time=20, suite="stage-b-test-1-gpu-small-amd")\n',
    "srt/test_cuda_only.py": 'register_cuda_ci(est_time=20, suite="stage-b-test-1-gpu-small")\n',
    "srt/test_pytest_file.py": 'import pytest\nregister_amd_ci(15, "stage-b-test-1-gpu-small-amd")\ndef test_x():\n    pass\n',
    "srt/test_not_at_module_level.py": 'def helper():\n    register_amd_ci(est_time=1, suite="no-such-suite")\n',
    "srt/helpers.py": "IMPORTING_THIS_WOULD_FAIL = 1 / 0\n",
    "srt/test_side_effects.py": 'raise SystemExit("never import test files")\nregister_amd_ci(5, "stage-a-test-1-gpu-small-amd")\n',
}


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    for i in range(40):  # bulk: a realistic number of plain registrations
        (root / "bulk" / f"test_bulk_{i:02}.py").parent.mkdir(parents=True, exist_ok=True)
        (root / "bulk" / f"test_bulk_{i:02}.py").write_text(f'register_amd_ci(est_time={30 + i * 7}, suite="stage-b-test-1-gpu-small-amd")\n')
    return root


def test_every_registration_style(tmp_path):
    files = {f.path: f for f in discover(write(tmp_path, GOOD), CONFIG) if not f.path.startswith("bulk/")}
    assert files["srt/test_keyword.py"].suite == "stage-b-test-1-gpu-small-amd" and files["srt/test_keyword.py"].est_time == 141
    assert files["srt/test_positional.py"].suite == "stage-a-test-1-gpu-small-amd"
    assert files["srt/test_stage_config.py"].suite == "stage-c-test-4-gpu-amd"
    assert files["srt/test_disabled.py"].disabled == "flaky on ROCm 7"
    assert files["srt/test_nightly.py"].nightly is True
    assert files["srt/test_attribute.py"].est_time == 20
    assert files["srt/test_pytest_file.py"].style == "pytest" and files["srt/test_keyword.py"].style == "unittest"
    assert files["srt/test_side_effects.py"].line == 2
    assert "srt/test_cuda_only.py" not in files and "srt/test_not_at_module_level.py" not in files
    both = [f.suite for f in discover(tmp_path, CONFIG) if f.path == "srt/test_two_suites.py"]
    assert both == ["stage-a-test-1-gpu-small-amd", "stage-b-test-1-gpu-small-amd"]


def test_select_splits_disabled_and_nightly(tmp_path):
    found = discover(write(tmp_path, GOOD), CONFIG)
    run, disabled = select(found, ["stage-b-test-1-gpu-small-amd"])
    assert len(run) == 40 + 4 and [f.path for f in disabled] == ["srt/test_disabled.py"]
    nightly, _ = select(found, ["nightly-test-8-gpu-amd"], nightly=True)
    assert [f.path for f in nightly] == ["srt/test_nightly.py"]


@pytest.mark.parametrize(
    "text, message",
    [
        ('register_amd_ci(est_time=10, suite="stage-b-test-1-gpu-small")\n', "bad.py:1: suite 'stage-b-test-1-gpu-small' is not known to config"),
        ('X = 5\nregister_amd_ci(est_time=X, suite="stage-a-test-1-gpu-small-amd")\n', "bad.py:2: est_time must be a literal, got `X`"),
        ('register_amd_ci(10, f"stage-{1}")\n', "bad.py:1: suite must be a literal"),
        ('register_amd_ci(10, "stage-a-test-1-gpu-small-amd", weight=3)\n', "bad.py:1: unknown argument 'weight'"),
        ('register_amd_ci(10, stage="stage-c")\n', "bad.py:1: stage and runner_config go together"),
        ('register_amd_ci(est_time=10)\n', "bad.py:1: no suite"),
        ('register_amd_ci(-5, "stage-a-test-1-gpu-small-amd")\n', "bad.py:1: est_time must be a number of seconds > 0"),
        ('register_amd_ci(*ARGS)\n', "bad.py:1: *args/**kwargs cannot be read statically"),
        ('register_amd_ci(10, "a", False, None, 5)\n', "bad.py:1: register_amd_ci takes at most 4 positional arguments"),
        ('def broken(:\n    pass\nregister_amd_ci(1, "x")\n', "bad.py:1: cannot parse"),
    ],
)
def test_broken_registrations_name_file_and_line(tmp_path, text, message):
    (tmp_path / "bad.py").write_text(text)
    with pytest.raises(RegistrationError) as caught:
        discover(tmp_path, CONFIG)
    assert message in str(caught.value)


def test_config_listed_files_and_per_arch_overrides(config_dir, tmp_path):
    (config_dir / "suites.yaml").write_text(
        "extra_suites: [nightly-test-8-gpu-amd]\nfiles:\n  stage-a-test-1-gpu-small-amd:\n    - {path: listed/test_listed.py, est_time: 77}\n"
        "est_time_overrides:\n  mi300: {srt/test_keyword.py: 500}\n")
    config = load_config(config_dir, env={})
    found = {f.path: f for f in discover(write(tmp_path, GOOD), config, arch="mi300")}
    assert found["listed/test_listed.py"].est_time == 77 and found["listed/test_listed.py"].suite == "stage-a-test-1-gpu-small-amd"
    assert found["srt/test_keyword.py"].est_time == 500
    assert {f.path: f for f in discover(tmp_path, config, arch="mi325")}["srt/test_keyword.py"].est_time == 141


def test_registrations_reads_calls_only():
    assert registrations('register_amd_ci(1, "s")\nx = register_amd_ci\n', "f.py") == [{"est_time": 1, "suite": "s", "line": 1}]
