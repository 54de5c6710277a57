"""The container's run arguments, built from config and a described host, with no Docker."""

from __future__ import annotations

import pytest

from ci.config import load_config
from ci.container import HostView, build_spec, render_devices
from ci.errors import ToolFailure, UserError

CONFIG = load_config(env={})
ROCM_HOST = {"/dev/kfd", "/dev/dri", "/work/sglang", "/toolkit", "/home/runner/sglang-data"}


def host(paths=ROCM_HOST, render_file=None, **env):
    files = {"/etc/podinfo/gha-render-devices": render_file} if render_file else {}
    return HostView(env={"GITHUB_WORKSPACE": "/work/sglang", **env}, exists=lambda p: p in paths or p in files or p.startswith("/dev/dri/renderD"),
                    read_text=files.get, toolkit="/toolkit")


def test_a_rocm_runner_gets_the_old_scripts_flags():
    spec = build_spec(CONFIG.container, CONFIG.arches["mi300"], "default", "rocm/sgl-dev:T", host())
    kwargs = spec.run_kwargs()
    assert kwargs["devices"] == ["/dev/kfd:/dev/kfd:rwm", "/dev/dri:/dev/dri:rwm"]
    assert kwargs["group_add"] == ["video"] and kwargs["cap_add"] == ["SYS_PTRACE"]
    assert kwargs["security_opt"] == ["seccomp=unconfined"] and kwargs["shm_size"] == "32g"
    assert [(u["Name"], u["Soft"], u["Hard"]) for u in kwargs["ulimits"]] == [("nofile", 65536, 65536)]
    assert kwargs["init"] is True and kwargs["user"] == "root" and kwargs["working_dir"] == "/sglang-checkout"
    assert [(m["Source"], m["Target"], m["ReadOnly"]) for m in kwargs["mounts"]] == [
        ("/work/sglang", "/sglang-checkout", False), ("/toolkit", "/sgl-ci", True), ("/home/runner/sglang-data", "/sgl-data", False)]
    env = kwargs["environment"]
    assert env["HF_HOME"] == "/sgl-data/hf-cache" and env["HF_HUB_ETAG_TIMEOUT"] == "300" and env["SGL_CI_ARCH"] == "mi300"
    assert "GPU_ARCHS" not in env
    assert spec.left_out == ()


def test_pod_render_devices_replace_all_of_dri():
    spec = build_spec(CONFIG.container, CONFIG.arches["mi300"], "default", "img:t",
                      host(render_file="--device=/dev/dri/renderD128 --device /dev/dri/renderD136\n"))
    assert spec.devices == ("/dev/kfd:/dev/kfd:rwm", "/dev/dri/renderD128:/dev/dri/renderD128:rwm",
                            "/dev/dri/renderD136:/dev/dri/renderD136:rwm")


@pytest.mark.parametrize("text, paths", [("--device=/dev/dri/renderD128", ["/dev/dri/renderD128"]),
                                         ("/dev/dri/renderD128,/dev/dri/renderD129", ["/dev/dri/renderD128", "/dev/dri/renderD129"]),
                                         ("", [])])
def test_render_devices_file_forms(text, paths):
    assert render_devices(text) == paths


def test_mi355_env_and_secrets_by_name_only():
    spec = build_spec(CONFIG.container, CONFIG.arches["mi355"], "default", "img:t", host(HF_TOKEN="hf_canary_value"))
    assert spec.env["GPU_ARCHS"] == "gfx950" and spec.secret_names == ("HF_TOKEN",)
    assert "HF_TOKEN" not in spec.env
    # The container's config (what `docker inspect` shows) never holds a secret: execs get it.
    assert "HF_TOKEN" not in spec.run_kwargs()["environment"]
    assert "hf_canary_value" not in repr(spec.run_kwargs()) + repr(spec) + "\n".join(spec.describe())
    assert "secrets by name: HF_TOKEN" in "\n".join(spec.describe())


def test_disagg_adds_rdma_and_host_namespaces():
    paths = ROCM_HOST | {"/dev/infiniband", "/sys/class/infiniband", "/sys/class/net"}
    spec = build_spec(CONFIG.container, CONFIG.arches["mi355"], "disagg", "img:t", host(paths))
    kwargs = spec.run_kwargs()
    assert kwargs["privileged"] and kwargs["network_mode"] == "host" and kwargs["ipc_mode"] == "host"
    assert ("memlock", -1, -1) in [(u["Name"], u["Soft"], u["Hard"]) for u in kwargs["ulimits"]]
    assert kwargs["cap_add"] == ["SYS_PTRACE", "IPC_LOCK"] and kwargs["group_add"] == ["video", "rdma"]
    assert "/dev/infiniband:/dev/infiniband:rwm" in kwargs["devices"]
    assert ("/sys/class/infiniband", "/sys/class/infiniband", True) in [(m["Source"], m["Target"], m["ReadOnly"]) for m in kwargs["mounts"]]
    assert "mount /etc/libibverbs.d" in spec.left_out  # optional and missing here: reported, left out


def test_a_missing_required_device_fails_and_optional_ones_are_reported(config_dir):
    with pytest.raises(ToolFailure, match="required device /dev/kfd is missing on this host"):
        build_spec(CONFIG.container, CONFIG.arches["mi300"], "default", "img:t", host({"/work/sglang", "/toolkit"}))
    (config_dir / "container.yaml").write_text((config_dir / "container.yaml").read_text()
        .replace("  - {path: /dev/kfd}", "  - {path: /dev/kfd, optional: true}")
        .replace("render_devices_fallback: {path: /dev/dri}", "render_devices_fallback: {path: /dev/dri, optional: true}"))
    relaxed = load_config(config_dir, env={})
    spec = build_spec(relaxed.container, relaxed.arches["mi300"], "default", "img:t", host({"/work/sglang", "/toolkit"}))
    assert spec.devices == () and spec.left_out == ("device /dev/kfd", "device /dev/dri", "mount /home/runner/sglang-data")


def test_unknown_variant():
    with pytest.raises(UserError, match="unknown variant 'rdma' \\(allowed: default, disagg\\)"):
        build_spec(CONFIG.container, CONFIG.arches["mi300"], "rdma", "img:t", host())
