"""Training steps per second of `flowdiff train` in 1 process and in N gloo processes under torchrun.

The same run (the digits U-Net by default, global batch 64) is trained by `python -m flowdiff
train` and by `torchrun --nproc_per_node N -m flowdiff -- train`; the speed is read from the
run's metrics.jsonl (steps/s of each logged window, the first window — start-up — left out, the
median of the rest). Scaling efficiency = (steps/s on N) / (steps/s on 1) / N for the same GLOBAL
batch, so 1.0 is perfect and 1/N means no gain. Every process gets `--threads` CPU threads.
`--repeats R` measures the pair R times in a row and prints the 1-minute load average (as `uptime`
shows it) before and after each repeat: on a shared machine the load decides these figures.

    python benchmarks/ddp_scaling.py [--data digits] [--steps 300] [--batch 64] [--ranks 2] [--threads 1]
                                     [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")


def train(ranks: int, out: Path, args: argparse.Namespace) -> tuple[float, float]:
    """(median steps/s after the first logged window, wall seconds of the whole command)."""
    options = ["train", "--data", args.data, "--steps", str(args.steps), "--batch", str(args.batch), "--out",
               str(out), "--quiet", "--no-report", "--threads", str(args.threads)]
    if ranks == 1:
        command = [sys.executable, "-m", "flowdiff", *options]
    else:
        torchrun = str(Path(sys.executable).with_name("torchrun"))
        command = [torchrun, "--standalone", "--nproc_per_node", str(ranks), "-m", "flowdiff", "--", *options]
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": str(args.threads)}
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(r["steps_per_s"] for r in records[1:]), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="digits")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    print(f"{args.data}, global batch {args.batch}, {args.steps} steps, {args.threads} thread(s) per process, "
          f"{os.cpu_count()} CPUs")
    speed_ups = []
    for repeat in range(1, args.repeats + 1):
        load_before = os.getloadavg()[0]
        with tempfile.TemporaryDirectory() as folder:
            one, wall_one = train(1, Path(folder) / "one", args)
            many, wall_many = train(args.ranks, Path(folder) / "many", args)
        speed_ups.append(many / one)
        print(f"repeat {repeat}: load {load_before:.2f} -> {os.getloadavg()[0]:.2f}")
        print(f"1 process:  {one:8.2f} steps/s  ({wall_one:.1f} s wall for the whole command)")
        print(f"{args.ranks} processes: {many:8.2f} steps/s  ({wall_many:.1f} s wall)")
        print(f"speed-up {many / one:.2f}x, scaling efficiency {many / one / args.ranks:.0%}")
    if args.repeats > 1:
        middle = statistics.median(speed_ups)
        print(f"median speed-up {middle:.2f}x (efficiency {middle / args.ranks:.0%}); "
              f"range {min(speed_ups):.2f}x-{max(speed_ups):.2f}x")


if __name__ == "__main__":
    main()
