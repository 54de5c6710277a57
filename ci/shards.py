"""Long files split by test class: which `unittest.TestCase` classes of a file hold tests (read
with `ast`, never imported), whether the file may be split, and how its classes group into
shards, each run as its own process (`python3 FILE -f A B`, or pytest node ids `FILE::A`).

A class is a shard candidate when it is a TestCase (one of its bases, followed through the file
and through imported modules found under the workspace's import roots, is a configured TestCase
base) and it has tests, its own or inherited (mixins included). Abstract bases and mixins without
tests are not shards; a mixin is never one (unittest does not load it). When any class's tests
cannot be counted (a base imported from a module this checkout lacks), or the classes are made at
run time, or the file's `__main__` would not hand class names to `unittest.main`, the file is not
split, and the plan says why. The union of a file's shards runs every test the whole file runs."""

from __future__ import annotations

import ast
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ci.partition import Item, lpt

NO_TESTS_BASES = ("object", "ABC", "abc.ABC")  # bases known to hold no tests and not to be TestCases


@dataclass(frozen=True)
class CaseClass:
    name: str
    line: int
    tests: int  # test methods unittest (or pytest) collects for it, inherited ones included


@dataclass(frozen=True)
class Discovery:
    classes: tuple[CaseClass, ...]  # shard candidates, in file order
    why_not: str = ""  # why the file must run whole ("" when it may be split)

    @property
    def splittable(self) -> bool:
        return not self.why_not and len(self.classes) >= 2

    @property
    def reason(self) -> str:
        if self.why_not:
            return self.why_not
        return "" if len(self.classes) >= 2 else f"{len(self.classes)} test class(es): nothing to split"


@dataclass(frozen=True)
class _Info:
    """What is known of a class: is it a TestCase, and its test method names (None: unknown)."""

    testcase: bool | None
    tests: frozenset[str] | None
    why: str = ""  # why unknown


_UNKNOWN = _Info(None, None)


class _Module:
    """One parsed module: its top-level classes, imports, and a resolver for imported names."""

    def __init__(self, tree: ast.Module, bases: frozenset[str], resolve: Callable[[str, str, int], _Info],
                 package: str = "", depth: int = 0) -> None:
        self.tree, self.bases, self.resolve, self.package, self.depth = tree, bases, resolve, package, depth
        self.imports: dict[str, tuple[str, str | None]] = {}  # local name -> (module, name or None: the module)
        self.classes: dict[str, ast.ClassDef] = {}
        for node in tree.body:
            if isinstance(node, ast.ImportFrom):
                module = ("." * node.level) + (node.module or "")
                for alias in node.names:
                    self.imports[alias.asname or alias.name] = (module, alias.name)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        self.imports[alias.asname] = (alias.name, None)
                    else:
                        head = alias.name.split(".")[0]
                        self.imports[head] = (head, None)
            elif isinstance(node, ast.ClassDef):
                self.classes[node.name] = node
            elif isinstance(node, ast.Delete):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        self.classes.pop(target.id, None)
        self._memo: dict[str, _Info] = {}

    def base_info(self, base: ast.expr, before: int) -> _Info:
        text = ast.unparse(base)
        if text in self.bases:
            return _Info(True, frozenset())
        if text in NO_TESTS_BASES:
            return _Info(False, frozenset())
        if isinstance(base, ast.Name):
            local = self.classes.get(base.id)
            if local is not None and local.lineno < before:
                return self.class_info(local.name)
        parts = text.split(".")
        if parts[0] in self.imports and all(p.isidentifier() for p in parts):
            module, name = self.imports[parts[0]]
            dotted = ".".join([self._absolute(module), *([name] if name else []), *parts[1:]])
            owner, _, cls = dotted.rpartition(".")
            if getattr(self.resolve, "third_party", lambda m: False)(dotted):
                return _Info(False, frozenset())  # a library's class: no tests of ours
            if self.depth >= 8:
                return _Info(None, None, f"{text}: imports nested too deep")
            return self.resolve(owner, cls, self.depth + 1)
        return _Info(None, None, f"base {text} cannot be followed")

    def _absolute(self, module: str) -> str:
        if not module.startswith("."):
            return module
        level = len(module) - len(module.lstrip("."))
        parts = self.package.split(".") if self.package else []
        parts = parts[:len(parts) - (level - 1)] if level > 1 else parts
        rest = module.lstrip(".")
        return ".".join([*parts, rest] if rest else parts)

    def class_info(self, name: str) -> _Info:
        if name in self._memo:
            return self._memo[name]
        self._memo[name] = _UNKNOWN  # a cycle is unknown, not infinite
        node = self.classes[name]
        own = frozenset(f.name for f in node.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                        and f.name.startswith("test"))
        testcase: bool | None = False
        tests: frozenset[str] | None = own
        why = ""
        for base in node.bases:
            info = self.base_info(base, node.lineno)
            if info.testcase is None:
                testcase = None if testcase is not True else True
            elif info.testcase:
                testcase = True
            if info.tests is None:
                tests, why = None, why or info.why or f"base {ast.unparse(base)} cannot be followed"
            elif tests is not None:
                tests = tests | info.tests
        result = _Info(testcase, tests, why)
        self._memo[name] = result
        return result


