"""Arch resolution, step by step: --arch > RUNNER_ARCH > runner name > device > error."""

from __future__ import annotations

import pytest

from ci.arch import DeviceReport, arch_from_device, parse_device_output, probe_device, resolve_arch
from ci.config import load_config
from ci.errors import UserError
from tests.conftest import FIXTURES

CONFIG = load_config(env={})
DEVICES = FIXTURES / "devices"


def no_device(config):
    return None


def device(product=(), gfx=()):
    return lambda config: DeviceReport("fake-smi", tuple(product), tuple(gfx))


def test_flag_beats_everything():
    found = resolve_arch(CONFIG, flag="mi355", env={"RUNNER_ARCH": "mi300", "RUNNER_NAME": "linux-mi325-1gpu-sglang-x"},
                         probe=device(["MI300X"]))
    assert (found.arch.name, found.source) == ("mi355", "--arch")


def test_runner_arch_env_beats_runner_name_and_device():
    found = resolve_arch(CONFIG, env={"RUNNER_ARCH": "mi325", "RUNNER_NAME": "linux-mi300-1gpu-sglang-x"},
                         probe=device(["MI300X"]))
    assert (found.arch.name, found.source) == ("mi325", "RUNNER_ARCH")


@pytest.mark.parametrize(
    "runner_name, arch",
    [
        ("linux-mi300-1gpu-sglang-7xk2p", "mi300"),
        ("linux-mi325-8gpu-sglang-abcde", "mi325"),
        ("linux-mi35x-gpu-1-q9z", "mi355"),
        ("linux-mi35x-gpu-8.fabric-1", "mi355"),
        ("linux-mi355-4gpu-sglang", "mi355"),
    ],
)
def test_runner_name_both_styles(runner_name, arch):
    found = resolve_arch(CONFIG, env={"RUNNER_NAME": runner_name}, probe=device(["MI300X"]))
    assert found.arch.name == arch
    assert found.source == f"RUNNER_NAME {runner_name}"


def test_hostname_used_when_runner_name_unset():
    found = resolve_arch(CONFIG, env={}, hostname="linux-mi325-2gpu-sglang-pod7", probe=no_device)
    assert (found.arch.name, found.source) == ("mi325", "hostname linux-mi325-2gpu-sglang-pod7")


@pytest.mark.parametrize("runner_name", ["linux-mi30x-gpu-2-old", "mi300-box", "linux-mi300x", "ci-runner-12"])
def test_runner_names_that_name_no_arch_fall_through_to_the_device(runner_name):
    found = resolve_arch(CONFIG, env={"RUNNER_NAME": runner_name}, probe=device(["MI325X"], ["gfx942"]))
    assert found.arch.name == "mi325"
    assert found.source.startswith("device (fake-smi: MI325X")


@pytest.mark.parametrize(
    "fixture, products, gfx",
    [
        ("rocminfo_mi300x.txt", ("MI300X",), ("gfx942",)),
        ("rocm-smi_i_mi300x.txt", ("MI300X",), ()),
        ("amd-smi_static_mi350x.txt", ("MI350X",), ("gfx950",)),
        ("rocm-smi_showproductname_csv_mi100.txt", ("MI100",), ()),
    ],
)
def test_recorded_tool_outputs_parse(fixture, products, gfx):
    report = parse_device_output("tool", (DEVICES / fixture).read_text())
    assert (report.products, report.gfx) == (products, gfx)


@pytest.mark.parametrize("fixture", ["rocminfo_mi300x.txt", "rocm-smi_i_mi300x.txt"])
def test_recorded_mi300x_outputs_resolve_to_mi300(fixture):
    assert arch_from_device(CONFIG, parse_device_output("t", (DEVICES / fixture).read_text())).name == "mi300"


@pytest.mark.parametrize("fixture, product", [("amd-smi_static_mi350x.txt", "MI350X"), ("rocm-smi_showproductname_csv_mi100.txt", "MI100")])
def test_unknown_products_are_refused_not_guessed(fixture, product):
    with pytest.raises(UserError, match=f"reports {product}.*allowed: mi300 \\(MI300X\\)"):
        arch_from_device(CONFIG, parse_device_output("t", (DEVICES / fixture).read_text()))


def test_gfx942_alone_cannot_tell_mi300_from_mi325():
    with pytest.raises(UserError, match="gfx942 but no product name; mi300, mi325 share it"):
        arch_from_device(CONFIG, DeviceReport("rocminfo", (), ("gfx942",)))


def test_gfx950_alone_is_mi355():
    assert arch_from_device(CONFIG, DeviceReport("rocminfo", (), ("gfx950",))).name == "mi355"


def test_probe_asks_tools_in_order_and_takes_the_first_that_answers():
    asked = []
    outputs = {"amd-smi": None, "rocm-smi": "nothing useful", "rocminfo": (DEVICES / "rocminfo_mi300x.txt").read_text()}

    def run(argv, timeout):
        asked.append(argv[0])
        return outputs[argv[0]]

    report = probe_device(CONFIG, run)
    assert asked == ["amd-smi", "rocm-smi", "rocminfo"]
    assert report.tool == "rocminfo" and report.products == ("MI300X",)


def test_nothing_found_is_a_clear_error_listing_arches():
    with pytest.raises(UserError, match=r"cannot tell the arch.*allowed: mi300, mi325, mi355"):
        resolve_arch(CONFIG, env={"RUNNER_NAME": "buildbox"}, probe=no_device)


@pytest.mark.parametrize("flag, env", [("mi400", {}), (None, {"RUNNER_ARCH": "gfx942"})])
def test_unknown_arch_names_the_allowed_ones(flag, env):
    with pytest.raises(UserError, match="allowed: mi300, mi325, mi355"):
        resolve_arch(CONFIG, flag=flag, env=env, probe=no_device)
