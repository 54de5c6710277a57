"""GPU hygiene: VRAM parsers on recorded tool outputs, and the killing done for real on
processes (and a container) that hold a stand-in device node made for the test."""

from __future__ import annotations

import dataclasses
import io
import subprocess
import sys

import pytest

from ci.config import load_config
from ci.errors import ToolFailure
from ci.gpu import device_holders, gpu_clean, parse_nvidia_smi, parse_rocm_smi_vram, read_vram
from tests.conftest import FIXTURES

DEVICES = FIXTURES / "devices"
CONFIG = load_config(env={})


def test_rocm_smi_vram_recorded_mi300x():
    readings = parse_rocm_smi_vram((DEVICES / "rocm-smi_showmeminfo_vram_mi300x.txt").read_text())
    assert len(readings) == 7
    assert readings[0].total_bytes == 206141652992 and readings[0].used_bytes == 297771008
    assert round(readings[0].used_pct, 2) == 0.14


def test_rocm_smi_vram_recorded_small_gpu():
    (reading,) = parse_rocm_smi_vram((DEVICES / "rocm-smi_showmeminfo_vram_small.txt").read_text())
    assert round(reading.used_pct, 2) == 2.54


def test_nvidia_smi_recorded_before_and_after_killing_a_holder():
    holding = parse_nvidia_smi((DEVICES / "nvidia-smi_query_h200_holding.txt").read_text())
    after = parse_nvidia_smi((DEVICES / "nvidia-smi_query_h200_after_clean.txt").read_text())
    assert holding[0].used_bytes == 41579 * 2**20 and round(holding[0].used_pct, 1) == 28.9
    assert after[0].used_bytes == 0


def test_read_vram_asks_rocm_smi_then_nvidia_smi():
    asked = []

    def run(argv, timeout):
        asked.append(argv[0])
        return None if argv[0] == "rocm-smi" else (DEVICES / "nvidia-smi_query_h200_holding.txt").read_text()

    tool, readings = read_vram(5, run)
    assert asked == ["rocm-smi", "nvidia-smi"] and tool == "nvidia-smi" and len(readings) == 1


HOLDER = """
import signal, sys, time
if sys.argv[2] == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
handle = open(sys.argv[1], "rb")
print("holding", flush=True)
time.sleep(600)
"""


def start_holder(path, kind):
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), kind], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "holding"
    return process


def hygiene_config(fake_kfd, rounds=3):
    """The tests' own hygiene numbers (the 6 % bound the assertions name; fast graces), not the shipped ones."""
    return dataclasses.replace(CONFIG.container, name="ci_sglang_gpu_test", hygiene=dataclasses.replace(
        CONFIG.container.hygiene, device_globs=(str(fake_kfd),), term_grace_s=1, kill_wait_s=5, rounds=rounds, interval_s=0,
        vram_threshold_pct=6))


def readings(*names):
    return iter([("nvidia-smi", parse_nvidia_smi((DEVICES / n).read_text())) for n in names])


def test_holders_are_terminated_then_killed_and_vram_rechecked(fake_kfd):
    polite, stubborn = start_holder(fake_kfd, "polite"), start_holder(fake_kfd, "stubborn")
    assert set(device_holders([str(fake_kfd)])) == {polite.pid, stubborn.pid}
    out = io.StringIO()
    # The recorded H200 run: memory still shown right after the kill, gone on the next round.
    vram = readings("nvidia-smi_query_h200_holding.txt", "nvidia-smi_query_h200_after_clean.txt")
    gpu_clean(hygiene_config(fake_kfd), None, out, sleep=lambda s: None, read=lambda timeout: next(vram))
    assert polite.wait(5) == -15 and stubborn.wait(5) == -9
    log = out.getvalue()
    assert f"process {stubborn.pid} ignored SIGTERM for 1 s: SIGKILL" in log
    assert "round 1/3: 1 GPU(s) still at or over 6 % VRAM" in log
    assert "GPUs clean: 1 GPU(s) under 6 % VRAM (nvidia-smi)" in log
    assert device_holders([str(fake_kfd)]) == {}


def test_vram_that_stays_used_fails_with_a_table(fake_kfd):
    vram = readings(*["nvidia-smi_query_h200_holding.txt"] * 3)
    slept = []
    with pytest.raises(ToolFailure) as caught:
        gpu_clean(hygiene_config(fake_kfd), None, io.StringIO(), sleep=slept.append, read=lambda timeout: next(vram))
    message = str(caught.value)
    assert message.startswith("VRAM still in use after 3 rounds:")
    assert "│ 0   │ 40.60 GiB │ 140.40 GiB │ 28.9 !" in message
    assert slept == [0, 0]


def test_containers_holding_the_device_are_stopped(docker, fake_kfd):
    from tests.support.images import python_image

    image = python_image(docker)
    holder = docker.containers.run(image, ["sleep", "600"], detach=True, devices=[f"{fake_kfd}:/dev/kfd:rwm"],
                                   network_mode="none", labels={"sgl-ci-test": "1"})
    bystander = docker.containers.run(image, ["sleep", "600"], detach=True, network_mode="none", labels={"sgl-ci-test": "1"})
    try:
        out = io.StringIO()
        config = dataclasses.replace(hygiene_config(fake_kfd), stop=dataclasses.replace(CONFIG.container.stop, stop_timeout_s=1))
        gpu_clean(config, docker, out, sleep=lambda s: None, read=lambda timeout: None)
        assert f"stopping container {holder.name}" in out.getvalue()
        assert [c.id for c in docker.containers.list(filters={"label": "sgl-ci-test=1"})] == [bystander.id]
    finally:
        for c in docker.containers.list(all=True, filters={"label": "sgl-ci-test=1"}):
            c.remove(force=True)


def test_invoke_gpu_clean_runs_without_a_gpu(tmp_path):
    from tests.conftest import base_env, run_door

    # Never touch a developer's real ci_sglang container or GPU processes.
    override = tmp_path / "o.yaml"
    override.write_text(f"container:\n  name: ci_sglang_door_test\n  hygiene: {{device_globs: ['{tmp_path}/no-kfd']}}\n")
    done = run_door("invoke", "gpu-clean", env=base_env(SGL_CI_CONFIG_OVERRIDE=str(override)))
    assert done.code == 0, done.err
    assert "no VRAM tool answered" in done.out or "GPUs clean" in done.out
