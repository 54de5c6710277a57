"""Per-arch bounds with the real values from config/thresholds.yaml, the check helper, and the
headroom table the stage report shows."""

from __future__ import annotations

import pytest

from ci import thresholds
from ci.config import load_config
from ci.errors import ConfigError, UserError
from ci.thresholds import bound_for, check, headroom_markdown, read_records

CONFIG = load_config(env={})


@pytest.mark.parametrize(
    "test, metric, arch, amd, params, value, source",
    [
        ("test_vlm_offline_throughput", "output_throughput", None, False, {}, 2000, "default"),
        ("test_vlm_offline_throughput", "output_throughput", "mi300", True, {}, 900, "mi300"),
        ("test_vlm_offline_throughput", "output_throughput", "mi325", True, {}, 2000, "default"),
        ("test_score_api_batch_scaling", "avg_latency_ms", None, False, {"batch_size": 10}, 45, "default"),
        ("test_score_api_batch_scaling", "p95_latency_ms", None, False, {"batch_size": 50}, 65, "default"),
        ("test_score_api_batch_scaling", "avg_latency_ms", "mi300", True, {"batch_size": 25}, 70, "mi300"),
        ("test_score_api_batch_scaling", "p95_latency_ms", "mi300", True, {"batch_size": 50}, 90, "mi300"),
        ("test_score_api_batch_scaling", "avg_latency_ms", "mi300", True, {"batch_size": 100}, 90, "mi300"),
        ("test_score_api_batch_scaling", "p95_latency_ms", "mi355", True, {"batch_size": 100}, 65, "default"),
        ("test_torch_compile_moe", "throughput", "mi355", True, {}, 240, "amd"),
        ("test_torch_compile_moe", "throughput", None, False, {}, 270, "default"),
        ("test_embeddings_api_latency_throughput", "avg_latency_ms", "mi325", True, {}, 35, "amd"),
        ("test_embeddings_api_latency_throughput", "throughput", None, True, {}, 30, "amd"),
        ("test_online_lora_latency", "ttft_ms", "mi300", True, {}, 100, "amd"),
        ("test_online_lora_latency", "ttft_ms", None, False, {}, 58, "default"),
    ],
)
def test_bound_in_force(test, metric, arch, amd, params, value, source):
    bound = bound_for(CONFIG, test, metric, arch, amd, **params)
    assert (bound.value, bound.source) == (value, source)


@pytest.mark.parametrize(
    "args, message",
    [
        (("test_nope", "x"), "unknown threshold test 'test_nope'"),
        (("test_torch_compile_moe", "latency"), "unknown metric 'latency' for test_torch_compile_moe (known: throughput)"),
        (("test_score_api_batch_scaling", "avg_latency_ms"), "is given per batch_size: pass batch_size=..."),
    ],
)
def test_unknown_names_are_errors_not_defaults(args, message):
    with pytest.raises(UserError, match=message.replace("(", "\\(").replace(")", "\\)")):
        bound_for(CONFIG, *args, arch="mi300", amd=True)


def test_unexpected_parameter_is_an_error():
    with pytest.raises(UserError, match="takes no parameter batch_size"):
        bound_for(CONFIG, "test_torch_compile_moe", "throughput", "mi300", True, batch_size=1)


def test_check_records_and_fails_outside_the_bound(monkeypatch, tmp_path):
    log = tmp_path / "thresholds.jsonl"
    monkeypatch.setenv("SGL_CI_ARCH", "mi300")
    monkeypatch.setenv("SGL_CI_THRESHOLD_LOG", str(log))
    ok = check("test_score_api_batch_scaling", "avg_latency_ms", 63.0, batch_size=25)
    assert ok.ok and ok.bound.value == 70 and round(ok.margin_pct, 1) == 10.0
    with pytest.raises(AssertionError, match=r"output_throughput = 850 tok/s, must be >= 900 \(mi300 bound\)"):
        check("test_vlm_offline_throughput", "output_throughput", 850)
    records = read_records(log)
    assert [(r.bound.metric, r.measured, r.ok) for r in records] == [
        ("avg_latency_ms", 63.0, True), ("output_throughput", 850.0, False)]
    table = headroom_markdown(records)
    assert "| test_score_api_batch_scaling | avg_latency_ms[batch_size=25] | 63 ms | <= 70 (mi300) (relaxed) | <= 50 | +10.0 % |" in table
    assert "| test_vlm_offline_throughput | output_throughput | 850 tok/s | >= 900 (mi300) (relaxed) | >= 2000 | -5.6 % **FAIL** |" in table


def test_threshold_reads_the_running_arch(monkeypatch):
    monkeypatch.setenv("SGL_CI_ARCH", "mi325")
    assert thresholds.threshold("test_vlm_offline_throughput", "output_throughput") == 2000
    assert thresholds.threshold("test_online_lora_latency", "ttft_ms") == 100
    monkeypatch.delenv("SGL_CI_ARCH")
    assert thresholds.threshold("test_online_lora_latency", "ttft_ms") == 58


@pytest.mark.parametrize(
    "text, message",
    [
        ("test_x:\n  m: {kind: max, default: {1: 2}}\n", "needs `by: <parameter>`"),
        ("test_x:\n  m: {kind: max, by: batch_size, default: 3}\n", "every bound must be a mapping"),
        ("test_x:\n  m: {kind: max, default: 3, arch: {mi999: 4}}\n", "unknown arch 'mi999'"),
        ("test_x:\n  m: {kind: most, default: 3}\n", "kind: must be one of min, max"),
    ],
)
def test_bad_thresholds_config(config_dir, text, message):
    (config_dir / "thresholds.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(config_dir, env={})