def _dynamic_classes(tree: ast.Module) -> bool:
    """Classes made at run time (globals()[...] = type(...), setattr on the module)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id == "type" and len(node.args) == 3:
                return True
            if isinstance(func, ast.Name) and func.id == "globals":
                return True
    return False


def _main_takes_class_names(tree: ast.Module) -> tuple[bool, str]:
    """Does `python3 FILE -f A B` run only A and B: a `__main__` that calls unittest.main with
    sys.argv (no argv=, defaultTest=, module=) and leaves sys.argv alone."""
    from_unittest = {a.asname or a.name for n in tree.body if isinstance(n, ast.ImportFrom) and n.module == "unittest"
                     for a in n.names if a.name == "main"}
    for statement in tree.body:
        if not isinstance(statement, ast.If):
            continue
        test = statement.test
        if not (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "__name__"):
            continue
        block = ast.Module(body=statement.body, type_ignores=[])
        if "sys.argv" in ast.unparse(block):
            return False, "its __main__ rewrites sys.argv"
        calls = [n for n in ast.walk(block) if isinstance(n, ast.Call)
                 and (ast.unparse(n.func) == "unittest.main" or (isinstance(n.func, ast.Name) and n.func.id in from_unittest))]
        if not calls:
            return False, "its __main__ does not call unittest.main (class names would not reach the loader)"
        if any(k.arg in ("argv", "defaultTest", "module") for c in calls for k in c.keywords) or any(c.args for c in calls):
            return False, "its __main__ calls unittest.main with its own argv/defaultTest/module"
        return True, ""
    return False, "no __main__ block"


def discover(source: str, style: str, bases: Sequence[str],
             resolve: Callable[[str, str, int], _Info] | None = None, package: str = "") -> Discovery:
    """The shard candidates of one file, or why it must run whole."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return Discovery((), "cannot be parsed")
    resolve = resolve or (lambda module, name, depth: _Info(None, None, f"{name} is imported from {module}"))
    module = _Module(tree, frozenset(bases), resolve, package)
    if _dynamic_classes(tree):
        return Discovery((), "makes classes at run time (type()/globals())")
    if any(isinstance(n, ast.FunctionDef) and n.name == "load_tests" for n in tree.body):
        return Discovery((), "defines load_tests (it decides what runs)")
    if style == "pytest":
        loose = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name.startswith("test")]
        if loose:
            return Discovery((), f"module-level test functions ({loose[0]}, ...) belong to no class")
    found = []
    for name, node in module.classes.items():
        info = module.class_info(name)
        collected = info.testcase or (style == "pytest" and name.startswith("Test") and info.testcase is not None)
        if info.tests is None:
            if info.testcase is False and not (style == "pytest" and name.startswith("Test")):
                continue  # a mixin (not a TestCase, not collected): never a shard
            return Discovery((), f"{name}: its tests cannot be counted ({info.why})")
        if info.testcase is None and info.tests:
            return Discovery((), f"{name}: cannot tell whether it is a TestCase ({info.why})")
        if collected and info.tests:
            found.append(CaseClass(name, node.lineno, len(info.tests)))
    for local, (imported_from, original) in module.imports.items():  # unittest also loads imported TestCases
        if local.startswith("Test") and local not in bases and original is not None:
            if getattr(module.resolve, "third_party", lambda m: False)(module._absolute(imported_from)):
                continue
            info = module.resolve(module._absolute(imported_from), original, 1)
            if info.tests is None or info.testcase is None:
                return Discovery((), f"imports {local} from {imported_from}: unittest would run it too, and its tests "
                                     "cannot be counted")
            if info.testcase and info.tests:
                return Discovery((), f"imports the TestCase {local} from {imported_from}: it runs with the file")
    found.sort(key=lambda c: c.line)
    if style != "pytest" and len(found) >= 2:  # pytest takes node ids; unittest needs its main to pass names on
        ok, why = _main_takes_class_names(tree)
        if not ok:
            return Discovery(tuple(found), why)
    return Discovery(tuple(found))


