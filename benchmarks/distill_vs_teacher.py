"""How close a one-jump student comes to its teacher: `flowdiff distill RUN --steps 1` on eight Gaussians.

The teacher is a flow row of few_step_quality.py (`--teacher`: "fd flow (I-CFM)" or "fd flow (stable)"; same task,
MLP, loop and seed), trained `--teacher-steps` steps with EMA 0.999; its 100-step Euler quality is printed beside
that of one-jump students distilled from it (`TrajectoryDistillation` on the teacher's Heun ODE from 0 to 1,
`--ode-steps` steps), one for each number of stored trajectories in `--pairs`, student learning rate in
`--student-lr`, batch in `--student-batch` and number of student steps in `--student-steps` (EMA 0.999, cosine
decay). Measures as in few_step_quality.py, 5000 samples against 5000 held-out points (same reference points and
noise per seed): W2, energy distance, the within-mode spread (0.200 for the data) and the mode shares' TV.

    .venv/bin/python benchmarks/distill_vs_teacher.py --seed 0 --pairs 5000,20000 --student-steps 1500,3500,7000
    .venv/bin/python benchmarks/distill_vs_teacher.py --teacher "fd flow (stable)" --teacher-steps 7300 \
        --ode-steps 16 --pairs 5000 --student-lr 1e-3,3e-3 --student-batch 256,128 --student-steps 1700,3400
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import few_step_quality as bench  # noqa: E402


def ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",")]


def floats(text: str) -> list[float]:
    return [float(part) for part in text.split(",")]


def measures(quality: dict) -> str:
    return ", ".join(f"{name} {quality[name]:.4f}" for name in bench.METRICS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--teacher", default="fd flow (I-CFM)", choices=["fd flow (I-CFM)", "fd flow (stable)"])
    parser.add_argument("--teacher-steps", type=int, default=6700)
    parser.add_argument("--ode-steps", type=int, default=64, help="Heun steps of the teacher's ODE per trajectory")
    parser.add_argument("--pairs", type=ints, default=[5000, 20000], help="comma-separated numbers of trajectories")
    parser.add_argument("--student-steps", type=ints, default=[1500, 3500], help="comma-separated")
    parser.add_argument("--student-lr", type=floats, default=[1e-3], help="comma-separated peak learning rates")
    parser.add_argument("--student-batch", type=ints, default=[256], help="comma-separated batch sizes")
    parser.add_argument("--n", type=int, default=5000)
    args = parser.parse_args()
    if min(args.teacher_steps, args.ode_steps, args.n, *args.pairs, *args.student_steps, *args.student_batch) < 1:
        raise SystemExit("--teacher-steps, --ode-steps, --n, --pairs, --student-steps and --student-batch must all be "
                         ">= 1")
    if min(args.student_lr) <= 0:
        raise SystemExit(f"--student-lr must be > 0, got {args.student_lr}")
    torch.set_num_threads(1)
    reference, _, x0 = bench.evaluation_points(args.n, args.seed)
    make_loss, flow_map, _ = bench.METHODS[args.teacher]
    data = bench.training_data(args.teacher_steps, 256, args.seed)
    teacher = bench.train(make_loss(), flow_map, data, args.teacher_steps, 256, args.seed, ema=0.999)
    for nfe in (8, 100):
        quality = bench.quality(bench.euler(teacher.model, x0, nfe), reference)
        print(f"{args.teacher} teacher, {args.teacher_steps} steps ({teacher.cpu_s:.1f} CPU s), {nfe} Euler steps: "
              f"{measures(quality)}", flush=True)
    for pairs in args.pairs:
        states, ode_s = bench.teacher_states(teacher, flow_map, pairs, 1, args.seed, args.ode_steps)
        for lr, batch, steps in itertools.product(args.student_lr, args.student_batch, args.student_steps):
            student = bench.train(bench.student_loss("distill", states), True, states[:, -1], steps, batch, args.seed,
                                  teacher.model, 0.999, lr)
            quality = bench.quality(bench.jumps(student.model, x0, 1), reference)
            print(f"{pairs} trajectories ({ode_s:.1f} CPU s), student lr {lr:g}, batch {batch}, {steps} steps "
                  f"({student.cpu_s:.1f} CPU s), one jump: {measures(quality)}", flush=True)


if __name__ == "__main__":
    main()
