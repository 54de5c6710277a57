"""The install step's pure parts: image flavor from what the image reports (the cases SGLang's
amd_ci_install_dependency.sh handles), placeholders, kernel and pin decisions, which failures are
worth a retry, the import proof, the shipped config, and bad install config or flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from ci import install
from ci.config import load_config
from ci.errors import ConfigError, UserError
from ci.install import FailureKind, ImageReport, PinDecision, Rocm
from tests.conftest import run_door

# (what the image reports, the runner's gfx) -> (gfx, flavor), as the script's branches decide:
# the GPU_ARCH stamp `^(gfx942|gfx950)(-rocm720|-rocm724)?$` first; without it PIP_CONSTRAINT or
# HSA_ENABLE_IPC_MODE_LEGACY=1 (7.2.4 stages only) -> rocm724, torch's HIP 7.2* -> rocm720, else
# rocm700; the gfx then comes from the runner (mi35x -> gfx950, else gfx942).
FLAVOR_CASES = [
    (ImageReport(gpu_arch="gfx942"), "gfx942", ("gfx942", Rocm.ROCM700)),
    (ImageReport(gpu_arch="gfx950"), "gfx942", ("gfx950", Rocm.ROCM700)),  # the stamp beats the runner
    (ImageReport(gpu_arch="gfx942-rocm720"), "gfx942", ("gfx942", Rocm.ROCM720)),
    (ImageReport(gpu_arch="gfx950-rocm720"), "gfx950", ("gfx950", Rocm.ROCM720)),
    (ImageReport(gpu_arch="gfx942-rocm724"), "gfx942", ("gfx942", Rocm.ROCM724)),
    (ImageReport(gpu_arch="gfx950-rocm724", hip="7.2.53211-e3e4a8f1c"), "gfx950", ("gfx950", Rocm.ROCM724)),
    # A stamp says everything: the HIP version and the 7.2.4 markers are not consulted.
    (ImageReport(gpu_arch="gfx942", hip="7.2.26015-fc0010cf6a", pip_constraint="/etc/pip-constraints.txt"),
     "gfx942", ("gfx942", Rocm.ROCM700)),
    # Images built before the stamp existed:
    (ImageReport(pip_constraint="/opt/constraints.txt", hip="7.2.53211-e3e4a8f1c"), "gfx942", ("gfx942", Rocm.ROCM724)),
    (ImageReport(hsa_ipc_legacy="1", hip="7.2.53211-e3e4a8f1c"), "gfx950", ("gfx950", Rocm.ROCM724)),
    (ImageReport(hsa_ipc_legacy="0", hip="7.2.26015-fc0010cf6a"), "gfx942", ("gfx942", Rocm.ROCM720)),
    (ImageReport(hip="7.2.26015-fc0010cf6a", torch="2.9.1+rocm7.2.0"), "gfx950", ("gfx950", Rocm.ROCM720)),
    (ImageReport(hip="7.0.51831-a3e329ad8", torch="2.9.0a0+git1c57644"), "gfx942", ("gfx942", Rocm.ROCM700)),
    # "Do not key off torch 2.11": a 7.0 HIP with a newer torch is still 7.0.
    (ImageReport(hip="7.0.51831-a3e329ad8", torch="2.11.0+rocm7.0"), "gfx942", ("gfx942", Rocm.ROCM700)),
    (ImageReport(hip="6.4.43482-0f2d60242"), "gfx942", ("gfx942", Rocm.ROCM700)),
    (ImageReport(hip=""), "gfx942", ("gfx942", Rocm.ROCM700)),  # torch without HIP
    (ImageReport(), "gfx950", ("gfx950", Rocm.ROCM700)),  # no torch at all
    # Stamps the pattern does not take fall through to the inference.
    (ImageReport(gpu_arch="gfx942-rocm700", hip="7.2.26015-fc0010cf6a"), "gfx942", ("gfx942", Rocm.ROCM720)),
    (ImageReport(gpu_arch="gfx90a"), "gfx942", ("gfx942", Rocm.ROCM700)),
    (ImageReport(gpu_arch="gfx950-rocm724-preview", pip_constraint="x"), "gfx950", ("gfx950", Rocm.ROCM724)),
]


@pytest.mark.parametrize("report, runner_gfx, expected", FLAVOR_CASES)
def test_flavor_from_what_the_image_reports(report, runner_gfx, expected):
    flavor = install.detect_flavor(report, runner_gfx)
    assert (flavor.gfx, flavor.rocm) == expected
    assert flavor.source  # always says how it was found


def test_the_probe_output_parses_into_a_report():
    report = ImageReport.parse({"GPU_ARCH": "gfx942-rocm720", "PIP_CONSTRAINT": None, "HSA_ENABLE_IPC_MODE_LEGACY": None,
                                "python": "3.10.12", "torch": "2.9.1", "hip": "7.2.26015", "cache_files": 12,
                                "cache_bytes": 4096})
    assert report == ImageReport("gfx942-rocm720", None, None, "2.9.1", "7.2.26015", "3.10.12", 12, 4096)


def test_placeholders_fill_known_names_and_leave_other_braces():
    values = {"extras": "dev_hip,tracing", "checkout": "/sglang-checkout"}
    assert install.fill("python[{extras}]", values) == "python[dev_hip,tracing]"
    assert install.fill("{checkout}/scripts/x.py", values) == "/sglang-checkout/scripts/x.py"
    assert install.fill("-exec rm -rf {} +", values) == "-exec rm -rf {} +"


DOCKERFILE = """ARG BASE_IMAGE_942="rocm/sgl-dev:rocm7-vllm-20250904"
ARG BASE_IMAGE_942_ROCM720="rocm/pytorch:rocm7.2_ubuntu22.04_py3.10_pytorch_release_2.9.1"
ARG BASE_IMAGE_950="rocm/sgl-dev:rocm7-vllm-20250904"

