"""The preflight (ci.preflight) with real processes: holders of stand-in device files found through
/proc, one of them in another PID namespace (unshare); VRAM from recorded tool outputs judged leaked
or held; the guarded reset (never under a holder; before and after); disk floors; reachability of
loopback servers only; `invoke preflight` through the door."""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading

import pytest

from ci.config import load_config
from ci.preflight import (
    Host,
    Status,
    check_reachability,
    owners,
    read_gpu_state,
    run_preflight,
    scan_holders,
)
from tests.conftest import FIXTURES, base_env, run_door

DEVICES = FIXTURES / "devices"
CONFIG = load_config(env={})
MI325 = CONFIG.arch("mi325")

HOLDER = """
import sys, time
handle = open(sys.argv[1], "rb")
print("holding", flush=True)
time.sleep(600)
"""


def hold(path, namespace=False):
    argv = [sys.executable, "-c", HOLDER, str(path)]
    if namespace:
        argv = ["unshare", "--pid", "--fork", "--mount-proc", *argv]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert process.stdout.readline().strip() == "holding"
    return process


def release(process):
    os.killpg(process.pid, 9)
    process.wait()


def stranded(argv, timeout):
    """amd-smi as recorded on an MI325X with 46 GiB stranded (its table; the other calls: nothing)."""
    return (DEVICES / "amd-smi_mi325x_stranded_vram.txt").read_text() if list(argv) == ["amd-smi"] else None


def amd_table_runner(argv, timeout):
    return stranded(("amd-smi",), timeout) if argv[:2] == ("amd-smi", "static") else None


def config_with(tmp_path, text):
    override = tmp_path / "override.yaml"
    override.write_text(text)
    return load_config(env={"SGL_CI_CONFIG_OVERRIDE": str(override)})


def health_config(tmp_path, kfd, extra=""):
    return config_with(tmp_path, f"health: {{shared_devices: ['{kfd}'], gpu_devices: [], endpoints: [],\n"
                                 f"  checks: {{reachability: 'off'}}, disk: [{{path: $WORKSPACE, min_free_gib: 1}}]{extra}}}\n")


def test_holders_are_found_in_another_pid_namespace(fake_kfd):
    if shutil.which("unshare") is None:
        pytest.skip("no unshare")
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"unshare --pid needs CAP_SYS_ADMIN under CI=true: {probe.stderr!r}")
        pytest.skip("unshare --pid is not allowed here")
    plain, inner = hold(fake_kfd), hold(fake_kfd, namespace=True)
    try:
        found = {h.pid: h for h in scan_holders([str(fake_kfd)])}
        assert plain.pid in found and len(found[plain.pid].ns_pids) == 1
        nested = [h for h in found.values() if len(h.ns_pids) == 2]
        assert len(nested) == 1 and nested[0].ns_pids[-1] == 1  # pid 1 in its own namespace
        assert nested[0].pid_ns != found[plain.pid].pid_ns
        assert f"pid 1 in its namespace {nested[0].pid_ns}" in nested[0].describe()
    finally:
        release(plain)
        release(inner)


def test_vram_with_no_owner_is_leaked_and_fails(tmp_path, fake_kfd):
    config = health_config(tmp_path, fake_kfd)
    state = read_gpu_state(_amd_table, 5)
    assert state.tool == "amd-smi" and state.vram[0].used_bytes == 46111 * 2**20
    report = run_preflight(config, MI325, 1, str(tmp_path), {}, Host(run=_amd_table))
    vram = next(c for c in report.checks if c.name == "leaked VRAM")
    assert vram.status is Status.FAIL and "no owning process in any PID namespace: leaked" in vram.details[0]
    assert not report.ok and "leaked VRAM: 1 GPU(s) with leaked VRAM" in report.failure


def test_vram_held_by_a_process_is_not_leaked(tmp_path, fake_kfd):
    config = health_config(tmp_path, fake_kfd)
    holder = hold(fake_kfd)
    try:
        report = run_preflight(config, MI325, 1, str(tmp_path), {}, Host(run=_amd_table))
    finally:
        release(holder)
    vram = next(c for c in report.checks if c.name == "leaked VRAM")
    assert vram.status is Status.WARN and f"held by pid {holder.pid}" in vram.details[0] and report.ok


def _amd_table(argv, timeout):
    """amd-smi answering as the MI325X recording: no static/metric output (not recorded), its table."""
    argv = tuple(argv)
    if argv[:2] == ("amd-smi", "static"):
        return "GPU: 0\n    ASIC:\n        MARKET_NAME: AMD Instinct MI325X\n    BUS:\n        BDF: 0000:05:00.0\n"
    if argv == ("amd-smi",):
        return (DEVICES / "amd-smi_mi325x_stranded_vram.txt").read_text()
    return None


