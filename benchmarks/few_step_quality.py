"""Few-step sample quality: flow maps (MeanFlow, shortcut), reflow and distillation against flow models at NFE 1-100.

Task and loop are those of benchmarks/quality_vs_nfe.py: N(0, I) -> eight Gaussians (std 0.2, radius 2) in
2-D; flowdiff's MLP 256x3 from the same initial seed; flowdiff's Trainer with AdamW, lr 1e-3 decayed by a cosine,
batch 256, the same minibatches, no clipping, and no EMA unless `--ema DECAY` (then every row samples with the EMA
weights of flowdiff's Trainer, peers included); only the loss differs:

- fd flow (I-CFM):   fd.flow_matching_loss, independent pairs       -> sampled with Euler steps (NFE = steps)
- fd flow (OT):      the same with minibatch OT pairs                -> Euler steps
- fd flow (stable):  the stable_target loss (the conditional target averaged over the batch's posterior),
                     independent pairs                               -> Euler steps
- fd MeanFlow:       flowdiff.learning.flowmaps.MeanFlow() (power 0) -> flow-map jumps (NFE = steps)
- fd shortcut:       flowdiff.learning.flowmaps.Shortcut()           -> flow-map jumps
- torchcfm OT-CFM:   ExactOptimalTransportConditionalFlowMatcher     -> torchdiffeq odeint, Euler
- flow_matching I-CFM / OT-CFM: AffineProbPath(CondOTScheduler()) on independent pairs, or on pairs matched by
                     an exact OT plan of the minibatch (POT ot.emd; flow_matching has no coupling of its own but
                     its path takes any (x_0, x_1))  -> its ODESolver, Euler

and the rows that start from a trained teacher (the teacher is the row named in brackets, trained as that row is;
its ODE (Heun, `--ode-steps` 64) or jumps (64) from `--pairs` noise points are stored, in memory, as in
`flowdiff reflow`):

- fd reflow (T teacher):  flow matching on the teacher's (X_0, X_1) pairs (`StoredPairs`), from the teacher's
                          weights                                                 -> Euler steps
- fd distill (T teacher): `TrajectoryDistillation` of a flow map on the teacher's states at t = i/K (K = `--keep`,
                          8 by default; 1 is `flowdiff distill RUN --steps 1`: the one jump 0 -> 1 only), from
                          the teacher's weights (a flow teacher gets the new interval embedding) -> jumps

A student (reflow or distill) trains with lr 1e-3 and `--batch` like every row unless given its own
`--student-lr` and `--student-batch` (a one-jump student fits its teacher faster per CPU second with lr 3e-3 and
batch 128: docs/few_step.md, benchmarks/distill_vs_teacher.py).

Two budgets. Equal steps (the default): every network trains `--steps` steps (a student's teacher too).
Equal CPU time (`--budget SECONDS`): every row gets the same CPU seconds (`time.process_time`, one torch thread:
on this shared machine, CPU seconds stand for the wall-clock of a quiet one). A probe of `--probe` steps measures
each loss's seconds per step and sets its steps to budget / (seconds per step); a teacher-based row gives
`--teacher-share` (half by default) of the budget to its teacher, charges the teacher's ODE solves, and spends
the rest on its student. The probes are not charged (every row has one). Each row reports the CPU seconds it
really spent.

Quality: exact W2 (POT) and energy distance between n samples and n held-out points, beside the same distances
between two held-out draws (the data-vs-data floor); the within-mode spread (0.2 for the data) and the total
variation of the mode shares, which say whether a W2 is won by sharper or by blurred modes; mean ± sd over seeds.

    .venv/bin/pip install --no-deps -r benchmarks/requirements.txt   # torchcfm, flow_matching (+ tqdm)
    .venv/bin/python benchmarks/few_step_quality.py               # 2 seeds, 3000 steps
    .venv/bin/python benchmarks/few_step_quality.py --budget 20 --pairs 5000 --n 5000 --seeds 2 --out budget.json
    .venv/bin/python benchmarks/few_step_quality.py --budget 60 --calibrate --probe 100 --ema 0.999 --keep 1 \
        --ode-steps 16 --teacher-share 0.8 --pairs 5000 --n 5000 --seeds 6 \
        --methods "fd distill (I-CFM teacher),flow_matching I-CFM,torchcfm OT-CFM"
    .venv/bin/python benchmarks/few_step_quality.py --budget 60 --calibrate --probe 100 --ema 0.999 --keep 1 \
        --ode-steps 16 --teacher-share 0.7 --student-batch 128 --student-lr 3e-3 --pairs 5000 --n 5000 --seeds 6 \
        --methods "fd distill (stable teacher),flow_matching I-CFM,torchcfm OT-CFM"
    .venv/bin/python benchmarks/few_step_quality.py --report a.json b.json   # tables of runs (seeds) merged
    .venv/bin/python benchmarks/few_step_quality.py --quick       # a smoke run: 300 steps, n = 500, one seed
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality_vs_nfe import (  # noqa: E402
    HIDDEN,
    eight_gaussians_mixture,
    flow_matching_loss_meta,
    flowdiff_loss,
    meta_sampler,
    torchcfm_loss,
    torchdiffeq_sampler,
    training_data,
)

import flowdiff as fd  # noqa: E402
from flowdiff.learning.flowmaps import MeanFlow, Shortcut, StoredPairs, TrajectoryDistillation  # noqa: E402
from flowdiff.learning.losses import StableTargetFlowMatching, flow_matching_loss  # noqa: E402
from flowdiff.learning.metrics import energy_distance, wasserstein2  # noqa: E402
from flowdiff.learning.models.mlp import MLP  # noqa: E402

NFES = [1, 2, 4, 8, 100]
METRICS = ("w2", "energy", "spread", "modes")  # see quality()
PATH = fd.GaussianPath("linear")
TEACHER_SHARE = 0.5  # of a teacher-based row's CPU budget, for its teacher
TEACHER_STEPS = 64  # the teacher's ODE (Heun) steps or jumps per trajectory (--ode-steps)
KEEP = 8  # a distilled student learns every pair of the times i / KEEP (so 1, 2, 4 and 8 jumps are sub-grids)


def map_loss(loss):
    return lambda model, x1, generator: loss(model, PATH, x1, generator=generator)


def euler(model, x0, nfe):
    return fd.sample(model, PATH, x0=x0, steps=nfe, solver="euler")


def jumps(model, x0, nfe):
    return fd.sample(model, PATH, x0=x0, steps=nfe)


def flow_matching_ot_loss():
    """Meta flow_matching's path on minibatch-OT pairs: x_0 permuted by the exact plan (POT) of the batch."""
    import ot
    from flow_matching.path import AffineProbPath
    from flow_matching.path.scheduler import CondOTScheduler

    path = AffineProbPath(scheduler=CondOTScheduler())

    def loss(model, x1, generator):
        x0 = torch.randn(x1.shape, generator=generator)
        weights = ot.unif(x1.shape[0])
        plan = ot.emd(weights, weights, torch.cdist(x0, x1).pow(2).double().numpy())
        x0 = x0[torch.from_numpy(plan.argmax(axis=0))]  # a permutation: the noise matched with each x_1
        t = torch.rand(x1.shape[0], generator=generator)
        sample_ = path.sample(x_0=x0, x_1=x1, t=t)
        return (model(sample_.x_t, sample_.t) - sample_.dx_t).pow(2).mean()

    return loss


