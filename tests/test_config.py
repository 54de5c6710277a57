"""Config: the shipped values, overrides, and every kind of bad config named by file:line and key path."""

from __future__ import annotations

import pytest

from ci.config import load_config
from ci.errors import ConfigError


def test_shipped_config_has_the_real_values():
    config = load_config(env={})
    assert {n: (a.image_arch, a.gfx) for n, a in config.arches.items()} == {
        "mi300": ("mi30x", "gfx942"), "mi325": ("mi30x", "gfx942"), "mi355": ("mi35x", "gfx950")}
    assert config.arches["mi355"].env["GPU_ARCHS"] == "gfx950"
    assert list(config.stages) == ["stage-a", "stage-b", "stage-c", "extra", "nightly"]
    assert [s.cadence for s in config.stages.values()] == ["per-commit"] * 4 + ["nightly"]
    assert config.stages["stage-c"].needs == ("stage-b",) and config.stages["extra"].pr_label == "run-ci-extra"
    # SGLang's own numbers (pr-test-amd-rocm720.yml): MI300X got 120 minutes for the 8-GPU suite.
    large = config.stages["stage-c"].job("stage-c-test-large-8-gpu-amd")
    assert large.timeout_for("mi300") == 120 and large.partitions == 4 and large.gpus == 8
    small = config.stages["stage-b"].job("stage-b-test-1-gpu-small-amd")
    assert small.partitions == 14 and small.per_file_timeout_for("mi300") == small.per_file_timeout_for("mi325") == 2400
    assert small.timeout_for("mi300") == 75 and small.timeout_for("mi325") == 60
    two = config.stages["stage-b"].job("stage-b-test-2-gpu-large-amd")
    assert two.per_file_timeout_for("mi300") == 5400 and two.per_file_timeout_for("mi325") == 2700
    disagg = config.stages["stage-b"].job("stage-b-test-large-8-gpu-mi35x-disaggregation-amd")
    assert disagg.arches == ("mi355",) and disagg.variant == "disagg" and disagg.label_suffix == ".fabric"
    assert config.stages["stage-c"].job_timeout_minutes(large, "mi300") == 120 + 30
    assert config.routing.events["pull_request"] == ("mi300", "mi355") and config.routing.input_arches == ("mi300", "mi325")
    assert config.images.repository == "rocm/sgl-dev" and config.images.lookback_days == 7
    assert config.images.registries.public == "docker.io"
    assert config.images.registries.lan is None  # the LAN mirror is never in shipped config


def test_versions_are_an_optional_override(config_dir):
    assert load_config(env={}).images.versions == ()  # shipped: discovered, no edit per release
    _break(config_dir, "images.yaml", "versions: []\n", "")
    assert load_config(config_dir, env={}).images.versions == ()  # absent is the same
    _break(config_dir, "images.yaml", 'tag_format:', "versions: [v0.5.10, v0.5.10rc1, v0.5.9.post1]\ntag_format:")
    assert load_config(config_dir, env={}).images.versions == ("v0.5.10", "v0.5.10rc1", "v0.5.9.post1")


def test_config_is_frozen():
    config = load_config(env={})
    with pytest.raises(AttributeError):
        config.stages["stage-c"].retries = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.stages["stage-c"].suites[0].per_file_timeout_s["default"] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        config.stages["stage-x"] = None  # type: ignore[index]


def test_registry_env_overrides():
    config = load_config(env={"LOCAL_DOCKER_REGISTRY": "127.0.0.1:5001", "PUBLIC_DOCKER_REGISTRY": "127.0.0.1:5002/"})
    assert config.images.registries.lan == "127.0.0.1:5001"
    assert config.images.registries.public == "127.0.0.1:5002"


def test_override_file_sets_lan_registry_and_a_stage_setting(tmp_path):
    override = tmp_path / "site.yaml"
    override.write_text("images:\n  registries:\n    lan: mirror.local:5000\nstages:\n  stage-a:\n    budget_share: 0.5\n")
    config = load_config(env={"SGL_CI_CONFIG_OVERRIDE": str(override)})
    assert config.images.registries.lan == "mirror.local:5000"
    assert config.stages["stage-a"].budget_share == 0.5
    assert config.stages["stage-a"].suites[0].suite == "stage-a-test-1-gpu-small-amd"  # merged, not replaced
    assert config.stages["stage-b"].budget_share == 0.8


