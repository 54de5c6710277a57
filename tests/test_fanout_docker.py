"""Fan-out on real parts, short: three Docker Engines of our own pull one image at once through a
mirror whose bandwidth they share, one engine's mirror connections stall mid-way, and a second
job on the first engine asks for the same image while the first pulls it."""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import threading

import pytest

from ci.config import load_config
from ci.images import ImageName
from ci.pull import Puller
from tests.support.engines import engines
from tests.support.faultproxy import Fault, FaultProxy, SharedBandwidth
from tests.support.registry import push_random_image, start_registry

pytestmark = [pytest.mark.docker, pytest.mark.timeout(120)]

MIB = 1048576
TAG = "v0.0.0-fanout-test"
IMAGE = ImageName("rocm/sgl-dev", TAG)


def _need_dockerd() -> None:
    if shutil.which("dockerd") is None or os.geteuid() != 0:
        message = "dockerd (Debian docker.io) and root are needed to start engines of our own"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def test_three_engines_share_a_mirror_one_stalls_and_a_second_job_waits_for_the_first(tmp_path):
    _need_dockerd()
    lan, public = start_registry(tmp_path / "lan"), start_registry(tmp_path / "public")
    mirrors: list[FaultProxy] = []
    try:
        layer = MIB
        digests = {push_random_image(r, "rocm/sgl-dev", TAG, (layer, layer, layer), seed=3)[0] for r in (lan, public)}
        assert len(digests) == 1
        shared = SharedBandwidth(3 * MIB)  # 3 jobs of 3 MiB: about 3 s together, within the 15 s budget
        mirrors = [FaultProxy(lan.port, Fault(), shared=shared), FaultProxy(lan.port, Fault(), shared=shared),
                   FaultProxy(lan.port, Fault(mode="stall", stall_after_bytes=MIB // 2), shared=shared)]
        front = FaultProxy(public.port)
        mirrors.append(front)
        override = tmp_path / "override.yaml"
        override.write_text(json.dumps({"pull": {
            "lan": {"first_progress_s": 2, "window_s": 2, "budget_s": 15, "public_bytes_per_s": 100 * MIB,
                    "faster_by": 2, "hold_s": 0, "jitter_s": 0},
            "host": {"state_dir": str(tmp_path / "state"), "public_slots": 2, "slot_poll_s": 0.1, "rates_kept": 5},
            "progress_log_interval_s": 3600}}))
        with engines(3) as running:
            # job 3 is a second job on engine 0: it must wait for job 0's pull, not pull again
            plan = [(0, mirrors[0]), (1, mirrors[1]), (2, mirrors[2]), (0, mirrors[0])]
            outcomes: dict[int, object] = {}
            outs: dict[int, io.StringIO] = {}
            start = threading.Barrier(len(plan))

            def job(i: int, engine: int, mirror: FaultProxy) -> None:
                env = {"SGL_CI_CONFIG_OVERRIDE": str(override), "LOCAL_DOCKER_REGISTRY": mirror.address,
                       "PUBLIC_DOCKER_REGISTRY": front.address}
                outs[i] = io.StringIO()
                puller = Puller(load_config(env=env), running[engine].client(60), env, outs[i], io.StringIO(),
                                rng=random.Random(i))
                start.wait()
                if i == 3:
                    threading.Event().wait(0.3)  # job 0 takes the lock first
                outcomes[i] = puller.pull(IMAGE)

            threads = [threading.Thread(target=job, args=(i, e, m)) for i, (e, m) in enumerate(plan)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(90)
            assert sorted(outcomes) == [0, 1, 2, 3], {i: outs[i].getvalue() for i in outs}
            sources = [str(outcomes[i].source) for i in range(4)]
            assert sources == ["lan", "lan", "public", "local"]
            assert outcomes[2].seconds < 2 + 6  # the deadline, then a public pull of 3 MiB
            assert outcomes[3].waited_s > 0.5 and outcomes[0].waited_s < 0.3
            assert "waiting for another job's pull" in outs[3].getvalue()
            assert f"waited_for_another_pull={outcomes[3].waited_s:.1f}" in outcomes[3].summary()
            # one public pull: the stalled engine's; the others asked public only for the digest
            assert 3 * MIB <= front.downstream_bytes < 4 * MIB
            assert {m.downstream_bytes >= 3 * MIB for m in mirrors[:2]} == {True}
    finally:
        for proxy in mirrors:
            proxy.close()
        lan.stop()
        public.stop()