METHODS = {  # name: (loss factory, flow map?, sampler factory)
    "fd flow (I-CFM)": (lambda: flowdiff_loss("independent"), False, lambda: euler),
    "fd flow (OT)": (lambda: flowdiff_loss("ot"), False, lambda: euler),
    "fd flow (stable)": (lambda: map_loss(StableTargetFlowMatching()), False, lambda: euler),
    "fd MeanFlow": (lambda: map_loss(MeanFlow()), True, lambda: jumps),
    "fd shortcut": (lambda: map_loss(Shortcut()), True, lambda: jumps),
    "torchcfm OT-CFM": (lambda: torchcfm_loss(ot=True), False, lambda: torchdiffeq_sampler("euler")),
    "flow_matching I-CFM": (flow_matching_loss_meta, False, lambda: meta_sampler("euler")),
    "flow_matching OT-CFM": (flow_matching_ot_loss, False, lambda: meta_sampler("euler")),
}
STUDENTS = {  # name: (teacher, how the student learns)
    "fd reflow (OT teacher)": ("fd flow (OT)", "reflow"),
    "fd reflow (I-CFM teacher)": ("fd flow (I-CFM)", "reflow"),
    "fd distill (OT teacher)": ("fd flow (OT)", "distill"),
    "fd distill (I-CFM teacher)": ("fd flow (I-CFM)", "distill"),
    "fd distill (stable teacher)": ("fd flow (stable)", "distill"),
    "fd distill (shortcut teacher)": ("fd shortcut", "distill"),
}
DEFAULT = [*METHODS, "fd reflow (OT teacher)", "fd distill (OT teacher)", "fd distill (shortcut teacher)"]