def _break(config_dir, filename, old, new):
    path = config_dir / filename
    text = path.read_text()
    assert old in text, f"{old!r} not in {filename}"
    path.write_text(text.replace(old, new, 1))
    return path


def _line_of(path, needle):
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


SIZED_8_GPU = "stage-c-test-large-8-gpu-amd, arches: [mi300, mi325], gpus: 8, partitions: 4, per_file_timeout_s: {default: 5400}, timeout_minutes: {default: 120}"


@pytest.mark.parametrize(
    "filename, old, new, expected",
    [
        ("stages.yaml", "{default: 60, mi300: 75}", "{default: 60, mi300: 0}", "stage-b.suites[0].timeout_minutes.mi300: must be > 0, got 0"),
        ("stages.yaml", SIZED_8_GPU, SIZED_8_GPU.replace("{default: 120}", "{default: -5}"), "stage-c.suites[1].timeout_minutes.default: must be > 0"),
        ("stages.yaml", "per_file_timeout_s: {default: 2400}", "per_file_timeout_s: {default: soon}", "stage-b.suites[0].per_file_timeout_s.default: must be a number, got str 'soon'"),
        ("stages.yaml", "per_file_timeout_s: {default: 2400}", "per_file_timeout_s: 2400", "stage-b.suites[0].per_file_timeout_s: must be a mapping, got int 2400"),
        ("stages.yaml", "{default: 60, mi300: 75}", "{mi300: 75}", "stage-b.suites[0].timeout_minutes: needs a 'default' value"),
        ("stages.yaml", "gpus: 4,", "gpu: 4,", "stage-c.suites[0].gpu: unknown key 'gpu' (allowed: arches, changes, gpus, label_suffix, partitions"),
        ("stages.yaml", "{default: 60, mi300: 75}", "{default: 60, mi999: 75}", "timeout_minutes.mi999: 'mi999' is not one of the job's arches (mi300, mi325)"),
        ("stages.yaml", "{default: 60, mi300: 75}", "{default: 60, mi355: 75}", "timeout_minutes.mi355: 'mi355' is not one of the job's arches (mi300, mi325)"),
        ("stages.yaml", "arches: [mi355], gpus: 1,", "arches: [mi999], gpus: 1,", "stage-b.suites[6].arches: unknown arch 'mi999' (allowed: mi300, mi325, mi355)"),
        ("stages.yaml", "partitions: 14,", "partitions: many,", "stage-b.suites[0].partitions: must be one of an integer > 0, auto, got 'many'"),
        ("stages.yaml", "partitions: 14,", "partitions: 0,", "stage-b.suites[0].partitions: must be one of an integer > 0, auto, got 0"),
        ("stages.yaml", "cadence: nightly", "cadence: weekly", "nightly.cadence: must be one of per-commit, nightly, got 'weekly'"),
        ("stages.yaml", "needs: [stage-a]", "needs: [stage-q]", "stage-b.needs: unknown stage 'stage-q'"),
        ("stages.yaml", "variant: disagg", "variant: fancy", "variant: unknown variant 'fancy' (allowed: default, disagg)"),
        ("stages.yaml", "changes: jit_kernel}", "changes: nothing}", "stage-a.suites[1].changes: unknown change filter 'nothing'"),
        ("stages.yaml", "suite: stage-c-test-4-gpu-amd,", "suite: stage-a-test-1-gpu-small-amd,", "stage-c.suites[0].suite: suite 'stage-a-test-1-gpu-small-amd' already has a job in stage-a"),
        ("pull.yaml", "attempts: 6", "attempts: six", "public.attempts: must be an integer, got str 'six'"),
        ("pull.yaml", "window_s: 10", "window_s: true", "lan.window_s: must be a number, got True"),
        ("arches.yaml", "gfx: gfx950", "gfx: [gfx950]", "arches.mi355.gfx: must be a string, got a list"),
        ("arches.yaml", '"linux-mi300-{gpus}gpu-sglang"', '"linux-mi300-gpu-sglang"', "arches.mi300.pool.label: must contain {gpus}"),
        ("routing.yaml", "schedule: [mi325, mi355]", "schedule: [mi999, mi355]", "events.schedule[0]: unknown arch 'mi999' (allowed: mi300, mi325, mi355, or input)"),
        ("routing.yaml", "schedule: [mi325, mi355]", "schedule: []", "events.schedule: must be not empty"),
        ("routing.yaml", "default_input: mi300", "default_input: mi355", "default_input: 'mi355' is not one of input_arches"),
        ("suites.yaml", "  - suites: [base-b-test-2-gpu-large]", "  - suites: [stage-c-test-4-gpu-amd]", "acknowledged[0].suites: 'stage-c-test-4-gpu-amd' has a job in stages.yaml"),
        ("suites.yaml", "  sgl-kernel-unit-test-amd:\n", "  no-such-suite:\n", "commands.no-such-suite: unknown suite 'no-such-suite': no job in stages.yaml runs it"),
        ("suites.yaml", "only_partition: 1}", "only_partition: 0}", "only_partition: must be > 0, got 0"),
        ("images.yaml", "lookback_days: 7", "lookback_days: 0", "lookback_days: must be > 0, got 0"),
        ("images.yaml", "rocm: rocm700", "rocm: rocm999", "rocm: 'rocm999' is not in rocm_versions"),
        ("stages.yaml", "stage-b:\n", "stage-b:\n  retries: 1\n", "stage-b.retries: duplicate key"),
        ("images.yaml", "versions: []", "versions: [v0.5.10, latest]", "versions[1]: 'latest' is not a release version"),
        ("images.yaml", 'date_format: "%Y%m%d"', 'date_format: "%Y%m%d%H"', "date_format: %H is not allowed in a tag's date"),
        ("images.yaml", 'tag_format: "{version}-{rocm}-{image_arch}-{date}"', 'tag_format: "{version}-{rocm}-{image_arch}"',
         "tag_format: must use {date} exactly once"),
        ("images.yaml", 'tag_format: "{version}-{rocm}-{image_arch}-{date}"', 'tag_format: "{version}-{rocm}-{image_arch}-{date:>8}"',
         "tag_format: placeholders take no format spec"),
        ("images.yaml", 'preview_suffix: "-preview"', 'preview_suffix: " preview"', "preview_suffix: must be letters, digits"),
        ("images.yaml", "page_size: 1000", "page_size: 0", "discovery.page_size: must be > 0, got 0"),
        ("kernels.yaml", "score_ulps: 8", "score_ulps: 0", "topk_sigmoid.score_ulps: must be > 0, got 0"),
        ("kernels.yaml", "score_ulps: 8", "score_ulps: 40", "topk_sigmoid.score_ulps: must be <= 32, got 40"),
        ("kernels.yaml", "score_ulps: 8", "score_ulps: 2.5", "topk_sigmoid.score_ulps: must be an integer, got float 2.5"),
        ("kernels.yaml", "score_ulps: 8", "score_ulps: true", "topk_sigmoid.score_ulps: must be an integer, got True"),
        ("kernels.yaml", "score_ulps: 8", "tie_ulps: 8", "topk_sigmoid.tie_ulps: unknown key 'tie_ulps'"),
        ("kernels.yaml", "weight_atol: 1.0e-3", "weight_atol: 0.5", "topk_sigmoid.weight_atol: must be <= 0.1, got 0.5"),
        ("container.yaml", "{source: $TOOLKIT, target: /sgl-ci, read_only: true}", "{source: /opt/tk, target: /sgl-ci, read_only: true}",
         "mounts: needs exactly one mount of $TOOLKIT (the runner, the known-issues plugin and the smoke test run from it), found 0"),
        ("container.yaml", "{source: $TOOLKIT, target: /sgl-ci, read_only: true}", "{source: $TOOLKIT, target: /sgl-ci}",
         "mounts[1].read_only: the toolkit is mounted read-only"),
        ("container.yaml", "{source: $WORKSPACE, target: /sglang-checkout}", "{source: $WORKSPACE, target: /work}",
         "mounts: needs exactly one mount of $WORKSPACE, at workdir /sglang-checkout"),
        ("container.yaml", "kill_wait_s: 5 ", "kill_wait_s: -1 ", "hygiene.kill_wait_s: must be >= 0, got -1"),
        ("runner.yaml", "retryable: 'accuracy|", "retryable: '(accuracy|", "retryable: must be a valid regular expression"),
        ("runner.yaml", "tail_lines: 200", "tail_lines: 0", "tail_lines: must be > 0, got 0"),
        ("health.yaml", '"{toolkit}/ci/allreduce_smoke.py"', '"{toolkits}/ci/allreduce_smoke.py"', "smoke.argv[5]: unknown placeholder {toolkits}"),
    ],
)
def test_bad_config_names_file_line_and_key_path(config_dir, filename, old, new, expected):
    path = _break(config_dir, filename, old, new)
    with pytest.raises(ConfigError) as caught:
        load_config(config_dir, env={})
    message = str(caught.value)
    assert expected in message
    assert message.startswith(f"{path}:")
    assert "\n" not in message


