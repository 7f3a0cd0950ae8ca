"""`TrainConfig`: every training setting, its default and its check, in one place.

The Python API (`Trainer(..., steps=...)`, `TrainConfig(...)`), TOML files and the command line
all build this one dataclass; a run directory records it as JSON and a resumed run rebuilds it
from there. The first group of fields says what to build (data, network, path) and is read by
the edges that build them; the rest drive the training loop.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

from flowdiff.errors import InvalidInputError

LR_SCHEDULES = ("cosine", "constant")
"""Learning-rate schedules after the warm-up."""

PRECISIONS = ("fp32", "bf16", "fp16")
"""Arithmetic of the forward and backward pass: float32, or autocast to bfloat16 / float16 (with a gradient
scaler); the weights, the EMA and the optimizer state stay float32."""

OT_SCOPES = ("global", "local")
"""Where distributed training solves a batch coupling (minibatch OT): on the global batch or per rank."""

NOT_RESULT_FIELDS = ("checkpoint_every", "log_every", "device")
"""Settings that do not change the trained weights: a resumed run may change them."""

MAX_STEPS = 10**9
"""The most optimisation steps a run may ask for: months of training at any speed this code reaches, so a
larger number is a typo (a run that would never end), refused before anything starts."""


@dataclass(frozen=True)
class TrainConfig:
    """The settings of a training run (defaults here and nowhere else); checked on construction."""

    # what to build (read by the edges: data sets, networks, paths)
    data: str | None = None
    model: str = "default"
    hidden: tuple[int, ...] = (256, 256, 256)
    schedule: str = "linear"
    labels: bool | None = None
    label_column: str | None = None
    standardize: bool | None = None
    n_data: int | None = None
    image_size: int | None = None
    latent: str | None = None  # an autoencoder run whose codes the flow is trained on (images only)
    stream: bool = False
    workers: int = 0
    flip: bool = False
    # the objective
    method: str = "flow"
    source: str = "mask"
    discrete_loss: str = "cross_entropy"
    loss: str = "flow_matching"
    coupling: str = "independent"
    time_law: str = "uniform"
    velocity: str = "conditional"  # a flow-map method's velocity target: conditional or stable (batch posterior)
    label_dropout: float = 0.1
    ot_scope: str = "global"
    # the optimisation
    steps: int = 5000
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup: int = 100
    lr_schedule: str = "cosine"
    grad_clip: float | None = 1.0
    ema_decay: float | None = 0.999
    seed: int = 0
    precision: str = "fp32"
    # bookkeeping
    checkpoint_every: int = 1000
    log_every: int = 50
    device: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", _widths(self.hidden))
        for name, low in (("steps", 1), ("batch_size", 1), ("warmup", 0), ("checkpoint_every", 1),
                          ("log_every", 1), ("seed", 0)):
            _integer(name, getattr(self, name), low)
        if self.steps > MAX_STEPS:
            raise InvalidInputError(f"steps={self.steps} would never finish; at most {MAX_STEPS:.0e} steps are "
                                    "accepted")
        _integer("workers", self.workers, 0)
        if self.flip and not self.stream:
            raise InvalidInputError("flip (random horizontal flips) is done by the streaming pipeline; set stream = "
                                    "true with it")
        for name in ("n_data", "image_size"):
            if getattr(self, name) is not None:
                _integer(name, getattr(self, name), 1)
        _positive("lr", self.lr)
        if self.latent is not None and not (isinstance(self.latent, str) and self.latent):
            raise InvalidInputError(f"latent must be the directory of an autoencoder run, got {self.latent!r}")
        if not (isinstance(self.weight_decay, int | float) and math.isfinite(self.weight_decay)
                and self.weight_decay >= 0):
            raise InvalidInputError(f"weight_decay must be a finite number >= 0, got {self.weight_decay!r}")
        if self.grad_clip is not None:
            _positive("grad_clip", self.grad_clip, "(or None for no clipping)")
        if self.ema_decay is not None and not (isinstance(self.ema_decay, int | float)
                                               and 0.0 <= self.ema_decay < 1.0):
            raise InvalidInputError(f"ema_decay must lie in [0, 1) (or None for no EMA), got {self.ema_decay!r}")
        if not (isinstance(self.label_dropout, int | float) and 0.0 <= self.label_dropout < 1.0):
            raise InvalidInputError(f"label_dropout must lie in [0, 1), got {self.label_dropout!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise InvalidInputError(f"unknown lr_schedule {self.lr_schedule!r}; choose one of: "
                                    f"{', '.join(LR_SCHEDULES)}")
        if self.precision not in PRECISIONS:
            raise InvalidInputError(f"unknown precision {self.precision!r}; choose one of: {', '.join(PRECISIONS)}")
        if self.ot_scope not in OT_SCOPES:
            raise InvalidInputError(f"unknown ot_scope {self.ot_scope!r}; choose one of: {', '.join(OT_SCOPES)}")
        self._check_names()
        self._resolve_method()
        self._check_stable_target()

    def _resolve_method(self) -> None:
        """A method that names its own loss (meanflow, shortcut) sets `loss`; another loss given with it is refused."""
        from flowdiff.learning.losses import METHODS

        own = METHODS[self.method]
        if own is not None and self.loss != own:
            if self.loss != TrainConfig.loss:
                raise InvalidInputError(f"the method {self.method!r} trains with its own loss ({own!r}), not "
                                        f"{self.loss!r}; leave the loss at its default")
            object.__setattr__(self, "loss", own)

    @property
    def flow_map(self) -> bool:
        """Whether the loss trains a flow map u(x, r, t) (meanflow, imeanflow, shortcut): a network with two times."""
        from flowdiff.learning.losses import LOSSES

        return getattr(LOSSES[self.loss], "flow_map", False)

    def _check_stable_target(self) -> None:
        """The batch-posterior target (loss stable_target, or a flow map's stable velocity) needs independent pairs;
        the stable velocity is for flow maps (a flow takes loss stable_target)."""
        from flowdiff.learning.flowmaps.common import check_velocity
        from flowdiff.learning.losses import LOSSES, METHODS

        check_velocity(self.velocity, "flow-map")
        stable_velocity = self.velocity == "stable"
        if stable_velocity and not self.flow_map:
            methods = [name for name, loss in METHODS.items() if loss and getattr(LOSSES[loss], "flow_map", False)]
            raise InvalidInputError(f"velocity={self.velocity!r} is for the flow-map methods ({', '.join(methods)}); "
                                    "a flow model takes loss='stable_target'")
        user = "the stable_target loss" if self.loss == "stable_target" else "velocity='stable'"
        if (stable_velocity or self.loss == "stable_target") and self.coupling != "independent":
            raise InvalidInputError(f"{user} needs independent pairs, not the coupling {self.coupling!r} (its "
                                    "posterior assumes x_t ~ N(alpha_t z, beta_t^2 I) given z)")

    def loss_options(self) -> dict:
        """The keyword arguments of the loss object beside its name: the time law, and a flow map's velocity."""
        return {"time_law": self.time_law, **({"velocity": self.velocity} if self.flow_map else {})}

    def _check_names(self) -> None:
        """Names that a registry resolves: checked here so that a bad one fails before any work."""
        from flowdiff.learning.losses import LOSSES, METHODS, TIME_LAWS
        from flowdiff.learning.models import MODELS
        from flowdiff.paths.couplings import COUPLINGS
        from flowdiff.paths.schedules import SCHEDULES
        from flowdiff.registry import lookup

        lookup(METHODS, self.method, "method")
        lookup(LOSSES, self.loss, "loss")
        lookup(COUPLINGS, self.coupling, "coupling")
        lookup(TIME_LAWS, self.time_law, "time law")
        lookup(SCHEDULES, self.schedule, "schedule")
        if self.model != "default":
            lookup(MODELS, self.model, "model")
        if self.method == "discrete":  # the mixture path: its source, kappa schedule (`schedule`) and loss
            from flowdiff.learning.discrete.loss import DISCRETE_LOSSES
            from flowdiff.paths.discrete import KAPPAS, SOURCES

            lookup({s: s for s in SOURCES}, self.source, "token source")
            lookup(KAPPAS, self.schedule, "kappa schedule of the discrete path")
            lookup(DISCRETE_LOSSES, self.discrete_loss, "discrete loss")
            gaussian = {"coupling": "independent", "time_law": "uniform", "loss": "flow_matching"}
            changed = [f"{k}={getattr(self, k)!r}" for k, v in gaussian.items() if getattr(self, k) != v]
            if changed:
                raise InvalidInputError(f"{', '.join(changed)} apply to Gaussian paths, not to the discrete method "
                                        "(its loss is chosen by discrete_loss)")

    def to_dict(self) -> dict:
        """A JSON-ready dictionary of every field."""
        out = asdict(self)
        out["hidden"] = list(self.hidden)
        return out

    @classmethod
    def from_dict(cls, values: dict, source: str = "the configuration") -> TrainConfig:
        """Build from a dictionary (a TOML file, a stored run); unknown keys are an error naming them."""
        if not isinstance(values, dict):
            raise InvalidInputError(f"{source} must be a table of settings, got {type(values).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InvalidInputError(f"{source} has unknown settings {unknown}; known: {', '.join(sorted(known))}")
        try:
            return cls(**values)
        except TypeError as error:
            raise InvalidInputError(f"{source}: {error}") from None

    def updated(self, **changes) -> TrainConfig:
        """A copy with some fields changed (checked again); an unknown name is an error naming it."""
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            raise InvalidInputError(f"unknown training settings {unknown}; known: "
                                    f"{', '.join(f.name for f in fields(self))}")
        if changes.get("method", self.method) != self.method and "loss" not in changes:
            changes["loss"] = TrainConfig.loss  # another method brings its own loss (or the default one)
        return replace(self, **changes)

    def result_fields(self) -> dict:
        """The fields that change the trained weights (what a resumed run must keep)."""
        return {k: v for k, v in self.to_dict().items() if k not in NOT_RESULT_FIELDS}


def read_toml(path) -> dict:
    """The settings of a TOML file of `name = value` lines, as a dictionary (checked by `from_dict`)."""
    from pathlib import Path

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    path = Path(path)
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise InvalidInputError(f"{path} is not valid TOML: {error}") from None
    except UnicodeDecodeError:
        raise InvalidInputError(f"{path} is not a UTF-8 text file") from None
    TrainConfig.from_dict(values, source=str(path))  # unknown names and bad values fail here, naming the file
    return values


def load_toml(path) -> TrainConfig:
    """A `TrainConfig` from a TOML file of `name = value` settings."""
    return TrainConfig.from_dict(read_toml(path), source=str(path))


def _integer(name: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InvalidInputError(f"{name} must be an integer >= {low}, got {value!r}")


def _positive(name: str, value, note: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not (math.isfinite(value) and value > 0):
        raise InvalidInputError(f"{name} must be a finite number > 0{' ' + note if note else ''}, got {value!r}")


def _widths(hidden) -> tuple[int, ...]:
    """Layer widths from a tuple/list or a text "256,256,256"."""
    if isinstance(hidden, str):
        from flowdiff.registry import parse_list

        hidden = parse_list(hidden, int, "hidden")
    try:
        widths = tuple(hidden)
    except TypeError:
        widths = ()
    if not widths or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
        raise InvalidInputError(f"hidden must be positive layer widths like 256,256,256, got {hidden!r}")
    return widths