@dataclass
class Trained:
    """A trained network with what it cost: CPU seconds of training (and of a teacher's ODE) and steps."""

    model: MLP
    cpu_s: float
    steps: int
    parts: dict = field(default_factory=dict)


def train(loss_fn, flow_map: bool, data: torch.Tensor, steps: int, batch: int, seed: int,
          init: MLP | None = None, ema: float | None = None, lr: float = 1e-3) -> Trained:
    """quality_vs_nfe's shared loop, for a network with or without the second time, from `init`'s weights if given
    (every row trains with lr 1e-3; a student may take its own)."""
    torch.manual_seed(seed)
    model = MLP(2, hidden=HIDDEN, flow_map=flow_map)
    if init is not None:
        model.load_state_dict(init.state_dict(), strict=False)  # a flow teacher has no interval embedding
    model.requires_grad_(True)
    torch.manual_seed(seed + 2)
    trainer = fd.Trainer(model, PATH, data, loss=lambda model, path, x1, generator, **_: loss_fn(model, x1, generator),
                         steps=steps, batch_size=batch, lr=lr, warmup=0, grad_clip=None, ema_decay=ema, seed=seed,
                         device="cpu", log_every=steps)
    started = time.process_time()
    trainer.fit()
    weights = trainer.model if trainer.ema is None else trainer.ema.module
    return Trained(weights.eval().requires_grad_(False), time.process_time() - started, steps)


def budget_steps(loss_fn, flow_map: bool, data: torch.Tensor, seconds: float, args, seed: int, init=None,
                 batch: int | None = None) -> int:
    """The steps that `seconds` of CPU buy: a probe of args.probe steps measures this loss's seconds per step."""
    batch = batch or args.batch
    probe = train(loss_fn, flow_map, data[: args.probe * batch], args.probe, batch, seed, init, args.ema)
    return max(1, int(seconds / (probe.cpu_s / args.probe)))


def within_budget(fit, steps: int, seconds: float | None, args) -> Trained:
    """fit(steps); with a budget and --calibrate, fit again (from scratch) with the steps scaled by budget / spent
    while the CPU seconds spent miss the budget by more than 5%, twice at most. Discarded fits are not charged."""
    trained = fit(steps)
    for _ in range(2 if seconds is not None and args.calibrate else 0):
        if abs(trained.cpu_s - seconds) <= 0.05 * seconds:
            break
        steps = max(1, round(steps * seconds / trained.cpu_s))
        trained = fit(steps)
    return trained


def train_method(name: str, seconds: float | None, args, seed: int) -> Trained:
    """A row of METHODS trained for args.steps steps, or for the steps that `seconds` of CPU buy."""
    make_loss, flow_map, _ = METHODS[name]
    steps = args.steps
    if seconds is not None:
        steps = budget_steps(make_loss(), flow_map, training_data(args.probe, args.batch, seed), seconds, args, seed)
    return within_budget(lambda n: train(make_loss(), flow_map, training_data(n, args.batch, seed), n, args.batch, seed,
                                         ema=args.ema), steps, seconds, args)


