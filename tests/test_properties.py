"""Property tests at the door's boundary (`cli.run`): generated YAML, registrations and arguments
through the loader, discovery and the parsers end in success or exit 2 with one line (a tree's
problems: one grouped report), never a traceback, never past a second."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import math
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ci import cli
from ci.arch import resolve_arch
from ci.changes import parse_targets
from ci.cli import argv_after_dashes, parse_stage_args
from ci.config import FILES, OVERRIDE_ENV, load_config
from ci.durations import read_durations
from ci.images import parse_image_name
from ci.partition import parse_partition
from ci.plan import load_tree
from ci.routing import arches_for_event
from tests.conftest import CONFIG as CONFIG_DIR

pytestmark = pytest.mark.timeout(600)
CONFIG = load_config(env={})
# No example database: nothing is written into the repository tree.
PROPERTY = settings(max_examples=150, deadline=1000, suppress_health_check=[HealthCheck.too_slow], database=None)


def at_the_door(func, *args, **kwargs) -> tuple[int, list[str]]:
    """(exit code, stderr lines) of `func` run as a door runs it."""
    err = io.StringIO()
    code = 0
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            cli.run(func, *args, **kwargs)
        except SystemExit as exc:
            code = exc.code
    return code, err.getvalue().splitlines()


def one_line_or_success(code, lines, multiline_ok: bool = False) -> None:
    assert code in (0, 2), (code, lines)
    if code == 2:
        assert lines and (multiline_ok or len(lines) == 1), lines
        assert lines[0].startswith("error: "), lines


# --- YAML through the loader -------------------------------------------------------------------
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**30), 10**30), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20), st.sampled_from(["{gpus}", "{gpu}", "{0}", "{gfx:>9}", "}{", "a@b:1", "mi300", "auto",
                                           "2026-02-30", "2026-04-21", "rocm700", "http://x", "*", "~", "&a", "!!str"]),
    st.dates(min_value=dt.date(1900, 1, 1)))
trees = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(st.text(max_size=12), inner, max_size=4)),
                     max_leaves=20)


def load_override(text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "override.yaml"
        path.write_text(text)
        load_config(env={OVERRIDE_ENV: str(path)})


@PROPERTY
@given(text=st.text(max_size=300))
def test_any_text_as_an_override(text):
    one_line_or_success(*at_the_door(load_override, text))


FRAGMENTS = ["images:", "  lookback_days: 7", "  lookback_days: &n 7", "pull: *n", "a: &a [x, x]", "b: [*a, *a]",
             "known_issues: [{test: x, arches: [mi300], mode: skip, reason: r, link: l, expires: 2026-02-30}]",
             "known_issues: [{test: x, arches: [mi300], mode: skip, reason: r, link: l, expires: 2026-13-01T99:00:00}]",
             "x: " + "[" * 200 + "]" * 200, "? [a, b]\n: 1", "? {a: 1}\n: 2", "k: !!python/object/apply:os.system [true]",
             "k: !!binary 'not base64!'", "k: !!timestamp 'yesterday'", "k: !!int 'x'", "k: !!float '1e999'",
             "k: !!bool 'maybe'", "k: !!null 'x'", "k: !!set [1]", "k: !!omap [1]", "k: !!pairs {a: 1}", "k: !!seq x",
             "<<: *a", "---", "--- x", "%YAML 1.1", "\t- x", "images: {registries: {lan: 'u:p@h:1'}}", "pull: {public: {stall_s: .inf}}",
             "arches: {arches: {mi300: {pool: {label: '{gpus.__class__}'}}}}", "k: 0x_1", "k: 1_000", "k: 0o17", "\ufeffk: 1"]


@PROPERTY
@given(parts=st.lists(st.sampled_from(FRAGMENTS), max_size=6))
def test_hostile_yaml_fragments_as_an_override(parts):
    one_line_or_success(*at_the_door(load_override, "\n".join(parts) + "\n"))


@PROPERTY
@given(data=st.dictionaries(st.sampled_from(list(FILES)), trees, max_size=3))
def test_any_structure_as_an_override(data):
    one_line_or_success(*at_the_door(load_override, yaml.safe_dump(data, allow_unicode=True)))


REAL = {key: yaml.safe_load((CONFIG_DIR / filename).read_text()) for key, (filename, _) in FILES.items()}


def paths_of(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from paths_of(inner, prefix + (key,))
    elif isinstance(value, list):
        for index, inner in enumerate(value[:3]):
            yield from paths_of(inner, prefix + (index,))


PATHS = [(key, path) for key, doc in REAL.items() for path in paths_of(doc) if path]


@PROPERTY
@given(where=st.sampled_from(PATHS), value=trees)
def test_real_config_with_any_one_value_changed(where, value):
    key, path = where
    override = {key: _set({} if isinstance(REAL[key], dict) else list(REAL[key]), REAL[key], path, value)}
    one_line_or_success(*at_the_door(load_override, yaml.safe_dump(override, allow_unicode=True)))


def _set(_, real, path, value):
    """A copy of `real` with the value at `path` replaced (a whole list is replaced for list paths)."""
    import copy

    doc = copy.deepcopy(real)
    target = doc
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return doc


@PROPERTY
@given(number=st.one_of(st.floats(), st.integers(-(10**40), 10**40)),
       field=st.sampled_from([("pull", "probe_timeout_s"), ("images", "lookback_days"), ("pull", "disk_headroom_bytes"),
                              ("kernels", "topk_sigmoid"), ("container", "stop")]))
def test_numbers_are_finite_and_bounded_or_refused(number, field):
    key, name = field
    code, lines = at_the_door(load_override, yaml.safe_dump({key: {name: number}}))
    one_line_or_success(code, lines)
    if code == 0 and key != "kernels" and name != "stop":
        assert math.isfinite(number) and abs(number) <= 2**53


# --- registrations through discovery ------------------------------------------------------------
literals = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(), st.text(max_size=30),
                     st.sampled_from(['"stage-a-test-1-gpu-small-amd"', '"nightly-amd"', 'x', 'f()', '*a', '**k', '"s" + "t"',
                                      '"stage-a"', '"1-gpu-small-amd"', '1e999', '[1]', '{}']))
names = st.sampled_from(["est_time", "suite", "nightly", "disabled", "stage", "runner_config", "other"])


@st.composite
def registration_files(draw):
    lines = []
    for _ in range(draw(st.integers(0, 3))):
        args = [a if isinstance(a, str) and a in ('x', 'f()', '*a', '"s" + "t"', '1e999', '[1]', '{}') or
                (isinstance(a, str) and a.startswith('"')) else repr(a) for a in draw(st.lists(literals, max_size=5))]
        kwargs = [f"{k}={v if isinstance(v, str) and v.startswith(chr(34)) else repr(v)}"
                  for k, v in draw(st.lists(st.tuples(names, literals), max_size=4))]
        call = f"register_amd_ci({', '.join(args + kwargs)})"
        lines.append(draw(st.sampled_from([call, "    " + call, "if x:\n    " + call, call + ")", "# " + call])))
    if draw(st.booleans()):
        lines.append('if __name__ == "__main__":\n    unittest.main()')
    lines.append(draw(st.text(max_size=40)))
    return "\n".join(lines) + "\n"


@settings(max_examples=100, deadline=1000, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(files=st.lists(registration_files(), min_size=1, max_size=4), raw=st.binary(max_size=30))
def test_any_registrations_through_discovery(files, raw):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for index, text in enumerate(files):
            (root / f"test_{index}.py").write_text(text, errors="surrogateescape")
        (root / "test_raw.py").write_bytes(b"register_amd_ci(1)\n" + raw)
        one_line_or_success(*at_the_door(load_tree, CONFIG, root), multiline_ok=True)


# --- arguments through the parsers -----------------------------------------------------------------
options = st.sampled_from(["--arch", "--suite", "--partition", "--image", "--rocm", "--test-root", "--durations",
                           "--report-dir", "--retries", "--continue-on-error", "--dry-run", "--frob", "-h", "--"])
words = st.one_of(options, st.text(max_size=15), st.sampled_from(["1/4", "0/0", "1/", "/", "99/100000", "mi300", "-1",
                                                                 "rocm/sgl-dev", "a:b", "1e9"]))


@PROPERTY
@given(argv=st.lists(words, max_size=8))
def test_any_stage_arguments(argv):
    if "-h" in argv or "--help" in argv:
        return  # help prints and exits 0 by argparse's own design
    one_line_or_success(*at_the_door(parse_stage_args, "nox -s stage_a --", argv))


@PROPERTY
@given(text=st.one_of(st.text(max_size=20), st.from_regex(r"[0-9]{0,12}/[0-9]{0,12}", fullmatch=True)))
def test_any_partition(text):
    code, lines = at_the_door(parse_partition, text, CONFIG.limits.partitions)
    one_line_or_success(code, lines)
    if code == 0:
        index, total = parse_partition(text, CONFIG.limits.partitions)
        assert 1 <= index <= total <= CONFIG.limits.partitions


@PROPERTY
@given(text=st.one_of(st.text(max_size=40), st.from_regex(r"([a-z0-9.:]{1,10}/)?[a-z0-9/._-]{1,20}(:[\w.-]{0,10})?", fullmatch=True)))
def test_any_image_name(text):
    code, lines = at_the_door(parse_image_name, text)
    one_line_or_success(code, lines)
    if code == 0:
        assert ":" in text and parse_image_name(text).tag  # never an implied :latest


@PROPERTY
@given(event=st.text(max_size=20) | st.sampled_from(list(CONFIG.routing.events)), arch=st.none() | st.text(max_size=8),
       targets=st.none() | st.text(max_size=40), runner_arch=st.text(max_size=10), runner_name=st.text(max_size=40))
def test_any_event_target_and_arch(event, arch, targets, runner_arch, runner_name):
    one_line_or_success(*at_the_door(arches_for_event, CONFIG, event, arch))
    one_line_or_success(*at_the_door(parse_targets, CONFIG, targets))
    one_line_or_success(*at_the_door(resolve_arch, CONFIG, None, {"RUNNER_ARCH": runner_arch, "RUNNER_NAME": runner_name},
                                     probe=lambda config: None))


@PROPERTY
@given(data=st.binary(max_size=200) | st.text(max_size=200).map(str.encode)
       | st.dictionaries(st.text(max_size=5), st.floats() | st.integers() | st.text(max_size=3) | st.none()).map(
           lambda d: yaml.safe_dump(d).encode()))
def test_any_durations_file(data):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "durations.json"
        path.write_bytes(data)
        policy = CONFIG.durations.history
        code, lines = at_the_door(read_durations, path, policy)
        one_line_or_success(code, lines)
        if code == 0:
            recorded = read_durations(path, policy).for_arch("mi300", policy)
            assert all(math.isfinite(v) and v >= 0 for v in recorded.values())


@PROPERTY
@given(argv=st.lists(st.text(max_size=10), max_size=6))
def test_exec_argv_is_what_follows_the_dashes(argv):
    assert argv_after_dashes(["invoke", "exec", "--", *argv]) == argv
