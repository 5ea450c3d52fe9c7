"""The typed configuration of a training run, its progress events and its result (torch-free).

``TrainConfig.method_config`` is the method's own typed config (see :mod:`explorer.methods`); a dict
(as stored in checkpoint metadata, the method's name under ``kind``) is converted on construction. The
stored form keeps the keys of checkpoint format 1: the method config under ``learner``, the paper
recipe under ``preset``. Every default lives in
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
STORED_KEYS = {"recipe": "preset"}  # field -> the key a stored run config (checkpoint format 1) has for it
SELECT_METRICS = ("mae_exp", "mae_max", "mae_value")


@dataclass
class TrainConfig:
    """Everything a training run needs; stored in the checkpoint's ``training`` metadata."""

    dataset: str
    out: str
    backbone: str = "demo"
    method_config: Any = field(default_factory=dict)  # a method's config, or a stored dict (no name: the default method)
    shots: int | None = option(None, flag="--shots", help="few-shot: k training images per label")
    label_shift: list[float] | None = option(None, flag="--label-shift", nargs=2, metavar=("C", "S"),
                                             help="label-distribution shift: the C most frequent labels keep max(int(n*S), 1) images")
    epochs: int = option(20, flag="--epochs", help="training epochs")
    batch_size: int = option(32, flag="--batch-size", help="images per step")
    lr: float = option(2e-3, flag="--lr", help="learning rate of the method's parameters")
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
    precision: str = "auto"  # auto, fp32 or bf16 (explorer.backbones.precision): the image features' and, with amp, the training step's
    cache_dir: str | None = None
    amp: bool = True  # the training step's forward (text tower; image tower when fine-tuned) under bf16 autocast when precision is bf16
    name: str | None = None
    dataset_options: dict[str, Any] | None = None  # open_dataset options, e.g. {"num_ranks": 101, "unit": "years"}
    recipe: str | None = None  # the paper recipe (explorer.training.recipes) the defaults came from, for the record

    def __post_init__(self) -> None:
        self.method_config = method_config_of(self.method_config)

    @property
    def selection_metric(self) -> str:
        """The validation metric that picks the best epoch."""
        from explorer.methods import get_method

        return self.select_metric or get_method(self.method).select_metric

    @property
    def method(self) -> str:
        """The method's registered name (stored as ``learner.kind``)."""
        return self.method_config.method

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
        """JSON-ready form, with the stored keys: ``learner`` (the method config as a dict) and ``preset`` (the recipe)."""
        out = {STORED_KEYS.get(f.name, f.name): copy.deepcopy(getattr(self, f.name)) for f in fields(self) if f.name != "method_config"}
        return {**out, "learner": self.method_config.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """Inverse of to_dict (keys of other versions are ignored)."""
        names = {f.name for f in fields(cls)}
        stored = {field_name: key for key, field_name in STORED_KEYS.items()} | {"learner": "method_config"}
        data = {stored.get(k, k): v for k, v in data.items()}
        return cls(**{k: v for k, v in data.items() if k in names})


def config_from_recipe(recipe_name: str | None, dataset: str, out: str, method: str, training: dict[str, Any],
                       settings: dict[str, Any], **fixed: Any) -> TrainConfig:
    """A TrainConfig: dataclass defaults, then the paper recipe's (if any), then ``training`` / the method's
    ``settings`` (what the user set), which always win."""
    from explorer.methods import get_method, make_config
    from explorer.training.recipes import method_defaults, recipe

    fields = set(get_method(method).config_class.__dataclass_fields__)
    base_train, base_settings, options = {}, {}, None
    if recipe_name:
        r = recipe(recipe_name)
        base_train, options = dict(r.training), dict(r.dataset_options)
        base_settings = method_defaults(recipe_name, method, fields)
        if not get_method(method).supports_finetune:
            base_train["mode"] = "frozen"
    return TrainConfig(dataset=dataset, out=out, method_config=make_config(method, **{**base_settings, **settings}),
                       dataset_options=options, recipe=recipe_name, **{**base_train, **training, **fixed})


def method_config_of(value: Any):
    """A method's typed config from a config object or a stored dict with ``kind`` (a copy; never the
    caller's; see :func:`explorer.methods.stored_config`)."""
    from explorer.methods import stored_config

    if isinstance(value, dict):
        return stored_config(value)
    if not hasattr(value, "method"):
        raise ExplorerError(f"A method config needs its 'method' (got {type(value).__name__}).")
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
    """One run of a sweep: its label (method[:interpolation]), shots, seed and config (whose label
    shift is the run's regime)."""

    label: str
    shots: int | None
    seed: int
    config: TrainConfig

    @property
    def label_shift(self) -> str:
        """The regime as the tables write it: "none" or "C S"."""
        shift = self.config.label_shift
        return " ".join(f"{v:g}" for v in shift) if shift else "none"

    @property
    def id(self) -> str:
        """The run's name in its sweep folder: ``coop-shots16-seed0`` (``-shift10x0.5`` under a label shift)."""
        from explorer.core.fsio import safe_filename

        shift = self.config.label_shift
        tail = f"-shift{shift[0]:g}x{shift[1]:g}" if shift else ""
        return safe_filename(f"{self.label.replace(':', '-')}-shots{self.shots or 'all'}-seed{self.seed}{tail}", sep="-")


def run_checkpoint(out_dir: str | Path, run_id: str) -> Path:
    """Where a sweep run's checkpoint goes: ``OUT_DIR/runs/<id>/<id>.safetensors`` (history beside it)."""
    return Path(out_dir) / "runs" / run_id / f"{run_id}.safetensors"


def sweep_grid(base: TrainConfig, methods: list[tuple[str, Any]], shots: list[int | None], seeds: list[int],
               out_dir: str | Path, label_shifts: list[list[float] | None] | None = None) -> list[SweepRun]:
    """Every (method, shots, label shift, seed) combination of ``base`` (label shifts: ``base``'s own
    unless given); each run's files go to its own folder under ``out_dir/runs/``."""
    runs = []
    for label, method_config in methods:
        for shot in shots:
            for shift in label_shifts if label_shifts is not None else [base.label_shift]:
                for seed in seeds:
                    run = SweepRun(label, shot, seed, replace(base, method_config=method_config, shots=shot, seed=seed,
                                                              label_shift=list(shift) if shift else None))
                    run.config = replace(run.config, out=str(run_checkpoint(out_dir, run.id)), name=run.id)
                    runs.append(run)
    return runs


def parse_method_list(text: str, base_settings: dict[str, Any] | None = None) -> list[tuple[str, Any]]:
    """``"zeroshot,coop,ordinalclip:linear"`` -> [(label, method config)] (old names too);
    ``method:VALUE`` sets the method's variant field (:attr:`explorer.methods.Method.variant_field`,
    OrdinalCLIP's interpolation). ``base_settings`` (flag values) apply where the method has them."""
    from explorer.methods import get_method, make_config

    out = []
    for spec in (s.strip() for s in text.split(",") if s.strip()):
        name, _, variant = spec.partition(":")
        method = get_method(name)
        names = set(method.config_class.__dataclass_fields__)
        settings = {k: v for k, v in (base_settings or {}).items() if k in names and k != "method"}
        if variant:
            if method.variant_field is None:
                raise ExplorerError(f"'{spec}': the method {method.name} has no variant to pick after ':'.")
            settings[method.variant_field] = variant
        out.append((spec, make_config(method.name, **settings)))
    return out