@torch.no_grad()
def teacher_states(teacher: Trained, flow_map: bool, n: int, keep: int, seed: int,
                   ode_steps: int = TEACHER_STEPS) -> tuple[torch.Tensor, float]:
    """(n, keep + 1, 2) states of the teacher's ODE (Heun, `ode_steps`) or jumps at the times i / keep, and their CPU
    seconds."""
    started = time.process_time()
    x0 = torch.randn(n, 2, generator=torch.Generator().manual_seed(40_000 + seed))
    solver = None if flow_map else "heun"
    trajectory = fd.sample(teacher.model, PATH, x0=x0, steps=ode_steps, solver=solver, return_trajectory=True)
    states = trajectory.states[:: ode_steps // keep].transpose(0, 1).contiguous()
    return states, time.process_time() - started


def student_loss(kind: str, states: torch.Tensor):
    if kind == "reflow":
        pairs = StoredPairs(states[:, 0], states[:, -1])
        return lambda model, x1, generator: flow_matching_loss(model, PATH, x1, coupling=pairs, generator=generator)
    return map_loss(TrajectoryDistillation(states))


def train_student(name: str, seconds: float | None, args, seed: int, teachers: dict) -> Trained:
    """A teacher-based row: its teacher (cached per seed and budget), the teacher's states, then the student."""
    teacher_name, kind = STUDENTS[name]
    key = (teacher_name, None if seconds is None else seconds * args.teacher_share)
    if key not in teachers:
        teachers[key] = train_method(teacher_name, key[1], args, seed)
    teacher = teachers[key]
    states, ode_s = teacher_states(teacher, METHODS[teacher_name][1], args.pairs, 1 if kind == "reflow" else args.keep,
                                   seed, args.ode_steps)
    loss_fn, flow_map, data = student_loss(kind, states), kind == "distill", states[:, -1]
    batch, lr = args.student_batch or args.batch, args.student_lr
    steps, left = args.steps, None
    if seconds is not None:
        left = seconds - teacher.cpu_s - ode_s
        steps = budget_steps(loss_fn, flow_map, data, left, args, seed, teacher.model, batch) if left > 0 else 0
    if steps < 1:
        raise SystemExit(f"{name}: the teacher and its ODE used the whole budget of {seconds} s; raise --budget")
    student = within_budget(lambda n: train(loss_fn, flow_map, data, n, batch, seed, teacher.model, args.ema, lr),
                            steps, left, args)
    parts = {"teacher_s": teacher.cpu_s, "teacher_steps": teacher.steps, "ode_s": ode_s, "student_s": student.cpu_s,
             "student_steps": student.steps}
    return Trained(student.model, teacher.cpu_s + ode_s + student.cpu_s, teacher.steps + student.steps, parts)


def sampler_of(name: str):
    if name in STUDENTS:
        return euler if STUDENTS[name][1] == "reflow" else jumps
    return METHODS[name][2]()


def save(args, results: list[dict]) -> None:
    """Write the results so far (after every row, so that a stopped run keeps what it measured)."""
    if args.out is not None:
        args.out.write_text(json.dumps({"args": vars(args) | {"out": str(args.out)}, "results": results}, indent=1))


def evaluation_points(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A seed's held-out reference points, a second held-out draw (the data-vs-data floor) and the noise that every
    row samples from, n of each."""
    mixture = eight_gaussians_mixture()
    reference = mixture.sample(n, torch.Generator().manual_seed(10_000 + seed)).float()
    spare = mixture.sample(n, torch.Generator().manual_seed(20_000 + seed)).float()
    return reference, spare, torch.randn(n, 2, generator=torch.Generator().manual_seed(30_000 + seed))


def quality(x: torch.Tensor, reference: torch.Tensor) -> dict:
    """W2 and energy distance to the reference; `spread`, the RMS distance per coordinate from each point to its
    nearest mode centre (0.2 for the data: above it the modes are blurred, below it shrunk), and `modes`, the
    total variation between the shares of x and of the reference nearest each centre."""
    centres = eight_gaussians_mixture().means.to(x.dtype)
    nearest = torch.cdist(x, centres).argmin(1)
    shares = [torch.bincount(torch.cdist(p, centres).argmin(1), minlength=8) / len(p) for p in (x, reference)]
    return {"w2": wasserstein2(x, reference, max_samples=None), "energy": energy_distance(x, reference),
            "spread": float((x - centres[nearest]).pow(2).mean().sqrt()),
            "modes": float((shares[0] - shares[1]).abs().sum() / 2)}


def run_seed(seed: int, args, methods: list[str], results: list[dict]) -> None:
    reference, spare, x0 = evaluation_points(args.n, seed)
    out = {"seed": seed, "floor": quality(spare, reference), "rows": {}}
    results.append(out)
    teachers: dict = {}
    for name in methods:
        trained = (train_student(name, args.budget, args, seed, teachers) if name in STUDENTS
                   else train_method(name, args.budget, args, seed))
        sampler = sampler_of(name)
        row = {"cpu_s": trained.cpu_s, "steps": trained.steps, "cpu_ms_per_step": 1e3 * trained.cpu_s / trained.steps,
               **trained.parts}
        for nfe in NFES:
            x = sampler(trained.model, x0, nfe).float()
            row[nfe] = quality(x, reference)
        out["rows"][name] = row
        save(args, results)
        print(f"seed {seed} {name}: {trained.steps} steps, {trained.cpu_s:.1f} CPU s {trained.parts}, W2 "
              + ", ".join(f"{k}: {row[k]['w2']:.3f}" for k in NFES), flush=True)


def cell(values) -> str:
    if any(value is None for value in values):
        return "—"
    values = torch.tensor(values, dtype=torch.float64)
    if len(values) == 1:
        return f"{float(values[0]):.3f}"  # one seed: no spread to show
    return f"{float(values.mean()):.3f} ± {float(values.std()):.3f}"


def table(results: list[dict], metric: str) -> list[str]:
    """A markdown table, mean ± sd over the results' seeds, of one metric; rows in the order first seen."""
    names = list(dict.fromkeys(name for r in results for name in r["rows"]))
    lines = [f"| method ({metric}) | " + " | ".join(f"NFE {k}" for k in NFES) + " | steps | CPU s |",
             "|---" * (len(NFES) + 3) + "|"]
    for name in names:
        rows = [r["rows"][name] for r in results if name in r["rows"]]
        steps = sorted({int(row["steps"]) for row in rows if "steps" in row}) or ["—"]
        lines.append(f"| {name} | " + " | ".join(cell([row[str(k)].get(metric) for row in rows]) for k in NFES)
                     + f" | {'-'.join(map(str, steps[:: max(1, len(steps) - 1)]))} | "
                     + f"{cell([row.get('cpu_s') for row in rows])} |")
    seeds = {r.get("seed", i): (r.get("floor") or {}).get(metric) for i, r in enumerate(results)}
    lines.append(f"| data vs data | {cell(list(seeds.values()))} |" + " |" * (len(NFES) + 1))
    return lines


def target(results: list[dict]) -> str:
    """The issue's target: flowdiff's best 1-step W2 against the peers' best 100-step W2 (rows chosen by their mean
    over the seeds), with the per-seed difference (same reference points and noise in both: a paired difference)."""
    def best(rows: list[str], nfe: str) -> str:
        return min(rows, key=lambda name: sum(r["rows"][name][nfe]["w2"] for r in results) / len(results))

    complete = [name for name in results[0]["rows"] if all(name in r["rows"] for r in results)]
    ours = best([name for name in complete if name.startswith("fd ")], "1")
    peers = [name for name in complete if not name.startswith("fd ")]
    if not peers:
        return f"target: no peer rows; flowdiff's best 1-step row is {ours}"
    theirs = best(peers, "100")
    gaps = [r["rows"][ours]["1"]["w2"] - r["rows"][theirs]["100"]["w2"] for r in results]
    return (f"target: {ours} at NFE 1 minus {theirs} at NFE 100, W2 difference per seed "
            f"{', '.join(f'{g:+.3f}' for g in gaps)}; mean ± sd {cell(gaps)} (<= 0 meets the target)")


def report(files: list[Path]) -> None:
    """Print the tables of one or more JSON files of this script (their seeds and rows merged)."""
    by_seed: dict = {}
    for file in files:
        data = json.loads(file.read_text())
        print(f"{file}: {data['args']}")
        for i, result in enumerate(data["results"]):  # files written before the "seed" key held seeds 0, 1, ...
            seed = result.get("seed", data["args"].get("first_seed", 0) + i)
            merged = by_seed.setdefault(seed, {"seed": seed, "rows": {}})
            merged["rows"].update(result["rows"])
            merged.setdefault("floor", result.get("floor"))
            merged["floor"] = merged["floor"] or result.get("floor")
    results = list(by_seed.values())
    for metric in METRICS:
        print("\n" + "\n".join(table(results, metric)))
    print("\n" + target(results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000, help="training steps of each network (equal steps)")
    parser.add_argument("--budget", type=float, default=None, help="CPU seconds for each row instead of --steps")
    parser.add_argument("--probe", type=int, default=40, help="steps of the probe that measures seconds per step")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--student-batch", type=int, default=None,
                        help="a teacher-based row's student trains with this batch (default: --batch)")
    parser.add_argument("--student-lr", type=float, default=1e-3, help="the peak learning rate of a student")
    parser.add_argument("--keep", type=int, default=KEEP, help="a distilled student's grid: every pair of i / keep")
    parser.add_argument("--teacher-share", type=float, default=TEACHER_SHARE,
                        help="the share of a teacher-based row's --budget that its teacher trains with")
    parser.add_argument("--calibrate", action="store_true",
                        help="with --budget: train a row again with corrected steps while it misses the budget by >5%%")
    parser.add_argument("--ode-steps", type=int, default=TEACHER_STEPS,
                        help="the teacher's ODE (Heun) steps or jumps per trajectory; a multiple of --keep")
    parser.add_argument("--ema", type=float, default=None, help="sample every row with an EMA of this decay")
    parser.add_argument("--n", type=int, default=2000, help="samples and held-out points per W2")
    parser.add_argument("--pairs", type=int, default=10_000, help="teacher trajectories for reflow and distillation")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--methods", default=",".join(DEFAULT), help="comma-separated, from: "
                        + ", ".join([*METHODS, *STUDENTS]))
    parser.add_argument("--quick", action="store_true", help="a smoke run: 300 steps, n = 500, one seed")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--report", type=Path, nargs="+", default=None, help="only print the tables of these JSONs")
    args = parser.parse_args()
    if args.report:
        return report(args.report)
    if min(args.keep, args.ode_steps) < 1 or args.ode_steps % args.keep or not 0 < args.teacher_share < 1:
        raise SystemExit(f"--keep and --ode-steps must be >= 1, --keep divide --ode-steps, and --teacher-share lie in "
                         f"(0, 1); got {args.keep}, {args.ode_steps} and {args.teacher_share}")
    if (args.student_batch is not None and args.student_batch < 1) or args.student_lr <= 0:
        raise SystemExit(f"--student-batch must be >= 1 and --student-lr > 0, got {args.student_batch} and "
                         f"{args.student_lr}")
    if args.ema is not None and not 0 <= args.ema < 1:
        raise SystemExit(f"--ema must lie in [0, 1), got {args.ema}")
    if args.quick:
        args.steps, args.n, args.seeds, args.pairs = 300, 500, 1, 1000
    torch.set_num_threads(1)
    methods = [m.strip() for m in args.methods.split(",")]
    unknown = [m for m in methods if m not in METHODS and m not in STUDENTS]
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; choose from: {', '.join([*METHODS, *STUDENTS])}")
    results = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        run_seed(seed, args, methods, results)
    budget = f"{args.budget} CPU s per row" if args.budget is not None else f"{args.steps} training steps"
    print(f"\n{budget}, batch {args.batch}, MLP {'x'.join(map(str, HIDDEN))}, {args.n} samples, seeds {args.first_seed}"
          f"-{args.first_seed + args.seeds - 1}")
    results = json.loads(json.dumps(results))  # the NFE keys as in the JSON file
    for metric in METRICS:
        print("\n" + "\n".join(table(results, metric)))
    print("\n" + target(results))


if __name__ == "__main__":
    main()