FROM $BASE_IMAGE_942 AS gfx942
ENV BUILD_VLLM="0"
ENV BUILD_TRITON="0"
ENV BUILD_LLVM="0"
ENV BUILD_AITER_ALL="1"
ENV BUILD_MOONCAKE="1"
ARG AITER_COMMIT_DEFAULT="v0.1.7.post2"
ENV NO_DEPS_FLAG=""

FROM $BASE_IMAGE_942_ROCM720 AS gfx942-rocm720
ENV BUILD_VLLM="0"
ARG AITER_COMMIT_DEFAULT="v0.1.10.post1"

FROM $BASE_IMAGE_950 AS gfx950
ENV BUILD_VLLM="0"
""" + "ENV FILLER=1\n" * 25 + 'ARG AITER_COMMIT_DEFAULT="too-far-below"\n'


def test_the_pin_comes_from_the_images_own_dockerfile_stage():
    assert install.dockerfile_pin(DOCKERFILE, "gfx942", "AITER_COMMIT_DEFAULT", 20) == "v0.1.7.post2"
    assert install.dockerfile_pin(DOCKERFILE, "gfx942-rocm720", "AITER_COMMIT_DEFAULT", 20) == "v0.1.10.post1"
    assert install.dockerfile_pin(DOCKERFILE, "gfx950", "AITER_COMMIT_DEFAULT", 20) is None  # as grep -A20
    assert install.dockerfile_pin(DOCKERFILE, "gfx950-rocm724", "AITER_COMMIT_DEFAULT", 20) is None


@pytest.mark.parametrize("image, pinned, override, decision", [
    ("0.1.7.post2", "v0.1.7.post2", None, PinDecision.MATCH),  # pip's version has no leading v
    ("v0.1.7.post2", "v0.1.7.post2", None, PinDecision.MATCH),
    (None, "v0.1.7.post2", None, PinDecision.MISSING),
    ("0.1.8.dev12+g1a2b3c4", "v0.1.7.post2", None, PinDecision.KEEP),  # a dev build in the image stays
    ("0.1.7+g9f8e7d6", "v0.1.7.post2", None, PinDecision.KEEP),
    ("0.1.6", "v0.1.7.post2", None, PinDecision.MISMATCH),
    ("0.1.7.post2", "v0.1.7.post2", "5f3a9c1", PinDecision.OVERRIDE),  # AITER_COMMIT_OVERRIDE forces it
])
def test_pin_decisions_follow_sglangs_aiter_check(image, pinned, override, decision):
    got = install.pin_decision(image, pinned, r"dev|\+g[0-9a-f]+", override)
    assert got is decision
    assert got.rebuild == (decision in (PinDecision.MISSING, PinDecision.MISMATCH, PinDecision.OVERRIDE))


def test_kernel_rebuild_only_when_its_sources_changed(tmp_path):
    sources = ["python/sglang/kernels/aot"]
    assert install.source_fingerprint(tmp_path, sources) is None
    kernel = tmp_path / "python/sglang/kernels/aot"
    kernel.mkdir(parents=True)
    (kernel / "topk.hip").write_text("__global__ void k() {}\n")
    (kernel / "__pycache__").mkdir()
    (kernel / "__pycache__" / "x.pyc").write_bytes(b"\0")
    first = install.source_fingerprint(tmp_path, sources)
    (kernel / "__pycache__" / "x.pyc").write_bytes(b"\1")  # bytecode is not a source
    assert install.source_fingerprint(tmp_path, sources) == first and first.startswith("sha256:")
    assert install.kernel_decision("changed", first, first)[0] is False
    assert install.kernel_decision("changed", first, None) == (True, "the image does not record its kernel sources")
    (kernel / "topk.hip").write_text("__global__ void k() { /* the change */ }\n")
    changed = install.source_fingerprint(tmp_path, sources)
    build, why = install.kernel_decision("changed", changed, first)
    assert build and "differ" in why
    assert install.kernel_decision("always", first, first)[0] is True
    assert install.kernel_decision("never", changed, first)[0] is False
    assert install.kernel_decision("changed", None, first) == (False, "the checkout has no kernel sources")


NETWORK = [
    ("WARNING: Retrying (Retry(total=4, connect=None, read=None, redirect=None, status=None)) after connection broken by "
     "'NewConnectionError('<pip._vendor.urllib3.connection.HTTPSConnection object at 0x7f1c>: Failed to establish a new "
     "connection: [Errno 101] Network is unreachable')': /simple/httpx/\n"
     "ERROR: Could not find a version that satisfies the requirement httpx>=0.25.0 (from versions: none)"),
    "pip._vendor.urllib3.exceptions.ReadTimeoutError: HTTPSConnectionPool(host='files.pythonhosted.org', port=443): Read timed out.",
    "fatal: unable to access 'https://github.com/ROCm/aiter.git/': Could not resolve host: github.com",
    "error: RPC failed; curl 56 GnuTLS recv error (-9): A TLS packet with unexpected length was received.\nfatal: early EOF",
    "ConnectionResetError: [Errno 104] Connection reset by peer",
    "ERROR: HTTP error 503 while getting https://files.pythonhosted.org/x.whl: 503 Service Unavailable",
    "socket.gaierror: [Errno -3] Temporary failure in name resolution",
]
BUILD = [
    "error: command '/opt/rocm/llvm/bin/clang++' failed with exit code 1",
    ("ERROR: Could not find a version that satisfies the requirement nosuchpkg==9.9 (from versions: 1.0, 1.1)\n"
     "ERROR: No matching distribution found for nosuchpkg==9.9"),
    "ERROR: Cannot install sglang because these package versions have conflicting dependencies.",
    "cp: cannot stat 'pyproject_rocm.toml': No such file or directory",
    "csrc/topk.hip:12:5: error: use of undeclared identifier 'warpSize'",
    "  error: subprocess-exited-with-error\n  × Building wheel for sgl-kernel (pyproject.toml) did not run successfully.",
]


@pytest.mark.parametrize("output", NETWORK)
def test_network_looking_failures_are_worth_a_retry(output):
    assert install.classify(output, load_config(env={}).install.network_errors) is FailureKind.NETWORK


@pytest.mark.parametrize("output", BUILD)
def test_build_and_resolution_failures_are_not(output):
    assert install.classify(output, load_config(env={}).install.network_errors) is FailureKind.OTHER


def test_error_line_picks_the_line_that_says_what_went_wrong():
    assert install.error_line("Collecting x\n  error: command 'gcc' failed\nnote: see above\n") == "error: command 'gcc' failed"
    assert install.error_line("just output\nlast line\n") == "last line"


def test_the_proof_names_both_paths_when_the_image_copy_wins():
    spec = load_config(env={}).install.proof
    image_copy = {"origin": "/opt/venv/lib/python3.10/site-packages/sglang/__init__.py", "version": "0.5.9"}
    bad = install.judge_proof(image_copy, spec, None)
    assert not bad.ok
    assert "/opt/venv/lib/python3.10/site-packages/sglang/__init__.py" in bad.message and "/sglang-checkout/python" in bad.message
    good = install.judge_proof({"origin": "/sglang-checkout/python/sglang/__init__.py", "version": "0.5.10"}, spec, None)
    assert good.ok and good.message == "sglang 0.5.10 is imported from /sglang-checkout/python/sglang/__init__.py"
    # A sibling folder that merely starts with the same name is not the checkout.
    assert not install.judge_proof({"origin": "/sglang-checkout/python-old/sglang/__init__.py"}, spec, None).ok
    missing = install.judge_proof({"origin": None, "error": "no module named sglang"}, spec, None)
    assert not missing.ok and "does not resolve" in missing.message and "/sglang-checkout/python" in missing.message
    stale = install.judge_proof({"origin": "/sglang-checkout/python/sglang/__init__.py", "version": "0.5.9"}, spec, "0.5.10")
    assert not stale.ok and "0.5.9" in stale.message and "0.5.10" in stale.message


def test_shipped_install_config_mirrors_sglangs_script():
    config = load_config(env={}).install
    assert config.step_names() == ["pip", "remove-image-copy", "kernel", "checkout", "test-deps", "test-deps-optional",
                                   "aiter", "httpx", "warmup"]
    assert {name: f.extras for name, f in config.flavors.items()} == {
        "rocm700": "dev_hip,tracing", "rocm720": "dev_hip,tracing", "rocm724": "dev_hip_rocm724,tracing"}
    steps = {s.name: s for s in config.steps}
    checkout = [c.argv for c in steps["checkout"].commands()]
    assert checkout == [("cp", "python/pyproject_other.toml", "python/pyproject.toml"),
                        ("python3", "-m", "pip", "install", "--cache-dir", "{pip_cache}", "-e", "python[{extras}]")]
    deps = " ".join(a for c in steps["test-deps"].commands() for a in c.argv)
    for wanted in ("lmms-eval.git@v0.4.1", "antlr4-python3-runtime==4.9.3", "human-eval.git", "huggingface_hub[hf_xet]", "pytest"):
        assert wanted in deps
    assert steps["test-deps-optional"].optional
    assert steps["aiter"].pin.arg == "AITER_COMMIT_DEFAULT" and steps["aiter"].pin.override_env == "AITER_COMMIT_OVERRIDE"
    assert steps["kernel"].kernel.sources == ("python/sglang/kernels/aot",)
    pip_steps = [s.name for s in config.steps if any("pip" in c.argv for c in s.commands())]
    assert pip_steps[-1] == "httpx"  # the last pip operation, so nothing downgrades httpx again
    assert steps["warmup"].commands()[0].argv == ("python3", "{checkout}/scripts/ci/amd/amd_ci_warmup_aiter.py")
    assert config.pip_cache.dir.startswith(config.pip_cache.mount + "/")
    assert config.proof.package == "sglang" and config.proof.expected_root == "/sglang-checkout/python"


def _broken(config_dir: Path, old: str, new: str) -> str:
    path = config_dir / "install.yaml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ConfigError) as caught:
        load_config(config_dir, env={})
    return str(caught.value)


@pytest.mark.parametrize("old, new, message", [
    ('"python[{extras}]"', '"python[{extra}]"', r"steps[3].run[1]: unknown placeholder {extra}"),
    ('"{pin}"', '"{pin}"', None),  # allowed in a pin step (checked below for a plain one)
    ("  - name: httpx\n", "  - name: warmup\n", "duplicate step name 'warmup'"),
    ("  - name: httpx\n", "  - name: Ensure HTTPX\n", "a step name is lower-case letters, digits and -"),
    ("    kind: kernel\n", "", "kind command takes no `kernel:` block"),
    ("  rocm724: {extras", "  rocm999: {extras", "missing rocm724"),
    ("    timeout_s: 600\n", "    timeout_s: 0\n", "steps[0].timeout_s: must be > 0"),
    ("  - 'Network is unreachable'\n", "  - 'Network (is'\n", "network_errors[4]: not a regular expression"),
    ("  expected_root: /sglang-checkout/python", "  expected_root: sglang-checkout/python", "must be an absolute path"),
])
def test_bad_install_config_is_named_by_file_line_and_key(config_dir, old, new, message):
    if message is None:
        load_config(config_dir, env={})
        return
    text = _broken(config_dir, old, new)
    assert message in text and "install.yaml:" in text


def test_pin_placeholder_outside_a_pin_step_is_refused(config_dir):
    text = _broken(config_dir, '"httpx>=0.25.0"]', '"httpx=={pin}"]')
    assert "unknown placeholder {pin}" in text


def test_skipping_a_step_that_does_not_exist_is_bad_input():
    with pytest.raises(UserError, match=r"--skip nope: no such install step \(allowed: pip, remove-image-copy, kernel"):
        install.check_skip(load_config(env={}).install, ["nope"])
    done = run_door("invoke", "install-deps", "--skip", "test-deps", "--skip", "nope")
    assert done.code == 2 and done.err.count("\n") == 1 and "no such install step" in done.err
    assert "Traceback" not in done.err


def test_a_summary_shows_commit_import_path_version_and_image_side_by_side():
    steps = (install.StepResult("checkout", install.StepStatus.OK, 3.2, 1),
             install.StepResult("test-deps", install.StepStatus.FAILED, 1.0, 1, "`pip install x` exited with 1: ERROR: boom"),
             install.StepResult("warmup", install.StepStatus.NOT_RUN, note="an earlier step failed"))
    flavor = install.ImageFlavor("gfx942", Rocm.ROCM720, "the image's GPU_ARCH=gfx942-rocm720")
    result = install.InstallResult(steps, None, flavor, "dev_hip,tracing", 4.5, "/sgl-data/pip-cache", 0, 0, True,
                                   "0123abcd", "rocm/sgl-dev:v0.5.10-rocm720-mi30x-20260421", "sha256:feed")
    assert not result.ok and result.failure == "install step 'test-deps' failed: `pip install x` exited with 1: ERROR: boom"
    text = result.markdown()
    assert "| `0123abcd` | (not imported) | ? | `rocm/sgl-dev:v0.5.10-rocm720-mi30x-20260421` `sha256:feed` |" in text
    assert "INFRASTRUCTURE FAILURE" in text and "pip cache cold at /sgl-data/pip-cache, on the runner's data mount" in text
    assert "| warmup | not run | 0.0 s | 0 | an earlier step failed |" in text
