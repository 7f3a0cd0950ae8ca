"""How close a one-jump student comes to its teacher: `flowdiff distill RUN --steps 1` on eight Gaussians.

The teacher is few_step_quality.py's "fd flow (I-CFM)" row (same task, MLP, loop and seed), trained `--teacher-steps`
steps with EMA 0.999; its 100-step Euler W2 is printed beside the W2 of one-jump students distilled from it
(`TrajectoryDistillation` on the teacher's Heun ODE from 0 to 1, `--ode-steps` steps) for each number of stored
trajectories in `--pairs` and each number of student steps in `--student-steps`. W2 and energy distance of 5000
samples against 5000 held-out points, as in few_step_quality.py (same reference points and noise per seed).

    .venv/bin/python benchmarks/distill_vs_teacher.py --seed 0 --pairs 5000,20000 --student-steps 1500,3500,7000
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import few_step_quality as bench  # noqa: E402

from flowdiff.learning.metrics import energy_distance, wasserstein2  # noqa: E402


def ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--teacher-steps", type=int, default=6700)
    parser.add_argument("--ode-steps", type=int, default=64, help="Heun steps of the teacher's ODE per trajectory")
    parser.add_argument("--pairs", type=ints, default=[5000, 20000], help="comma-separated numbers of trajectories")
    parser.add_argument("--student-steps", type=ints, default=[1500, 3500], help="comma-separated")
    parser.add_argument("--n", type=int, default=5000)
    args = parser.parse_args()
    if min(args.teacher_steps, args.ode_steps, args.n, *args.pairs, *args.student_steps) < 1:
        raise SystemExit("--teacher-steps, --ode-steps, --n, --pairs and --student-steps must all be >= 1")
    torch.set_num_threads(1)
    reference, _, x0 = bench.evaluation_points(args.n, args.seed)
    make_loss, flow_map, _ = bench.METHODS["fd flow (I-CFM)"]
    data = bench.training_data(args.teacher_steps, 256, args.seed)
    teacher = bench.train(make_loss(), flow_map, data, args.teacher_steps, 256, args.seed, ema=0.999)
    for nfe in (8, 100):
        w2 = wasserstein2(bench.euler(teacher.model, x0, nfe), reference, max_samples=None)
        print(f"teacher, {args.teacher_steps} steps ({teacher.cpu_s:.1f} CPU s), {nfe} Euler steps: W2 {w2:.4f}")
    for pairs in args.pairs:
        states, ode_s = bench.teacher_states(teacher, flow_map, pairs, 1, args.seed, args.ode_steps)
        for steps in args.student_steps:
            student = bench.train(bench.student_loss("distill", states), True, states[:, -1], steps, 256, args.seed,
                                  teacher.model, 0.999)
            x = bench.jumps(student.model, x0, 1)
            print(f"{pairs} trajectories ({ode_s:.1f} CPU s), student {steps} steps ({student.cpu_s:.1f} CPU s), "
                  f"one jump: W2 {wasserstein2(x, reference, max_samples=None):.4f}, "
                  f"energy {energy_distance(x, reference):.4f}", flush=True)


if __name__ == "__main__":
    main()