def test_malformed_yaml_names_its_line(config_dir):
    path = _break(config_dir, "stages.yaml", "per_file_timeout_s: {default: 5400}", "per_file_timeout_s: [5400")
    with pytest.raises(ConfigError) as caught:
        load_config(config_dir, env={})
    assert str(caught.value).startswith(f"{path}:")
    line = int(str(caught.value).split(":")[1])
    assert abs(line - _line_of(path, "[5400")) <= 2
    assert "malformed YAML" in str(caught.value)


def test_wrong_type_error_points_at_the_key_line(config_dir):
    path = _break(config_dir, "pull.yaml", "attempts: 6", "attempts: six")
    with pytest.raises(ConfigError) as caught:
        load_config(config_dir, env={})
    assert str(caught.value).startswith(f"{path}:{_line_of(path, 'attempts: six')}: ")


def test_kernel_limit_error_points_at_its_line(config_dir):
    path = _break(config_dir, "kernels.yaml", "score_ulps: 8", "score_ulps: 0")
    with pytest.raises(ConfigError) as caught:
        load_config(config_dir, env={})
    assert str(caught.value).startswith(f"{path}:{_line_of(path, 'score_ulps: 0')}: topk_sigmoid.score_ulps: ")


def test_shipped_kernel_limits():
    limits = load_config(env={}).kernels.topk_sigmoid
    assert (limits.score_ulps, limits.weight_atol, limits.weight_rtol) == (8, 1e-3, 1e-3)


