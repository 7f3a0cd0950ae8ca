"""What `flowdiff sample` and `flowdiff eval` do for a discrete (token) run: write tokens (and text), the ELBO."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flowdiff.atomic import save_npz, write_json, write_text
from flowdiff.cli.options import refuse_overwrite
from flowdiff.errors import InvalidInputError


def sample_token_run(run, n: int, steps: int, method: str, y, guidance: float, seed: int, out: Path | None,
                     force: bool, categorical_dtype: str = "float64") -> None:
    """Sample a token run; write RUN/samples.npz ("tokens", "y", "nfe") and, for text runs, samples.txt."""
    import torch

    out = Path(out) if out is not None else Path(run.directory) / "samples.npz"
    if out.suffix != ".npz":
        raise InvalidInputError(f"samples are written to an .npz file, got {out}")
    text_file = out.with_suffix(".txt") if run.data_info.vocabulary is not None else None
    refuse_overwrite([out] + ([text_file] if text_file else []), force)
    drawn = run.sample(n if y is None else len(y), steps=steps, method=method, y=y,
                       guidance=None if guidance == 1.0 else guidance, categorical_dtype=categorical_dtype,
                       generator=torch.Generator(device=run.device).manual_seed(seed))
    tokens = drawn.tokens.cpu().numpy()
    arrays = {"tokens": tokens, "nfe": np.array(drawn.nfe)} | ({} if y is None else {"y": y.cpu().numpy()})
    save_npz(out, **arrays)
    written = [out]
    if text_file is not None:
        lines = [line.replace("\n", "\u2424") for line in run.decode(drawn.tokens)]  # a newline drawn as ␤
        write_text(text_file, "\n".join(lines) + "\n")
        written.append(text_file)
    print(f"sampled {len(tokens)} sequences of {tokens.shape[1]} tokens with the {method} CTMC sampler "
          f"(NFE {drawn.nfe}); wrote {' and '.join(map(str, written))}")


def eval_token_run(run, steps: list[int], n: int, seed: int, out_dir: Path, force: bool,
                   heldout: Path | None = None) -> None:
    """ELBO and bits per token of training and held-out sequences (a file, or a toy law's fresh draws); TV to the
    law of a toy set; writes eval.json."""
    from flowdiff.runs.discrete import evaluate_token_run

    file = Path(out_dir) / "eval.json"
    refuse_overwrite([file], force)
    result = evaluate_token_run(run, steps=steps, n=n, seed=seed, heldout=heldout)
    write_json(file, result)
    print_elbo_table(result)
    if "entropy_nats" in result:
        print(f"the data's law is known: log-likelihood (minus its entropy) {-result['entropy_nats']:.4f} nats")
    for row in result["rows"]:
        distance = f", total variation to the law {row['total_variation']:.4f}" if "total_variation" in row else ""
        print(f"{row['method']:>13} NFE {row['nfe']:>4}{distance}")
    print(f"wrote {file}")


def print_elbo_table(result: dict) -> None:
    """The ELBO of the training sequences and, below it, of the held-out ones, as a table on stdout."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="ELBO (a lower bound of log p) per sequence")
    for column in ("data", "sequences", "ELBO nats", "± s.e.", "bits per token"):
        table.add_column(column, justify="left" if column == "data" else "right", no_wrap=column != "data")
    rows = [("training", result.get("training_sequences", result["n"]), result)]
    if "held_out" in result:
        held = result["held_out"]
        where = Path(held["file"]).name if "file" in held else "fresh draws of the law"
        rows.append((f"held-out: {where}", held.get("n", result["n"]), held))
    for name, count, estimate in rows:
        table.add_row(name, str(count), f"{estimate['elbo_nats']:.4f}", f"{estimate['elbo_standard_error']:.4f}",
                      f"{estimate['bits_per_token']:.4f}")
    printer = Console()
    if not printer.is_terminal:  # piped or captured: do not squeeze the table into 80 columns
        printer = Console(width=120)
    printer.print(table)
