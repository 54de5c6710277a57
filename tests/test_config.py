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
    assert list(config.stages) == ["stage-a", "stage-b", "stage-c"]
    stage_c = config.stages["stage-c"]
    assert stage_c.timeout_for("mi300") == 120 and stage_c.timeout_for("mi325") == 90
    assert [j.gpus for j in stage_c.suites] == [4, 8]
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
        config.stages["stage-c"].per_file_timeout_s = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.stages["stage-x"] = None  # type: ignore[index]


def test_registry_env_overrides():
    config = load_config(env={"LOCAL_DOCKER_REGISTRY": "127.0.0.1:5001", "PUBLIC_DOCKER_REGISTRY": "127.0.0.1:5002/"})
    assert config.images.registries.lan == "127.0.0.1:5001"
    assert config.images.registries.public == "127.0.0.1:5002"


def test_override_file_sets_lan_registry_and_a_timeout(tmp_path):
    override = tmp_path / "site.yaml"
    override.write_text("images:\n  registries:\n    lan: mirror.local:5000\nstages:\n  stage-a:\n    timeout_minutes: {default: 45}\n")
    config = load_config(env={"SGL_CI_CONFIG_OVERRIDE": str(override)})
    assert config.images.registries.lan == "mirror.local:5000"
    assert config.stages["stage-a"].timeout_for("mi300") == 45
    assert config.stages["stage-a"].suites[0].suite == "stage-a-test-1-gpu-small-amd"  # merged, not replaced


def _break(config_dir, filename, old, new):
    path = config_dir / filename
    text = path.read_text()
    assert old in text, f"{old!r} not in {filename}"
    path.write_text(text.replace(old, new, 1))
    return path


def _line_of(path, needle):
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


@pytest.mark.parametrize(
    "filename, old, new, expected",
    [
        ("stages.yaml", "{default: 90, mi300: 120}", "{default: 90, mi300: 0}", "stage-c.timeout_minutes.mi300: must be > 0, got 0"),
        ("stages.yaml", "{default: 30}", "{default: -5}", "stage-a.timeout_minutes.default: must be > 0"),
        ("stages.yaml", "per_file_timeout_s: 5400", "per_file_timeout_s: soon", "stage-c.per_file_timeout_s: must be a number, got str 'soon'"),
        ("stages.yaml", "gpus: 4,", "gpu: 4,", "stage-c.suites[0].gpu: unknown key 'gpu' (allowed: gpus, partitions, suite)"),
        ("stages.yaml", "{default: 90, mi300: 120}", "{default: 90, mi999: 120}", "unknown arch 'mi999'"),
        ("pull.yaml", "attempts: 6", "attempts: six", "public.attempts: must be an integer, got str 'six'"),
        ("pull.yaml", "window_s: 10", "window_s: true", "lan.window_s: must be a number, got True"),
        ("arches.yaml", "gfx: gfx950", "gfx: [gfx950]", "arches.mi355.gfx: must be a string, got a list"),
        ("arches.yaml", '"linux-mi300-{gpus}gpu-sglang"', '"linux-mi300-gpu-sglang"', "arches.mi300.pool.label: must contain {gpus}"),
        ("routing.yaml", "schedule: mi325", "schedule: mi999", "events.schedule: unknown arch 'mi999'"),
        ("images.yaml", "lookback_days: 7", "lookback_days: 0", "lookback_days: must be > 0, got 0"),
        ("images.yaml", "rocm: rocm700", "rocm: rocm999", "rocm: 'rocm999' is not in rocm_versions"),
        ("stages.yaml", "stage-b:\n", "stage-b:\n  timeout_minutes: {default: 1}\n", "duplicate key"),
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
    path = _break(config_dir, "stages.yaml", "per_file_timeout_s: 5400", "per_file_timeout_s: [5400")
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
