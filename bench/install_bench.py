"""Install step, cold vs warm pip cache (not a CI test): alternating pairs of jobs on the demo's
nightly stand-in, each a fresh container; "cold" with an empty data mount, "warm" with the one
the previous job filled. Prints the median of the whole install and of its test-deps step.

    python bench/install_bench.py [PAIRS]   # needs Docker (the demo's image is built once)
"""

from __future__ import annotations

import io
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ci import install, registry
from ci.config import load_config
from ci.container import Containers, HostView, build_spec
from demo import run as demo
from demo import sandbox


def job(image: str, workspace: Path, data: Path, scratch: Path) -> install.InstallResult:
    override = scratch / "override.yaml"
    override.write_text(yaml.safe_dump({
        "container": {"name": "ci_sglang_bench", "network": "none", "devices": [{"path": "/dev/kfd", "optional": True}],
                      "render_devices_fallback": {"path": "/dev/dri", "optional": True},
                      "mounts": [{"source": "$WORKSPACE", "target": "/sglang-checkout"},
                                 {"source": str(data), "target": "/sgl-data"}],
                      "ulimits": {"nofile": [1024, 1024]}, "stop": {"sigint_grace_s": 1, "stop_timeout_s": 1}},
        "install": yaml.safe_load(demo.INSTALL)["install"]}))
    env = {"SGL_CI_CONFIG_OVERRIDE": str(override), "GITHUB_WORKSPACE": str(workspace)}
    config = load_config(env=env)
    containers = Containers(registry.connect(60), config.container, io.StringIO())
    spec = build_spec(config.container, config.arch("mi300"), "default", image, HostView(env))
    with containers.running(spec, {}) as started:
        return install.install_checkout(config, containers, config.arch("mi300"),
                                        install.target_of(started, config, image), env, io.StringIO())


def main() -> int:
    pairs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    client = registry.connect(60)
    scratch = Path(tempfile.mkdtemp(prefix="sgl-ci-install-bench-"))
    try:
        image = demo.nightly_image(client, sandbox.python_image(client), scratch, load_config(env={}))
        seconds: dict[str, list[float]] = {"cold": [], "warm": []}
        deps: dict[str, list[float]] = {"cold": [], "warm": []}
        for index in range(pairs):
            data = scratch / f"data-{index}"
            data.mkdir()
            for kind in ("cold", "warm"):
                workspace = demo.write_checkout(scratch / f"ws-{index}-{kind}", demo.CHECKOUT_VERSION)
                result = job(image, workspace, data, scratch)
                assert result.ok and result.cache_warm == (kind == "warm"), result.failure
                seconds[kind].append(result.seconds)
                deps[kind].append(next(s.seconds for s in result.steps if s.name == "test-deps"))
        for kind in ("cold", "warm"):
            print(f"{kind}: install median {statistics.median(seconds[kind]):.2f} s "
                  f"(min {min(seconds[kind]):.2f}, max {max(seconds[kind]):.2f}); "
                  f"test-deps step median {statistics.median(deps[kind]):.2f} s over {pairs} jobs")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