def test_guarded_reset_never_runs_under_a_holder_and_says_before_and_after(tmp_path, fake_kfd):
    config = health_config(tmp_path, fake_kfd, ", reset: {mode: auto, settle_s: 0}")
    calls, after_reset = [], {"done": False}

    def run(argv, timeout):
        if after_reset["done"] and tuple(argv) == ("amd-smi",):
            return "| 0000:05:00.0    AMD Instinct MI325X | 0 %      27 °C   0          135/1000 W |\n" \
                   "|   0       1       6        SPX/NPS1 | 0 %        N/A         283/262128 MB |\n"
        return _amd_table(argv, timeout)

    def reset_run(argv, timeout):
        calls.append(tuple(argv))
        after_reset["done"] = True
        return 0, ""

    holder = hold(fake_kfd)
    try:
        held = run_preflight(config, MI325, 1, str(tmp_path), {}, Host(run=run, reset_run=reset_run))
    finally:
        release(holder)
    assert calls == [] and held.resets == ()  # held: not leaked, nothing to reset
    report = run_preflight(config, MI325, 1, str(tmp_path), {}, Host(run=run, reset_run=reset_run, sleep=lambda s: None))
    assert calls == [("amd-smi", "reset", "--gpureset", "-g", "0")]
    (record,) = report.resets
    assert record.action == "reset" and record.why == "leaked VRAM" and "45.0/256.0 GiB" in record.before
    assert "0.3/256.0 GiB" in record.after and report.ok  # judged again after the reset
    assert "GPU reset:" in report.markdown()


def test_reset_mode_warn_only_says_what_it_would_do(tmp_path, fake_kfd):
    config = health_config(tmp_path, fake_kfd)  # shipped mode: warn
    report = run_preflight(config, MI325, 1, str(tmp_path), {}, Host(run=_amd_table, reset_run=lambda a, t: pytest.fail("ran")))
    assert report.resets[0].action == "would reset" and "amd-smi reset --gpureset -g 0" in report.resets[0].outcome
    assert not report.ok


def test_disk_floor(tmp_path, fake_kfd):
    config = health_config(tmp_path, fake_kfd)
    report = run_preflight(config, MI325, 1, str(tmp_path), {}, Host(run=_amd_table, disk_free=lambda p: 2**29))
    disk = next(c for c in report.checks if c.name == "disk")
    assert disk.status is Status.FAIL and disk.details == (f"{tmp_path}: 0.5 GiB free, under 1 GiB",)


@pytest.fixture
def loopback_http():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)  # answers 501
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_reachability_of_loopback_endpoints(tmp_path, loopback_http):
    dead = closed_port()
    config = config_with(tmp_path, f"images: {{registries: {{public: '{loopback_http}', lan: '127.0.0.1:{dead}'}}}}\n"
                                   f"health: {{endpoints: [{{name: huggingface, url: 'http://127.0.0.1:{dead}'}}],"
                                   f" reachability_timeout_s: 2, checks: {{reachability: fail}}}}\n")
    result = check_reachability(config, {"HF_ENDPOINT": f"http://{loopback_http}"})
    assert result.status is Status.FAIL and result.summary == "2/3 endpoint(s) answered"
    assert result.details[1] == f"LAN registry 127.0.0.1:{dead} (http://127.0.0.1:{dead}/v2/): connection refused"
    assert result.details[2].startswith(f"huggingface (http://{loopback_http}): answered in")  # HF_ENDPOINT wins


def test_invoke_preflight_door(tmp_path, loopback_http):
    override = tmp_path / "override.yaml"
    override.write_text(f"images: {{registries: {{public: '{loopback_http}'}}}}\n"
                        "health: {endpoints: [], disk: [{path: $WORKSPACE, min_free_gib: 1}]}\n")
    env = base_env(SGL_CI_CONFIG_OVERRIDE=str(override), GITHUB_WORKSPACE=str(tmp_path),
                   PATH="/usr/bin:/bin", GITHUB_STEP_SUMMARY=str(tmp_path / "summary.md"))
    env["PATH"] = os.path.dirname(sys.executable) + ":/usr/bin:/bin"  # no GPU tool on it
    done = run_door("invoke", "preflight", "--arch", "mi300", "--suite", "stage-c-test-large-8-gpu-amd", env=env)
    assert done.code == 3, done.out + done.err
    assert "preflight gpus: FAIL: no GPU tool answered: 8 MI300X wanted" in done.out
    assert "preflight: INFRASTRUCTURE FAILURE: gpus:" in done.out
    assert "| ❌ | gpus | fail |" in (tmp_path / "summary.md").read_text()
    bad = run_door("invoke", "preflight", "--arch", "mi300", "--gpus", "0", env=env)
    assert bad.code == 2 and bad.err.strip() == "error: --gpus 0: a whole number >= 1"
    unknown = run_door("invoke", "preflight", "--arch", "mi300", "--suite", "nope", env=env)
    assert unknown.code == 2 and "no job in stages.yaml runs it" in unknown.err


def test_owners_come_from_the_gpu_tool_too(tmp_path, fake_kfd):
    config = health_config(tmp_path, fake_kfd)
    from ci.gpu_tools import Gpu, GpuProcess
    from ci.preflight import GpuState
    state = GpuState("nvidia-smi", (Gpu("0", "NVIDIA H200", "0000:00:06.0"),),
                     processes=(GpuProcess(819, "0000:00:06.0", 1, "python3"),))
    assert owners(state, config.health, Host()).of("0") == ("pid 819 (python3) on GPU 0 by nvidia-smi",)
