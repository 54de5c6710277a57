"""The GPU tool parsers (ci.gpu_tools) on recorded outputs of the real tools: healthy cards, ECC
errors, VRAM leaked with no owner, busy cards, a missing GPU; properties with hypothesis. Where
each recording came from: tests/fixtures/devices/README.md."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ci import gpu_tools
from ci.config import load_config
from ci.preflight import check_gpus, ecc_verdicts
from tests.conftest import FIXTURES

DEVICES = FIXTURES / "devices"
CONFIG = load_config(env={})
MIB = 2**20


def read(name: str) -> str:
    return (DEVICES / name).read_text()


def test_amd_smi_ecc_block_with_correctable_errors_mi300x():
    (ecc,) = gpu_tools.amd_smi_ecc(read("amd-smi_metric_ecc_umc_mi300x.txt"))
    assert (ecc.gpu, ecc.correctable, ecc.uncorrectable) == ("0", 2, 0) and ecc.blocks == {"UMC": (2, 0)}
    bad, warn, lines = ecc_verdicts([ecc], CONFIG.health)
    assert bad == [] and warn == [] and lines == ["GPU 0: 2 correctable ECC error(s), under 100 (UMC 2/0)"]


def test_uncorrectable_errors_and_driver_flags_make_a_gpu_unhealthy():
    # No public recording of an uncorrectable count was found: the decision is tested on counts.
    bad, _, lines = ecc_verdicts([gpu_tools.Ecc("3", 0, 1), gpu_tools.Ecc("4", 0, 0, flags=("row remapping failed",))],
                                 CONFIG.health)
    assert bad == ["3", "4"] and "1 uncorrectable" in lines[0] and "row remapping failed" in lines[1]


def test_amd_smi_static_ras_mi350x_reports_no_exceeded_threshold():
    assert gpu_tools.amd_smi_ras_flags(read("amd-smi_static_ras_mi350x.txt")) == {"0": ()}
    assert gpu_tools.amd_smi_ras_flags("GPU: 1\n    RAS:\n        BAD_PAGE_THRESHOLD_EXCEEDED: True\n") == {
        "1": ("bad page threshold exceeded",)}


def test_amd_smi_table_of_stranded_vram_mi325x():
    gpus, vram = gpu_tools.amd_smi_table(read("amd-smi_mi325x_stranded_vram.txt"))
    assert gpus == [gpu_tools.Gpu("0", "AMD Instinct MI325X", "0000:05:00.0")]
    assert vram[0].used_bytes == 46111 * MIB and vram[0].total_bytes == 262128 * MIB and round(vram[0].used_pct, 1) == 17.6


def test_rocm_smi_showpids_lists_the_kfd_process():
    assert gpu_tools.rocm_smi_pids(read("rocm-smi_showpids_mi300.txt")) == [gpu_tools.GpuProcess(1075718, "0", 0, "kfd_open")]


def test_rocm_smi_csv_of_busy_cards():
    vram = gpu_tools.rocm_smi_csv_vram(read("rocm-smi_csv_busy_mi250.txt"))
    assert [v.gpu for v in vram] == ["0", "1", "2", "3", "4", "5"]
    assert all(85 < v.used_pct < 86 for v in vram)


def test_a_missing_gpu_and_a_wrong_product_fail_the_gpus_check():
    mi100 = gpu_tools.rocm_smi_gpus(read("rocm-smi_showproductname_csv_mi100.txt"))
    mi300x = gpu_tools.rocm_smi_gpus(read("rocm-smi_i_mi300x.txt"))  # six GPUs in that recording
    from ci.preflight import GpuState, Status
    arch = CONFIG.arch("mi300")
    assert check_gpus(GpuState("rocm-smi", tuple(mi300x)), arch, 1, "fail").status is Status.OK
    missing = check_gpus(GpuState("rocm-smi", tuple(mi300x)), arch, 8, "fail")
    assert missing.status is Status.FAIL and "6 GPU(s)" in missing.summary and "needs 8 MI300X" in missing.summary
    wrong = check_gpus(GpuState("rocm-smi", tuple(mi100)), arch, 2, "warn")
    assert wrong.status is Status.WARN and wrong.details[0] == "GPU 0: Arcturus GL-XL [AMD Instinct MI100] is not a MI300X"
    static = gpu_tools.amd_smi_gpus(read("amd-smi_static_mi350x.txt"))
    assert check_gpus(GpuState("amd-smi", tuple(static)), CONFIG.arch("mi355"), 1, "fail").status is Status.FAIL  # MI350X


def test_nvidia_h200_recorded_idle_busy_and_held_from_another_namespace():
    idle = gpu_tools.nvidia_gpus(read("nvidia-smi_query_h200_idle.txt"))
    busy = gpu_tools.nvidia_gpus(read("nvidia-smi_query_h200_busy.txt"))
    other = gpu_tools.nvidia_gpus(read("nvidia-smi_query_h200_other_ns.txt"))
    assert idle[0] == [gpu_tools.Gpu("0", "NVIDIA H200", "0000:00:06.0")]
    assert idle[1][0].used_bytes == 0 and idle[1][0].total_bytes == 143771 * MIB
    assert busy[1][0].used_bytes == 21709 * MIB and other[1][0].used_bytes == 31595 * MIB
    assert idle[2] == [gpu_tools.Ecc("0", 0, 0)]  # counters zero; "[N/A]" retired pages, no pending remap
    assert gpu_tools.nvidia_apps(read("nvidia-smi_apps_h200_idle.txt")) == []
    assert gpu_tools.nvidia_apps(read("nvidia-smi_apps_h200_busy.txt")) == [
        gpu_tools.GpuProcess(783, "0000:00:06.0", 21700 * MIB, "/opt/torch/.venv/bin/python3")]
    # The holder was pid 1 in its own namespace; nvidia-smi on the host names its host pid.
    assert gpu_tools.nvidia_apps(read("nvidia-smi_apps_h200_other_ns.txt"))[0].pid == 819


def test_nvidia_flags_pending_remaps():
    _, _, ecc = gpu_tools.nvidia_gpus("0, NVIDIA H200, 00000000:00:06.0, 0, 143771, 0, 0, [N/A], Yes, No")
    assert ecc[0].flags == ("row remapping pending",)


@given(st.text())
def test_parsers_never_raise_on_any_text(text):
    for parse in (gpu_tools.parse_amd_smi_tree, gpu_tools.amd_smi_ecc, gpu_tools.amd_smi_vram, gpu_tools.amd_smi_table,
                  gpu_tools.amd_smi_processes, gpu_tools.rocm_smi_gpus, gpu_tools.rocm_smi_pids, gpu_tools.nvidia_gpus,
                  gpu_tools.nvidia_apps):
        parse(text)


counts = st.one_of(st.none(), st.integers(0, 10**9))


@given(st.dictionaries(st.integers(0, 15), st.tuples(counts, counts, counts), min_size=1, max_size=8))
def test_amd_smi_ecc_reads_back_what_the_tool_prints(table):
    def shown(value):
        return "N/A" if value is None else str(value)

    text = "".join(f"GPU: {gpu}\n    ECC:\n        TOTAL_CORRECTABLE_COUNT: {shown(c)}\n        TOTAL_UNCORRECTABLE_COUNT: "
                   f"{shown(u)}\n        TOTAL_DEFERRED_COUNT: {shown(d)}\n" for gpu, (c, u, d) in table.items())
    found = {e.gpu: (e.correctable, e.uncorrectable, e.deferred) for e in gpu_tools.amd_smi_ecc(text)}
    assert found == {str(g): v for g, v in table.items()}


@given(st.integers(0, 0xFFFF), st.integers(0, 255), st.integers(0, 31), st.integers(0, 7))
def test_bus_ids_of_nvidia_and_amd_tools_agree(domain, bus, device, function):
    nvidia = f"{domain:08X}:{bus:02X}:{device:02X}.{function}"
    amd = f"{domain:04x}:{bus:02x}:{device:02x}.{function}"
    assert gpu_tools.normalize_bus_id(nvidia) == gpu_tools.normalize_bus_id(amd) == amd
