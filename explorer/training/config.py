"""The typed configuration of a training run, its progress events and its result (torch-free).

``TrainConfig.learner`` is the method's own typed config (see :mod:`explorer.methods`); a dict with
a ``kind`` (as stored in checkpoint metadata) is converted on construction. Every default lives in
these dataclasses; the CLI flags and the app's Train form are built from them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable

from explorer.core.errors import ExplorerError
from explorer.core.options import option
from explorer.data.inputs import DEFAULT_MARGIN

OPTIMIZERS = ("adamw", "radam", "sgd")
MODES = ("frozen", "finetune")
SELECT_METRICS = ("mae_exp", "mae_max", "mae_value")


@dataclass
class TrainConfig:
    """Everything a training run needs; stored in the checkpoint's ``training`` metadata."""

    dataset: str
    out: str
    backbone: str = "demo"
    learner: Any = field(default_factory=dict)  # a config, or a stored dict (no kind: the default method)
    shots: int | None = option(None, flag="--shots", help="few-shot: k training images per label")
    label_shift: list[float] | None = option(None, flag="--label-shift", nargs=2, metavar=("C", "S"),
                                             help="label-distribution shift: the C most frequent labels keep max(int(n*S), 1) images")
    epochs: int = option(20, flag="--epochs", help="training epochs")
    batch_size: int = option(32, flag="--batch-size", help="images per step")
    lr: float = option(2e-3, flag="--lr", help="learning rate of the learner")
    optimizer: str = option("adamw", flag="--optimizer", choices=OPTIMIZERS, help="optimizer")
    weight_decay: float = option(5e-4, flag="--weight-decay", help="weight decay")
    warmup_epochs: float = option(1.0, flag="--warmup-epochs", help="linear warm-up before the cosine schedule")
    kl_weight: float = option(1.0, flag="--kl-weight", help="weight of the text-to-image KL term (0 = CE only)")
    distance_weighted: bool = option(False, flag="--distance-weighted", help="NumCLIP distance-weighted cross-entropy")
    faces: bool = option(False, flag="--faces",
                         help="crop each image to its largest face exactly as Predict does (images without one are used whole)")
    face_margin: float = option(DEFAULT_MARGIN, flag="--face-margin", help="with --faces: space around the face, a fraction of its size")
    mode: str = option("frozen", flag="--mode", choices=MODES, help="frozen image encoder on cached features, or fine-tune it")
    image_lr: float = option(1e-5, flag="--image-lr", help="image encoder learning rate in finetune mode")
    select_metric: str | None = None  # None: the method's own (mae_exp; NumCLIP: mae_value)
    seed: int = option(0, flag="--seed", help="seed of splits, sampling and initialisation")
    val_fraction: float = option(0.1, flag="--val-fraction", help="validation share when the dataset has no split")
    test_fraction: float = option(0.2, flag="--test-fraction", help="test share when the dataset has no split")
    skip_bad: bool = False
    device: str | None = None
    precision: str = "auto"  # the image tower's: auto, fp32 or bf16 (explorer.backbones.precision); text stays fp32
    cache_dir: str | None = None
    amp: bool = True
    name: str | None = None
    dataset_options: dict[str, Any] | None = None  # open_dataset options, e.g. {"num_ranks": 101, "unit": "years"}
    preset: str | None = None  # the paper preset (explorer.training.recipes) the defaults came from, for the record

    def __post_init__(self) -> None:
        self.learner = learner_config(self.learner)

    @property
    def selection_metric(self) -> str:
        """The validation metric that picks the best epoch."""
        from explorer.methods import get_method

        return self.select_metric or get_method(self.method).select_metric

    @property
    def method(self) -> str:
        """The method's registered name (stored as ``learner.kind``)."""
        return self.learner.method

    def validate(self) -> None:
        """One clear sentence for impossible settings."""
        from explorer.methods import get_method

        method = get_method(self.method)
        if self.optimizer not in OPTIMIZERS:
            raise ExplorerError(f"Unknown optimizer '{self.optimizer}'; choose one of {', '.join(OPTIMIZERS)}.")
        if self.mode not in MODES:
            raise ExplorerError(f"Unknown mode '{self.mode}'; choose frozen or finetune.")
        if self.epochs < 0 or self.batch_size < 1 or not self.lr > 0:
            raise ExplorerError("epochs must be >= 0, batch size >= 1 and the learning rate > 0.")
        if self.shots is not None and self.shots < 1:
            raise ExplorerError(f"shots must be at least 1 (got {self.shots}).")
        if self.select_metric is not None and self.select_metric not in SELECT_METRICS:
            raise ExplorerError(f"Unknown selection metric '{self.select_metric}'; choose one of {', '.join(SELECT_METRICS)}.")
        if self.face_margin < 0:
            raise ExplorerError(f"The face margin must be 0 or more (got {self.face_margin}).")
        if self.mode == "finetune" and not method.supports_finetune:
            raise ExplorerError(f"The {method.title} trains on frozen features only; use --mode frozen.")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the learner as a dict with its ``kind``)."""
        out = {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self) if f.name != "learner"}
        return {**out, "learner": self.learner.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """Inverse of to_dict (keys of other versions are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def config_from_preset(preset: str | None, dataset: str, out: str, method: str, training: dict[str, Any],
                       learner: dict[str, Any], **fixed: Any) -> TrainConfig:
    """A TrainConfig: dataclass defaults, then the paper preset's (if any), then ``training`` / ``learner``
    settings (what the user set), which always win."""
    from explorer.methods import get_method, make_config
    from explorer.training.recipes import learner_defaults, recipe

    fields = set(get_method(method).config_class.__dataclass_fields__)
    base_train, base_learner, options = {}, {}, None
    if preset:
        r = recipe(preset)
        base_train, options = dict(r.training), dict(r.dataset_options)
        base_learner = learner_defaults(preset, method, fields)
        if not get_method(method).supports_finetune:
            base_train["mode"] = "frozen"
    return TrainConfig(dataset=dataset, out=out, learner=make_config(method, **{**base_learner, **learner}),
                       dataset_options=options, preset=preset, **{**base_train, **training, **fixed})


def learner_config(value: Any):
    """A method's typed config from a config object or a stored dict with ``kind`` (a copy; never the
    caller's; see :func:`explorer.methods.stored_config`)."""
    from explorer.methods import stored_config

    if isinstance(value, dict):
        return stored_config(value)
    if not hasattr(value, "kind"):
        raise ExplorerError(f"A learner config needs a 'kind' (got {type(value).__name__}).")
    return copy.deepcopy(value)


@dataclass
class Progress:
    """One progress event; the CLI draws a bar from it, the app a live chart."""

    stage: str  # "load", "download" (bytes of a backbone file), "embed", "train", "epoch", "test", "done"
    done: int = 0
    total: int = 0
    epoch: int = 0
    epochs: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    message: str = ""

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0


def download_progress(emit: Callable[[Progress], None], spec: str) -> Callable[[int, "int | None", str], None]:
    """A ``load_backbone(progress=...)`` callback that emits ``Progress("download", bytes done, bytes
    total (0: unknown), message="Downloading SPEC")`` for each chunk of each hub file."""

    def on_chunk(done: int, total: int | None, filename: str) -> None:
        emit(Progress("download", int(done), int(total or 0), message=f"Downloading {spec}"))

    return on_chunk


@dataclass
class RateEstimate:
    """Time left for a counted stage (embedding thousands of images): linear in the rate so far."""

    started: float | None = None
    start_done: int = 0
    last: tuple[int, int] = (0, 0)  # (done, total) of the previous update

    def update(self, done: int, total: int, now: float) -> float | None:
        """Seconds left after ``done`` of ``total`` at time ``now`` (None until there is a rate); a count
        that goes back or another total starts a new estimate."""
        new_stage = self.started is None or done < self.last[0] or total != self.last[1]
        self.last = (done, total)
        if new_stage:
            self.started, self.start_done = now, done
            return None
        rate = (done - self.start_done) / max(now - self.started, 1e-9)
        return None if rate <= 0 else (total - done) / rate


def format_seconds(seconds: float | None) -> str:
    """``"1 h 05 min"``, ``"3 min 20 s"``, ``"12 s"`` (``"…"`` while unknown)."""
    if seconds is None:
        return "…"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


@dataclass
class TrainResult:
    """What a run produced."""

    checkpoint: Path
    history_path: Path
    history: list[dict[str, Any]]
    val_metrics: dict[str, float]
    test_metrics: dict[str, float] | None
    best_epoch: int
    seconds: float
    cancelled: bool = False


class Cancelled(Exception):
    """The run was cancelled (not an error); the best checkpoint so far is kept."""


@dataclass
class SweepRun:
    """One run of a sweep: its label (learner[:interpolation]), shots, seed and config."""

    label: str
    shots: int | None
    seed: int
    config: TrainConfig


def sweep_grid(base: TrainConfig, learners: list[tuple[str, Any]], shots: list[int | None], seeds: list[int],
               out_dir: str | Path) -> list[SweepRun]:
    """Every (learner, shots, seed) combination of ``base``; checkpoints go to ``out_dir``."""
    runs = []
    for label, learner in learners:
        for shot in shots:
            for seed in seeds:
                out = Path(out_dir) / f"{label.replace(':', '-')}-shots{shot or 'all'}-seed{seed}.safetensors"
                runs.append(SweepRun(label, shot, seed, replace(base, learner=learner, shots=shot, seed=seed, out=str(out))))
    return runs


def parse_learner_list(text: str, base_settings: dict[str, Any] | None = None) -> list[tuple[str, Any]]:
    """``"zeroshot,coop,ordinalclip:linear"`` -> [(label, learner config)] (old names too);
    ``method:interpolation`` picks OrdinalCLIP's scheme. ``base_settings`` (flag values) apply where the
    method has them."""
    from explorer.methods import get_method, make_config

    out = []
    for spec in (s.strip() for s in text.split(",") if s.strip()):
        name, _, interp = spec.partition(":")
        method = get_method(name)
        names = set(method.config_class.__dataclass_fields__)
        settings = {k: v for k, v in (base_settings or {}).items() if k in names and k != "kind"}
        if interp:
            settings["interpolation"] = interp
        out.append((spec, make_config(method.name, **settings)))
    return out
