"""Collective smoke test, run in the CI container before a multi-GPU job's files: one all-reduce
across every rank torchrun started (one per GPU), checked against the exact sum, within a timeout.
SGLang runs scripts/ci/amd/test_rccl_multi_gpu.py for the same purpose. Backend nccl (RCCL on
ROCm) puts each rank on its own GPU; gloo runs on the CPU (the tests' stand-in: no GPU there).

    python3 -m torch.distributed.run --standalone --nproc_per_node=8 ci/allreduce_smoke.py --backend nccl \
        --timeout-s 300 --elements 1048576

(the stage passes config/health.yaml's smoke settings; nothing here has a default of its own).

Prints one `SGL_CI_SMOKE {json}` line per rank; exit 0 only when the sum is right everywhere."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time

MARK = "SGL_CI_SMOKE "


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", required=True)
    parser.add_argument("--timeout-s", type=float, required=True)
    parser.add_argument("--elements", type=int, required=True)
    args = parser.parse_args(argv)
    import torch
    import torch.distributed as dist

    started = time.monotonic()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    device = torch.device("cpu")
    if args.backend == "nccl":
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    dist.init_process_group(args.backend, timeout=datetime.timedelta(seconds=args.timeout_s))
    tensor = torch.full((args.elements,), float(rank + 1), dtype=torch.float32, device=device)
    dist.all_reduce(tensor)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    expected = world * (world + 1) / 2
    ok = bool(torch.all(tensor == expected).item())
    report = {"rank": rank, "world": world, "backend": args.backend, "device": str(device),
              "name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "sum": float(tensor[0].item()), "expected": expected, "ok": ok,
              "seconds": round(time.monotonic() - started, 3)}
    # One write per line (atomic on a pipe): ranks print at once and must not interleave.
    sys.stdout.write(MARK + json.dumps(report) + "\n")
    sys.stdout.flush()
    dist.destroy_process_group()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
