"""The import layout the README's "Layout" section promises: the `ci` package never imports the
demo, its sample files or its sandbox (read from the source, no import runs); the in-container
runner and what it imports need only the standard library (the CI image has nothing more)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, base_env

# Every third-party package this project depends on: none may be imported inside the container.
THIRD_PARTY = ("yaml", "docker", "requests", "rich", "tenacity", "packaging", "pytest", "nox", "invoke")


def _imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_no_module_in_ci_imports_the_demo():
    offenders = {
        str(path.relative_to(ROOT)): sorted(n for n in _imported(path) if n == "demo" or n.startswith("demo."))
        for path in sorted((ROOT / "ci").rglob("*.py"))
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_demo_is_not_inside_ci():
    assert not [p.name for p in (ROOT / "ci").iterdir() if p.name.startswith(("demo", "sandbox"))]


def test_the_scan_sees_an_import_of_the_demo(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import os\nfrom demo import sandbox\nimport demo.run as r\n")
    assert {"demo", "demo.sandbox", "demo.run"} <= _imported(probe)


def test_the_runner_needs_only_the_standard_library():
    blocker = (f"import sys\nclass Block:\n    def find_spec(self, name, path=None, target=None):\n"
               f"        if name.split('.')[0] in {THIRD_PARTY!r}:\n            raise ImportError('not in the CI image: ' + name)\n"
               "sys.meta_path.insert(0, Block())\nimport ci.runner\n"
               "print(' '.join(sorted(m for m in sys.modules if m.startswith('ci'))))\n")
    done = subprocess.run([sys.executable, "-c", blocker], cwd=ROOT, env=base_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "ci.procs" in done.stdout.split() and "ci.config" not in done.stdout.split()