class ImportResolver:
    """Follows `from M import N` to M's source under the import roots (parsed, never imported)."""

    def __init__(self, roots: Sequence[Path], bases: Sequence[str]) -> None:
        self.roots, self.bases = tuple(roots), frozenset(bases)
        self._modules: dict[str, _Module | None] = {}

    def _module(self, dotted: str) -> _Module | None:
        if dotted not in self._modules:
            self._modules[dotted] = None
            relative = Path(*dotted.split("."))
            for root in self.roots:
                for candidate in (root / relative.with_suffix(".py"), root / relative / "__init__.py"):
                    if candidate.is_file():
                        try:
                            tree = ast.parse(candidate.read_bytes().decode("utf-8"))
                        except (OSError, UnicodeDecodeError, SyntaxError, ValueError, RecursionError, MemoryError):
                            continue
                        package = dotted if candidate.name == "__init__.py" else dotted.rpartition(".")[0]
                        self._modules[dotted] = _Module(tree, self.bases, self, package)
                        break
                if self._modules[dotted] is not None:
                    break
        return self._modules[dotted]

    def third_party(self, dotted: str) -> bool:
        """A module outside the workspace (torch, transformers, the stdlib): its classes are
        assumed to hold no tests (TestCase roots are matched by name before this is asked)."""
        top = dotted.lstrip(".").split(".")[0]
        return bool(self.roots) and not any((r / top).is_dir() or (r / f"{top}.py").is_file() for r in self.roots)

    def __call__(self, dotted: str, name: str, depth: int) -> _Info:
        module = self._module(dotted)
        if module is None:
            return _Info(None, None, f"{name} is imported from {dotted}, which is not under {', '.join(map(str, self.roots)) or 'any import root'}")
        module.depth = depth
        if name in module.classes:
            return module.class_info(name)
        if name in module.imports and depth < 8:  # re-exported
            source, original = module.imports[name]
            if original is None:  # `import x as name`: a module, which unittest never loads (as discover skips it)
                return _Info(False, frozenset())
            return self(module._absolute(source), original, depth + 1)
        return _Info(None, None, f"{name} is not a class of {dotted}")


@functools.lru_cache(maxsize=512)
def discover_file(path: Path, mtime_ns: int, style: str, bases: tuple[str, ...], roots: tuple[Path, ...],
                  package: str) -> Discovery:
    """discover() for a file on disk, cached by modification time (the plan asks once per job)."""
    try:
        source = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return Discovery((), "cannot be read")
    return discover(source, style, bases, ImportResolver(roots, bases), package)


# --- shards ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shard:
    file: str
    classes: tuple[str, ...]  # in file order
    seconds: float  # estimated
    weights: tuple[float, ...]  # each class's estimate, in `classes` order
    measured: bool  # every class's estimate was measured

    @property
    def name(self) -> str:
        return f"{self.file}::{'+'.join(self.classes)}"


def shard_name(file: str, classes: Sequence[str]) -> str:
    return f"{file}::{'+'.join(classes)}"


def plan_shards(file: str, classes: Sequence[CaseClass], file_seconds: float, measured: Mapping[str, float],
                min_shard_s: float, max_shards: int, overhead_s: float) -> tuple[Shard, ...]:
    """Whole classes grouped into shards balanced by estimate: a class's estimate is its measured
    time, else the file's estimate shared by test count; at most `max_shards`, none estimated under
    `min_shard_s` where that can be helped. One shard (no split) when the file is too short."""
    tests = sum(c.tests for c in classes) or 1
    estimate = {c.name: measured.get(f"{file}::{c.name}", file_seconds * c.tests / tests) for c in classes}
    total = sum(estimate.values())
    count = min(len(classes), max_shards, max(1, math.floor(total / min_shard_s)))
    if count < 2:
        return ()
    order = {c.name: i for i, c in enumerate(classes)}
    groups = lpt([Item(c.name, estimate[c.name]) for c in classes], count)
    shards = []
    for group in groups:
        names = sorted((i.name for i in group), key=order.__getitem__)
        is_measured = all(f"{file}::{n}" in measured for n in names)
        seconds = sum(estimate[n] for n in names) + (0.0 if is_measured else overhead_s)
        shards.append(Shard(file, tuple(names), seconds, tuple(estimate[n] for n in names), is_measured))
    return tuple(sorted(shards, key=lambda s: order[s.classes[0]]))


def shard_timeout(per_file_s: float, estimate_s: float, factor: float, slack_s: float) -> float:
    """A shard's timeout from its own estimate, as SGLang derives per-file timeouts (the estimate
    times the factor or plus the slack, whichever is larger), never over the job's per-file timeout."""
    return min(per_file_s, max(estimate_s * factor, estimate_s + slack_s))
