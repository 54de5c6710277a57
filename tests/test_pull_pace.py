"""The fan-out decisions without Docker: predicted-time abandon, its hysteresis and jitter, the
host's cap on public pulls, the one-pull-per-image lock, recorded rates, and manifest sizes;
with progress traces (time, bytes) as the daemon reported them, replayed exactly."""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from ci.hostpull import PublicSlots, image_lock, read_rates, record_rate
from ci.pullpace import Budget, ImageSize, Leave, Watchdog, manifest_size, public_estimate, with_rate
from ci.registry import engine_sockets

MIB = 1048576
TRACES = Path(__file__).parent / "fixtures" / "pull_traces"


def budget(total=100 * MIB, budget_s=60.0, public=30 * MIB, faster_by=2.0, hold_s=0.0) -> Budget:
    return Budget(budget_s, total, public, faster_by, hold_s)


def replay(dog: Watchdog, trace, step: float = 0.5):
    """Feed (time, bytes) points; the first verdict and when it came, or (None, None)."""
    for now, done in trace:
        dog.observe(now, done)
        verdict = dog.verdict(now)
        if verdict:
            return verdict, now
    return None, None


def steady(rate: float, seconds: float, step: float = 0.5, start: float = 0.0):
    return [(start + i * step, int(rate * i * step)) for i in range(1, int(seconds / step) + 1)]


def test_a_mirror_whose_rate_misses_the_budget_is_left_after_one_window():
    # 100 MiB at 1 MiB/s: 100 s > 60 s budget; public (30 MiB/s) is 30 times faster.
    verdict, at = replay(Watchdog(5, 10, 0.0, budget()), steady(MIB, 30))
    assert verdict.leave is Leave.OVER_BUDGET and at == 10.0
    assert "predicted time-to-image 100 s" in verdict.reason and "budget 60 s" in verdict.reason


def test_a_slow_mirror_within_budget_keeps_the_job():
    # 100 MiB at 2 MiB/s: 50 s, within the 60 s budget, though public would be 15 times faster.
    assert replay(Watchdog(5, 10, 0.0, budget()), steady(2 * MIB, 50)) == (None, None)


def test_over_budget_stays_when_public_is_not_plainly_faster():
    # 1 MiB/s against a public estimate of 1.5 MiB/s: not twice as fast, so the mirror keeps the job.
    assert replay(Watchdog(5, 10, 0.0, budget(public=1.5 * MIB)), steady(MIB, 40)) == (None, None)


def test_layers_the_engine_already_has_are_not_predicted_to_come():
    """A nightly shares most layers with yesterday's: 100 MiB in all, 80 MiB already here, the
    other 20 MiB at 1 MiB/s arrive well within the 60 s budget: the mirror keeps the job (judged
    on the whole image it would have been left after one window)."""
    plan = Budget(60.0, 100 * MIB, 30 * MIB, 2.0, 0.0, {"base": 80 * MIB, "new": 20 * MIB})
    dog = Watchdog(5, 10, 0.0, plan)
    for now, done in steady(MIB, 25):
        dog.observe(now, done, present={"base"})
        assert dog.verdict(now) is None
    whole = Watchdog(5, 10, 0.0, plan)
    assert replay(whole, steady(MIB, 25))[0].leave is Leave.OVER_BUDGET


def test_without_a_known_size_the_daemons_total_is_used():
    dog = Watchdog(5, 10, 0.0, budget(total=None))
    for now, done in steady(MIB, 20):
        dog.observe(now, done, total=100 * MIB if now >= 3 else None)
        if dog.verdict(now):
            break
    assert now == 10.0


def test_no_progress_deadline_stays_with_a_budget():
    dog = Watchdog(5, 10, 0.0, budget())
    dog.observe(1.0, MIB)
    assert dog.verdict(5.9) is None
    assert dog.verdict(6.0).leave is Leave.STALLED


