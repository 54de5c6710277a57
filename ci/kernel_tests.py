"""The kernel tests' pytest command line: sgl_kernel_tests/ of the toolkit, the known-issues plugin
for the arch and JUnit XML. One argv, run on the host or in the container."""

from __future__ import annotations

from collections.abc import Sequence

TESTS_DIR = "sgl_kernel_tests"  # in the toolkit, beside ci/
JUNIT_NAME = "kernel-tests.xml"  # in the reports folder


def pytest_argv(python: str, toolkit: str, arch: str, reports: str, extra: Sequence[str]) -> list[str]:
    """`python -m pytest` on the kernel tests under `toolkit` (a path where it runs), the JUnit
    file in `reports`; `extra` goes to pytest exactly as typed."""
    tests = f"{toolkit}/{TESTS_DIR}"
    return [python, "-m", "pytest", "-c", f"{tests}/pytest.ini", tests, "-p", "ci.known_issues", "--sgl-arch", arch,
            f"--junitxml={reports}/{JUNIT_NAME}", *extra]