@pytest.mark.parametrize("value", ["http://127.0.0.1:5000", "host/with/path", "a b", "127.0.0.1:5000:1"])
def test_bad_registry_env_is_refused(value):
    with pytest.raises(ConfigError, match="LOCAL_DOCKER_REGISTRY"):
        load_config(env={"LOCAL_DOCKER_REGISTRY": value})


def test_override_file_with_unknown_section(tmp_path):
    override = tmp_path / "o.yaml"
    override.write_text("imagez: {}\n")
    with pytest.raises(ConfigError, match=r"o.yaml:1: imagez: unknown config file 'imagez'"):
        load_config(env={"SGL_CI_CONFIG_OVERRIDE": str(override)})


def test_missing_config_file(config_dir):
    (config_dir / "routing.yaml").unlink()
    with pytest.raises(ConfigError, match="routing.yaml: cannot read config file"):
        load_config(config_dir, env={})


@pytest.mark.parametrize("text", [
    "a: &x {b: 1}\nc: *x\n",
    "a:\n  b: [1, 2, {c: d}]\n",
    "k: " + "[" * 70 + "]" * 70 + "\n",
    "k: " + "[" * 3000 + "]" * 3000 + "\n",  # past libyaml 0.2.6's own limit (1000), met while it scans ahead
    "d: 2026-02-30\n",
    "d: 2026-02-03\nkey: value\n",
    "a: 1\na: 2\n",
    "a: [1, 2\n",
])
def test_the_libyaml_path_and_the_pure_python_path_agree(monkeypatch, text):
    """The fast loader (libyaml, checked on the event stream first) accepts, refuses and reports
    lines as the pure-Python loader that machines without libyaml use (libyaml words its own
    syntax errors: for those the file, line and kind must agree)."""
    from ci import schema
    from ci.errors import ConfigError

    def parsed():
        try:
            document = schema.parse_yaml(text, "x.yaml")
            return ("ok", document.data, document.lines)
        except ConfigError as error:
            said = str(error)
            return ("error", said.split(" malformed YAML:")[0] if "malformed YAML" in said else said)

    fast = parsed()
    monkeypatch.setattr(schema, "_CSafeLoader", None)
    assert parsed() == fast