def test_the_verdict_must_hold_and_starts_again_when_it_lapses():
    """Hysteresis: over budget for 4 s, a burst brings the prediction back within budget, then
    over again: the 5 s hold counts from the second time, not the first."""
    dog = Watchdog(5, 4, 0.0, budget(total=60 * MIB, budget_s=40, hold_s=5))
    trace = [(t, int(0.5 * MIB * t)) for t in range(1, 9)]  # 0.5 MiB/s: 120 s predicted
    trace += [(9.0, 4 * MIB + 20 * MIB), (10.0, 25 * MIB)]  # a burst: the window's rate is 5 MiB/s
    trace += [(10.0 + t, 25 * MIB + int(0.5 * MIB * t)) for t in range(1, 20)]
    verdicts = []
    for now, done in trace:
        dog.observe(float(now), done)
        verdicts.append((now, dog.verdict(float(now))))
    first = next(now for now, v in verdicts if v)
    # Over budget from 4 s (held to 9 s it would have fired then); the burst lapses it; over
    # again from 13 s, when the burst leaves the window's start: the hold counts from there.
    assert first == 13 + 5


@settings(max_examples=200, deadline=None)
@given(rate=st.floats(0.05, 50), total=st.integers(1, 200), budget_s=st.floats(20, 300), hold=st.floats(0, 10))
def test_steady_rate_leaves_iff_it_misses_the_budget(rate, total, budget_s, hold):
    """At a steady rate the prediction is exact: the job leaves exactly when total / rate is past
    the budget (public plainly faster), and never before a window plus its hold."""
    dog = Watchdog(1000, 10, 0.0, budget(total=total * MIB, budget_s=budget_s, public=1e6 * MIB, hold_s=hold))
    finish = total / rate
    points = [(t * 0.5, min(int(rate * MIB * t * 0.5), total * MIB)) for t in range(1, int(min(finish, 400) / 0.5) + 1)]
    verdict, at = replay(dog, points)
    if verdict:
        assert finish > budget_s * 0.99 and at >= 10 + hold - 1e-9
    elif finish > budget_s * 1.01 and finish > 10 + hold + 1:
        raise AssertionError(f"stayed on a mirror predicted at {finish:.0f} s past a {budget_s:.0f} s budget")


def test_jitter_spreads_the_leaving_of_jobs_on_one_slow_mirror():
    """Twelve jobs sharing one slow mirror (same trace): with a 0..30 s jitter on the 10 s hold
    they leave over many seconds, not in the same one."""
    rng = random.Random(7)
    leave_at = []
    for _ in range(12):
        dog = Watchdog(5, 10, 0.0, budget(hold_s=10 + rng.uniform(0, 30)))
        leave_at.append(replay(dog, steady(MIB, 80))[1])
    assert len({int(t) for t in leave_at}) >= 8 and max(leave_at) - min(leave_at) > 15


def test_a_shared_mirror_under_the_host_cap_keeps_those_without_a_slot(tmp_path):
    """Six jobs on one host share 6 MiB/s; each is over budget alone (1 MiB/s for 100 MiB in
    60 s). With two public slots, two leave; the four left share the mirror's whole rate (1.5
    MiB/s each) and are then within budget, so they stay: the herd is two, not six."""
    slots = PublicSlots(tmp_path, 2, 0.1)
    jobs = {i: Watchdog(1000, 10, 0.0, budget(hold_s=i * 0.5)) for i in range(6)}
    done = dict.fromkeys(jobs, 0.0)
    held, left = [], []
    now = 0.0
    while now < 120 and len(left) + sum(done[i] >= 100 * MIB for i in jobs) < 6:
        now += 0.5
        staying = [i for i in jobs if i not in left and done[i] < 100 * MIB]
        for i in staying:
            done[i] += 6 * MIB / len(staying) * 0.5
            jobs[i].observe(now, int(done[i]))
            if jobs[i].verdict(now):
                slot = slots.try_take()
                if slot:
                    held.append(slot)
                    left.append(i)
    assert len(left) == 2 and all(done[i] >= 100 * MIB for i in jobs if i not in left)
    for slot in held:
        slot.release()


def test_public_slots_cap_and_wait(tmp_path):
    slots = PublicSlots(tmp_path, 2, 0.01)
    first, second = slots.try_take(), slots.try_take()
    assert first and second and slots.try_take() is None
    said = []

    def sleep(seconds):  # another job's public pull ends while we wait
        first.release()

    third = slots.take(said.append, sleep)
    assert third.index == first.index and said == ["all 2 public pull slot(s) of this host are taken; waiting for one"]
    second.release()
    third.release()


