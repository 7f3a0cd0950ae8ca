"""Discrete runs: build a token trainer from a `TrainConfig` (method "discrete"), load it back, sample, evaluate.

A discrete run directory is an ordinary run directory whose config.json has a "mixture" path and a token
network; its data description holds the vocabulary size (and, for text, the characters).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from flowdiff.data.info import DataInfo
from flowdiff.data.registry import Dataset
from flowdiff.errors import IncompatibleError, InvalidInputError
from flowdiff.learning.training.config import TrainConfig
from flowdiff.learning.training.hooks import Hook
from flowdiff.learning.training.trainer import Trainer
from flowdiff.paths.discrete import MixturePath
from flowdiff.runs.load import LoadedRun

MLP_MAX_LENGTH = 16
"""Sequences up to this length get the token MLP by default, longer ones the token transformer."""


def load_token_data(config: TrainConfig, vocab_size: int | None = None) -> Dataset:
    """The token data the config names, labelled or not as it asks (default: with the file's labels)."""
    from flowdiff.data.tokens import load_tokens

    if config.data is None:
        raise InvalidInputError("the configuration names no data to train on (a token file or markov_tokens)")
    dataset = load_tokens(config.data, n=config.n_data, generator=torch.Generator().manual_seed(config.seed),
                          vocab_size=vocab_size)
    if config.labels and dataset.y is None:
        raise InvalidInputError(f"labels were asked for, but the data {config.data!r} has no labels")
    return dataset if config.labels is not False else dataset.without_labels()


def build_token_network(config: TrainConfig, dataset: Dataset) -> nn.Module:
    """The token network the config names (default: MLP for short sequences, else DiT), seeded by config.seed."""
    from flowdiff.learning.models import TokenDiT, TokenMLP

    length, vocab = dataset.info.shape[0], dataset.info.vocab_size
    name = config.model
    if name == "default":
        name = "token_mlp" if length <= MLP_MAX_LENGTH else "token_dit"
    if name not in ("token_mlp", "token_dit"):
        raise InvalidInputError(f"the {name} model is for vectors or images; token data uses token_mlp or token_dit")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        if name == "token_mlp":
            return TokenMLP(vocab, length, hidden=config.hidden, num_classes=dataset.num_classes)
        return TokenDiT(vocab, length, num_classes=dataset.num_classes)


def build_discrete_trainer(config: TrainConfig, out: str | Path | None = None, resume: bool = False,
                           force: bool = False, hooks: Sequence[Hook] = ()) -> Trainer:
    """Load the tokens, build the token network and mixture path, and return a `Trainer` recorded in `out`."""
    from flowdiff.learning.discrete import DiscreteFlowMatching
    from flowdiff.runs.train import run_hooks

    dataset = load_token_data(config)
    model = build_token_network(config, dataset)
    path = MixturePath(dataset.info.vocab_size, config.source, config.schedule)
    return Trainer(model, path, dataset.x, labels=dataset.y, config=config,
                   loss=DiscreteFlowMatching(config.discrete_loss),
                   hooks=[*run_hooks(out, dataset.info, resume, force), *hooks])


@dataclass
class TokenRun(LoadedRun):
    """A trained discrete run: its token network (EMA weights), mixture path, config and data description."""

    path: MixturePath

    def sample(self, n: int, steps: int = 100, method: str = "euler", **kwargs):
        """`sample_tokens` of this run: TokenSamples (tokens (n, L), nfe)."""
        from flowdiff.learning.discrete import sample_tokens

        return sample_tokens(self.model, self.path, n, steps=steps, method=method, **kwargs)

    def decode(self, tokens: torch.Tensor) -> list[str] | None:
        """The sequences as text for a text run (None otherwise)."""
        from flowdiff.data.tokens import decode

        vocabulary = self.data_info.vocabulary
        return None if vocabulary is None else decode(tokens, vocabulary)


def build_token_run(config: dict, network: nn.Module, run_dir: Path, step: int) -> TokenRun:
    """A `TokenRun` from a loaded network and the config.json that describes it."""
    try:
        spec = {k: v for k, v in dict(config["path"]).items() if k != "name"}
        path = MixturePath(**spec)
    except (TypeError, KeyError, ValueError) as error:
        raise InvalidInputError(f"the discrete path of {run_dir} cannot be rebuilt: {error}") from None
    return TokenRun(model=network, path=path, config=config, data_info=DataInfo.from_dict(config["data"]),
                    directory=run_dir, step=step, network=network)


HELD_OUT_SEED = 1_000_003
"""Added to the eval seed for the held-out draws of a toy law, so that they are not the training draws."""


def _elbo_summary(run: TokenRun, x: torch.Tensor, y: torch.Tensor | None, samples: int,
                  generator: torch.Generator) -> dict:
    """Mean ELBO (nats per sequence), its standard error and bits per token of the sequences `x`."""
    from flowdiff.learning.discrete import elbo

    estimate = elbo(run.model, run.path, x.to(run.device), None if y is None else y.to(run.device),
                    samples=samples, generator=generator)
    return {"elbo_nats": float(estimate.nats.mean()),
            "elbo_standard_error": float(estimate.nats.std() / len(estimate.nats) ** 0.5),
            "bits_per_token": float(estimate.bits_per_token.mean())}


def check_tokens_unchanged(run: TokenRun, config: TrainConfig) -> None:
    """Refuse to evaluate against token data that is no longer what the run was trained on (its checksum)."""
    from flowdiff.learning.training.batches import fingerprint
    from flowdiff.runs.build import data_changed

    stored = run.config.get("resolved", {}).get("data_checksum")
    if stored is None:
        return  # not recorded (a run of the Python API): nothing to compare with
    try:
        data = load_token_data(config)
    except InvalidInputError as error:
        raise data_changed(config.data, run.directory, str(error)) from None
    if fingerprint(data.x, None if data.y is None else data.y.long()) != stored:
        raise data_changed(config.data, run.directory)


def _fresh_draws_elbo(run: TokenRun, law, n: int, seed: int, samples: int, generator: torch.Generator) -> dict:
    """The ELBO summary of `n` fresh draws of a toy's known law (seed HELD_OUT_SEED + seed)."""
    fresh = law.sample(n, torch.Generator().manual_seed(HELD_OUT_SEED + seed))
    return {"data": f"{n} fresh draws of the known law (seed {HELD_OUT_SEED + seed})", "n": n,
            **_elbo_summary(run, fresh, None, samples, generator)}


def load_heldout(run: TokenRun, spec: str | Path, n: int, seed: int) -> Dataset:
    """At most `n` held-out sequences of a token or text file, checked against the run (length, vocabulary,
    labels; text encoded with the run's characters); the subset is drawn with `seed`."""
    from dataclasses import replace

    from flowdiff.data.tokens import load_heldout_tokens

    info = replace(run.data_info, vocab_size=run.path.vocab_size)
    return load_heldout_tokens(spec, info, n=n, generator=torch.Generator().manual_seed(seed))


def evaluate_token_run(run: TokenRun, steps: Sequence[int] = (4, 16, 64), n: int = 2000, seed: int = 0,
                       elbo_samples: int = 16, heldout: str | Path | None = None) -> dict:
    """ELBO (nats per sequence, bits per token) of `n` training sequences ("elbo_data" says so) and of `n`
    held-out ones ("held_out"): those of the file `heldout` (a token or text file like the training data), or,
    without it, for a toy set whose law is known, fresh draws of the law; where the law is known also the total
    variation between samples and the law at each number of Euler steps (and first hitting)."""
    from flowdiff.data.tokens import token_law

    held = None if heldout is None else load_heldout(run, heldout, n, seed)
    training = run.config.get("training", {})
    config = TrainConfig.from_dict(training, source=f"{run.directory}/config.json")
    check_tokens_unchanged(run, config)
    data = load_token_data(config.updated(n_data=n), vocab_size=run.path.vocab_size)
    if tuple(data.x.shape[1:]) != tuple(run.data_info.shape):
        raise IncompatibleError(f"the data {config.data} has sequences of length {data.x.shape[1]}, the run "
                                f"{run.data_info.shape[0]}")
    generator = torch.Generator(device=run.device).manual_seed(seed)
    result = {"n": n, "elbo_data": "training sequences", "training_sequences": len(data.x),
              **_elbo_summary(run, data.x, data.y, elbo_samples, generator)}
    rows, law = [], token_law(str(config.data))
    if held is not None:
        result["held_out"] = {"data": f"{len(held.x)} held-out sequences of {heldout}",
                              "file": str(Path(heldout).resolve()), "n": len(held.x),
                              **_elbo_summary(run, held.x, held.y, elbo_samples, generator)}
    elif law is not None:
        result["held_out"] = _fresh_draws_elbo(run, law, n, seed, elbo_samples, generator)
    methods = [("euler", s) for s in steps] + ([("first_hitting", 0)] if run.path.mask_token is not None else [])
    for method, count in methods:
        drawn = run.sample(n, steps=max(count, 1), method=method, generator=generator)
        row = {"method": method, "steps": count if method == "euler" else None, "nfe": drawn.nfe}
        if law is not None:
            row["total_variation"] = law.total_variation(drawn.tokens.cpu())
        rows.append(row)
    result["rows"] = rows
    if law is not None:
        positive = law.weights[law.weights > 0]
        result["entropy_nats"] = float(-(positive * positive.log()).sum())
    return result
