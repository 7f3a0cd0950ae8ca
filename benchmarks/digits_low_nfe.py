"""Digits quality at low NFE for several solvers and time grids, against a 100-NFE reference (issue 12; not run in CI).

Takes a labelled digits run made by `flowdiff train --data digits` and measures, with the
scorer of `flowdiff eval` (a small CNN classifier trained once and cached in RUN/classifier):

- feature Fréchet distance between the classifier's penultimate features of the generated images
  and of n reference images (the training images: not held out);
- conditional accuracy at guidance 1: the fraction of images generated for label y that the
  classifier calls y.

Every setting samples from the same noise with the reference's labels. The uniform and EDM (rho)
grids go through `flowdiff.runs.evaluation.evaluate_run` for all solvers and budgets. Learned grids
are fitted first for the (solver, NFE) pairs given by --learned, with fewer noise draws and Adam
iterations than `flowdiff eval` uses (--grid-n, --grid-iterations; the library's defaults are 256 and
150), stored in RUN/grids.json, and then evaluated the same way. A learned grid is fitted to the
field without a label (y = None: the null label of classifier-free guidance) and through a fixed-step
solver, so the multistep solvers (dpmpp_2m, unipc) have no learned grid.

    OMP_NUM_THREADS=1 flowdiff train --data digits --steps 800 --batch 128 --threads 1 --out /tmp/digits
    python benchmarks/digits_low_nfe.py /tmp/digits --out docs/img/digits_low_nfe.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="run directory of flowdiff train --data digits")
    parser.add_argument("--solvers", default="euler,heun,dpmpp_2m,unipc")
    parser.add_argument("--grids", default="uniform,rho", help="grids evaluated for every solver and budget")
    parser.add_argument("--nfe", default="4,6,8,10,16")
    parser.add_argument("--learned", default="euler:8,heun:8",
                        help="comma-separated solver:NFE pairs whose learned grid is fitted and evaluated "
                             "('' for none)")
    parser.add_argument("--grid-n", type=int, default=64, help="noise draws of a learned grid's fit")
    parser.add_argument("--grid-iterations", type=int, default=40, help="Adam iterations of a learned grid's fit")
    parser.add_argument("--reference", default="heun:100", help="solver:NFE of the reference setting")
    parser.add_argument("--n", type=int, default=898, help="samples per setting (and reference images)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--parts", default="reference,grids,learned", help="which parts to run")
    parser.add_argument("--out", default="digits_low_nfe.json")
    return parser.parse_args(argv)


def rows_of(result: dict) -> list[dict]:
    return [{"solver": r["solver"], "grid": r["grid"], "steps": r["steps"], "nfe": r["nfe"],
             "feature_fd": round(r["metrics"]["feature_fd"], 4), "accuracy": round(r["metrics"]["accuracy"], 4),
             "seconds": round(r["seconds"], 1)} for r in result["rows"]]


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from flowdiff.dynamics.solvers import get_solver
    from flowdiff.learning.sampling.learned_grid import learn_grid
    from flowdiff.runs.evaluation import evaluate_run
    from flowdiff.runs.learned_grids import find_grid, store_grid
    from flowdiff.runs.load import load

    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    results.update({"run": str(args.run), "n": args.n, "seed": args.seed, "threads": args.threads,
                    "torch": torch.__version__})
    parts = args.parts.split(",")
    nfes = [int(k) for k in args.nfe.split(",")]
    common = dict(n=args.n, seed=args.seed, nll=False, metrics=("w2",))

    def save():
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1) + "\n")

    if "reference" in parts:
        solver, nfe = args.reference.split(":")
        result = evaluate_run(args.run, solvers=[solver], nfes=[int(nfe)], grid="uniform", **common)
        results.update({"step": result["step"], "reference_images": result["reference"],
                        "baseline": {k: round(v, 4) for k, v in result["baseline"].items()},
                        "reference": rows_of(result)[0]})
        print("baseline", results["baseline"], "reference", results["reference"], flush=True)
        save()
    if "grids" in parts:
        result = evaluate_run(args.run, solvers=args.solvers.split(","), nfes=nfes, grid=args.grids.split(","),
                              **common)
        results["rows"] = [r for r in results.get("rows", []) if r["grid"] == "learned"] + rows_of(result)
        for row in rows_of(result):
            print(row, flush=True)
        save()
    if "learned" in parts and args.learned:
        run = load(args.run)
        fits = []
        for pair in args.learned.split(","):
            solver, nfe = pair.split(":")
            steps = int(nfe) // get_solver(solver).stages
            if find_grid(args.run, solver, steps) is None:
                started = time.perf_counter()
                grid = learn_grid(run.model, solver, steps, n=args.grid_n, iterations=args.grid_iterations,
                                  generator=torch.Generator().manual_seed(args.seed))
                store_grid(args.run, grid)
                fits.append({"solver": solver, "steps": steps, "times": [round(t, 4) for t in grid.times],
                             "loss": grid.loss, "uniform_loss": grid.uniform_loss, "n": args.grid_n,
                             "iterations": args.grid_iterations,
                             "seconds": round(time.perf_counter() - started, 1)})
                print("fitted", fits[-1], flush=True)
            result = evaluate_run(args.run, solvers=[solver], nfes=[int(nfe)], grid="learned", **common)
            kept = [r for r in results.get("rows", []) if not (r["grid"] == "learned" and r["solver"] == solver
                                                               and r["nfe"] == int(nfe))]
            results["rows"] = kept + rows_of(result)
            print(rows_of(result), flush=True)
            if fits and (fits[-1]["solver"], fits[-1]["steps"]) == (solver, steps):
                results["learned_fits"] = [f for f in results.get("learned_fits", [])
                                           if (f["solver"], f["steps"]) != (solver, steps)] + fits[-1:]
            save()
    save()
    return results


if __name__ == "__main__":
    main()