def test_one_pull_per_engine_and_image_and_the_wait_is_measured(tmp_path):
    said, waited = [], {}
    holding = threading.Event()

    def first():
        with image_lock(tmp_path, "engine-a", "rocm/sgl-dev:t", said.append):
            holding.set()
            time.sleep(0.3)

    thread = threading.Thread(target=first)
    thread.start()
    holding.wait(5)
    with image_lock(tmp_path, "engine-b", "rocm/sgl-dev:t", said.append) as other_engine:
        waited["other engine"] = other_engine
    with image_lock(tmp_path, "engine-a", "rocm/sgl-dev:t", said.append) as same:
        waited["same engine"] = same
    thread.join()
    assert waited["other engine"] < 0.1 and 0.15 < waited["same engine"] < 5
    assert said == ["waiting for another job's pull of rocm/sgl-dev:t into this engine"]


def test_recorded_rates_keep_the_newest_and_estimate_by_median(tmp_path):
    for rate in (10.0, 20.0, 30.0, 1000.0):
        record_rate(tmp_path, "docker.io", rate, 3)
    assert read_rates(tmp_path) == {"docker.io": [20.0, 30.0, 1000.0]}
    assert public_estimate(read_rates(tmp_path)["docker.io"], 5.0) == 30.0
    assert public_estimate([], 5.0) == 5.0
    (tmp_path / "rates.json").write_text("{not json")
    assert read_rates(tmp_path) == {}


@given(st.lists(st.floats(1, 1e9), max_size=30), st.integers(1, 10))
def test_with_rate_keeps_at_most_kept_newest_last(rates, kept):
    recorded: dict = {}
    for rate in rates:
        recorded = with_rate(recorded, "r", rate, kept)
    assert recorded.get("r", []) == rates[-kept:]


def test_manifest_size_sums_layers_and_config_and_picks_the_platform_of_an_index():
    manifest = {"config": {"size": 7}, "layers": [{"size": 100, "digest": "sha256:" + "a" * 64},
                                                  {"size": 23, "digest": "sha256:" + "b" * 64}]}
    assert manifest_size(manifest) == ImageSize(130, {"a" * 12: 100, "b" * 12: 23})  # by the daemon's layer ids
    index = {"manifests": [{"digest": "sha256:arm", "platform": {"os": "linux", "architecture": "arm64"}},
                           {"digest": "sha256:amd", "platform": {"os": "linux", "architecture": "amd64"}}]}
    assert manifest_size(index) == "sha256:amd"


def test_engine_sockets_are_picked_by_owner():
    lines = ('ESTAB 0 0 127.0.0.1:36486 127.0.0.1:5000 users:(("dockerd",pid=2420,fd=4))\n'
             'ESTAB 0 0 127.0.0.1:36490 127.0.0.1:5000 users:(("dockerd",pid=3100,fd=9))\n')
    assert engine_sockets(lines, 2420) == [("127.0.0.1:36486", "127.0.0.1:5000")]


def test_recorded_traces_replay_to_their_decisions():
    """Traces the fan-out bench recorded (python -m bench.fanout_bench --record-traces DIR):
    each with its policy and the decision the real pull took; the watchdog replays it."""
    traces = sorted(TRACES.glob("*.json"))
    assert traces, f"no recorded traces in {TRACES}"
    for path in traces:
        data = json.loads(path.read_text())
        plan = data["budget"]
        dog = Watchdog(data["idle_s"], data["window_s"], 0.0, Budget(plan["budget_s"], plan["total_bytes"],
                       plan["public_bytes_per_s"], plan["faster_by"], plan["hold_s"]))
        decided, at = None, None
        free_from = data["slot_free_from"]
        for now, done, downloaded, total in data["points"]:
            dog.observe(now, done, downloaded, total)
            verdict = dog.verdict(now)
            if verdict and (verdict.leave is Leave.STALLED or (free_from is not None and now >= free_from)):
                decided, at = verdict.leave.value, now
                break
        assert (decided, at) == (data["decision"], data["decided_at"]), path.name
