"""Training of small few-shot runs: objective, loop, evaluation, resume, distributed runs.

Modes: ``frozen`` (default) trains the prompt learner on cached image features (CPU friendly);
``finetune`` also trains the image encoder on augmented images (the reference recipe, for GPUs).

Objective (method §3): cross-entropy over ranks plus the text-to-image KL over the batch;
optionally NumCLIP's distance-weighted cross-entropy (§8). Each epoch is validated with the full
metric panel; the best checkpoint by validation MAE is kept (written atomically); the test split is
evaluated once, at the end, with that checkpoint. A metrics history (JSONL) sits beside it.

Distributed: ``torchrun --nproc-per-node N -m explorer train ...`` runs DDP (gloo on CPU, NCCL on
GPU). Each process takes a shard of every batch; features are all-gathered (with gradients) so the
loss, including the batch-level KL term, is exactly the single-process loss.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .errors import ExplorerError
from .metrics import metric_panel
from .prompts import LearnerConfig, PromptModel, build_prompt_model

TRAINABLE_KINDS = ("rank", "plain", "linear")
ALL_KINDS = ("rank", "plain", "template", "linear")
OPTIMIZERS = ("adamw", "radam", "sgd")


# --- objective ----------------------------------------------------------------------------------


def kl_text_to_image(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Text-to-image KL over the batch (§3): for each rank present, target softmax(10 * one-hot column)
    against softmax over the batch of that rank's logits; averaged over the ranks present."""
    num_ranks = logits.shape[1]
    y_t = F.one_hot(y, num_ranks).t().to(logits.dtype)  # R x N
    present = y_t.sum(dim=1) > 0
    target = torch.softmax(10.0 * y_t[present], dim=1)
    log_q = torch.log_softmax(logits.t()[present], dim=1)
    kl = (target * (torch.log(target) - log_q)).sum()
    return kl / present.sum()


def distance_weighted_logits(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """NumCLIP weighting (§8): for j != y the logit is scaled by w = (K-1)|y-j| / sum_k |y-k|; w = 1 at y."""
    num_ranks = logits.shape[1]
    ranks = torch.arange(num_ranks, device=logits.device, dtype=logits.dtype)
    dist = (ranks[None] - y[:, None].to(logits.dtype)).abs()
    w = (num_ranks - 1) * dist / dist.sum(dim=1, keepdim=True)
    w = torch.where(dist == 0, torch.ones_like(w), w)
    return logits * w


def ordinal_loss(logits: torch.Tensor, y: torch.Tensor, kl_weight: float = 1.0, distance_weighted: bool = False) -> tuple[torch.Tensor, dict[str, float]]:
    """CE (optionally distance-weighted) + kl_weight * text-to-image KL; returns (loss, parts)."""
    ce = F.cross_entropy(distance_weighted_logits(logits, y) if distance_weighted else logits, y)
    kl = kl_text_to_image(logits, y) if kl_weight else logits.new_zeros(())
    loss = ce + kl_weight * kl
    return loss, {"ce": float(ce.detach()), "kl": float(kl.detach())}


# --- configuration ------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """Everything a training run needs; stored in the checkpoint's ``training`` metadata."""

    dataset: str
    out: str
    backbone: str = "demo"
    learner: dict[str, Any] = field(default_factory=lambda: {"kind": "rank"})
    shots: int | None = None
    label_shift: list[float] | None = None  # [c, s]: the c most frequent labels keep max(int(n*s), 1)
    epochs: int = 20
    batch_size: int = 32
    lr: float = 2e-3
    optimizer: str = "adamw"
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    kl_weight: float = 1.0
    distance_weighted: bool = False
    mode: str = "frozen"
    image_lr: float = 1e-5
    select_metric: str = "mae_exp"
    seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    skip_bad: bool = False
    device: str | None = None
    cache_dir: str | None = None
    amp: bool = True
    name: str | None = None

    def validate(self) -> None:
        """One clear sentence for impossible settings."""
        kind = self.learner.get("kind", "rank")
        if kind not in ALL_KINDS:
            raise ExplorerError(f"Unknown learner '{kind}'; choose one of {', '.join(ALL_KINDS)}.")
        if self.optimizer not in OPTIMIZERS:
            raise ExplorerError(f"Unknown optimizer '{self.optimizer}'; choose one of {', '.join(OPTIMIZERS)}.")
        if self.mode not in ("frozen", "finetune"):
            raise ExplorerError(f"Unknown mode '{self.mode}'; choose frozen or finetune.")
        if self.epochs < 0 or self.batch_size < 1 or not self.lr > 0:
            raise ExplorerError("epochs must be >= 0, batch size >= 1 and the learning rate > 0.")
        if self.shots is not None and self.shots < 1:
            raise ExplorerError(f"shots must be at least 1 (got {self.shots}).")
        if self.mode == "finetune" and kind == "linear":
            raise ExplorerError("The linear probe trains on frozen features only; use --mode frozen.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class Progress:
    """One progress event; the CLI draws a bar from it, the app a live chart."""

    stage: str  # "load", "embed", "train", "epoch", "test", "done"
    done: int = 0
    total: int = 0
    epoch: int = 0
    epochs: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    message: str = ""

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0


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


class Cancelled(ExplorerError):
    """The run was cancelled; the best checkpoint so far is kept."""


# --- distributed helpers ------------------------------------------------------------------------


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device: torch.device) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return _Dist(dist.get_rank(), dist.get_world_size())


def _barrier(d: _Dist) -> None:
    if d.active:
        import torch.distributed as dist

        dist.barrier()


def _gather(x: torch.Tensor, d: _Dist) -> torch.Tensor:
    """Concatenate equally-sized shards from every process, keeping gradients."""
    if not d.active:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()), dim=0)


# --- data preparation ---------------------------------------------------------------------------


@dataclass
class _Data:
    dataset: Any
    splits: dict[str, list[int]]
    labels_eval: np.ndarray  # per sample, the evaluation label
    report: dict[str, Any]


def prepare_data(config: TrainConfig, progress: Callable[[Progress], None] | None = None) -> _Data:
    """Open and check the dataset, make the splits and apply the training regimes (§6)."""
    from . import datasets as ds

    dataset = ds.open_dataset(config.dataset)
    report = ds.validate(dataset, check_images=True, skip_bad=config.skip_bad)
    splits = ds.make_splits(dataset, val_fraction=config.val_fraction, test_fraction=config.test_fraction, seed=config.seed)
    labels_eval = np.array([s.label for s in dataset.samples], dtype=np.int64)
    train = list(splits["train"])
    if config.shots:
        train = ds.few_shot(train, labels_eval[train], config.shots, seed=config.seed)
    if config.label_shift:
        c, s = config.label_shift
        train = ds.label_shift(train, labels_eval[train], int(c), float(s), seed=config.seed)
    splits = {**splits, "train": list(train)}
    for name in ("train", "val"):
        if not splits.get(name):
            raise ExplorerError(f"The {name} split is empty; use a larger dataset or other split fractions.")
    info = {"num_samples": len(dataset.samples), **{f"num_{k}": len(v) for k, v in splits.items()}}
    info.update(checked=report.total, skipped=report.skipped)
    return _Data(dataset, splits, labels_eval, info)


# --- the learners as trainable heads ------------------------------------------------------------


class LinearProbe(nn.Module):
    """Baseline: R learned prototypes directly in the embedding space (cosine head, CLIP's scale)."""

    def __init__(self, num_ranks: int, dim: int, logit_scale: float, ranks, generator: torch.Generator | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_ranks, dim, generator=generator) * 0.02)
        self.logit_scale = float(logit_scale)
        self.ranks = ranks

    def forward(self, full_length: bool = False) -> torch.Tensor:
        return F.normalize(self.weight, dim=-1)


class _Step(nn.Module):
    """What DDP wraps: (image features or images) -> (normalised features, normalised prototypes)."""

    def __init__(self, head: nn.Module, visual: nn.Module | None = None):
        super().__init__()
        self.head = head
        self.visual = visual

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.visual(x) if self.visual is not None else x
        return F.normalize(feats.float(), dim=-1), self.head()


def _build_head(config: TrainConfig, backbone, ranks) -> nn.Module:
    kind = config.learner.get("kind", "rank")
    if kind == "linear":
        gen = torch.Generator().manual_seed(config.seed)
        return LinearProbe(len(ranks), backbone.embed_dim, backbone.logit_scale, ranks, gen).to(backbone.device)
    learner_cfg = LearnerConfig.from_dict({**config.learner, "num_ranks": len(ranks)})
    return build_prompt_model(backbone, learner_cfg, ranks, seed=config.seed)


def _make_optimizer(config: TrainConfig, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "radam":
        return torch.optim.RAdam(groups, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(groups, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)


def cosine_with_warmup(step: int, total: int, warmup: int) -> float:
    """LR multiplier: linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


# --- evaluation ---------------------------------------------------------------------------------


@torch.no_grad()
def evaluate_features(prototypes: torch.Tensor, logit_scale: float, feats: torch.Tensor, labels: np.ndarray) -> dict[str, Any]:
    """Full metric panel (and per-rank MAE) of normalised prototypes on image features."""
    logits = logit_scale * F.normalize(feats.float(), dim=-1) @ prototypes.float().cpu().T
    probs = torch.softmax(logits, dim=-1).numpy().astype(np.float64)
    panel = metric_panel(probs, labels)
    expected = probs @ np.arange(probs.shape[1])
    per_rank = [float(np.abs(expected[labels == r] - r).mean()) if (labels == r).any() else None for r in range(probs.shape[1])]
    return {**panel, "per_rank_mae": per_rank}


# --- resume state (safetensors + JSON; no pickle) ------------------------------------------------


def _resume_path(out: Path) -> Path:
    return out.with_name(out.stem + ".resume.safetensors")


def _save_resume(path: Path, step_module: nn.Module, optimizer: torch.optim.Optimizer, meta: dict[str, Any]) -> None:
    tensors = {f"param.{k}": v.detach().float().cpu().contiguous() for k, v in step_module.named_parameters() if v.requires_grad}
    opt = optimizer.state_dict()
    scalars: dict[str, Any] = {}
    for pid, state in opt["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"opt.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    meta = {**meta, "optimizer_scalars": scalars, "param_groups": opt["param_groups"]}
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"resume": json.dumps(meta, default=float)})
    os.replace(tmp, path)


def _load_resume(path: Path, step_module: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["resume"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    with torch.no_grad():
        for name, param in step_module.named_parameters():
            if param.requires_grad:
                param.copy_(tensors[f"param.{name}"].to(param.device))
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for key, value in meta["optimizer_scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return meta


# --- the run ------------------------------------------------------------------------------------


def train(
    config: TrainConfig,
    progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    resume: bool = False,
) -> TrainResult:
    """Run one training job end to end and return where its checkpoint and history are."""
    from .backbones import load_backbone, resolve_device, save_backbone_weights
    from .checkpoints import load_checkpoint, save_checkpoint, update_metadata
    from .features import FeatureCache, Interrupted

    config.validate()
    started = time.perf_counter()
    emit = progress or (lambda p: None)
    stop = should_stop or (lambda: False)
    out = Path(config.out)
    history_path = out.with_name(out.stem + ".history.jsonl")
    device = resolve_device(config.device)
    dist = _init_distributed(device)
    if dist.active and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", dist.rank)))
        torch.cuda.set_device(device)

    if dist.main:
        _remove_stale_temporaries(out)
    emit(Progress("load", message=f"opening dataset {config.dataset}"))
    data = prepare_data(config, emit)  # first: a bad dataset spec fails before the backbone loads
    dataset, ranks = data.dataset, data.dataset.ranks
    emit(Progress("load", message=f"loading backbone {config.backbone}"))
    backbone = load_backbone(config.backbone, device=device)
    if config.learner.get("kind", "rank") == "template":
        config = dataclasses.replace(config, epochs=0)  # nothing to learn; never mutate the caller's config
    torch.manual_seed(config.seed)

    samples = {name: [dataset.samples[i] for i in idx] for name, idx in data.splits.items()}
    labels = {name: data.labels_eval[idx] for name, idx in data.splits.items()}
    cache = FeatureCache(backbone, Path(config.cache_dir) if config.cache_dir else None)
    feats: dict[str, torch.Tensor] = {}

    def embed(split: str) -> torch.Tensor:
        if split not in feats:
            def on_batch(done, total):
                emit(Progress("embed", done, total, message=f"embedding {split} images"))
            if dist.main:
                feats[split] = cache.features(dataset, samples[split], progress=on_batch, should_stop=stop)
            _barrier(dist)
            if not dist.main:
                feats[split] = cache.features(dataset, samples[split])
        return feats[split]

    try:
        embed("train") if config.mode == "frozen" else None
        embed("val")
    except Interrupted as exc:
        raise Cancelled(str(exc)) from exc

    head = _build_head(config, backbone, ranks)
    visual = None
    if config.mode == "finetune":
        visual = backbone.model.visual
        visual.requires_grad_(True).train()
    step_module = _Step(head, visual).to(device)
    groups = [{"params": [p for p in head.parameters() if p.requires_grad], "lr": config.lr}]
    if visual is not None:
        groups.append({"params": list(visual.parameters()), "lr": config.image_lr})
    trainable = sum(p.numel() for g in groups for p in g["params"])
    model_for_step: nn.Module = step_module
    if dist.active and trainable:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model_for_step = DDP(step_module, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = _make_optimizer(config, groups) if trainable else None

    train_idx = np.arange(len(samples["train"]))
    global_batch = min(config.batch_size, len(train_idx))
    steps_per_epoch = max(1, math.ceil(len(train_idx) / global_batch)) if trainable else 0
    total_steps = steps_per_epoch * config.epochs
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    scheduler = (
        torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_with_warmup(s, total_steps, warmup)) if optimizer else None
    )
    use_amp = config.amp and device.type == "cuda"
    train_transform = None
    if visual is not None:
        from open_clip.transform import image_transform

        from .backbones import OPENAI_MEAN, OPENAI_STD

        train_transform = image_transform(backbone.image_size, is_train=True, mean=OPENAI_MEAN, std=OPENAI_STD)

    history: list[dict[str, Any]] = []
    best_value, best_epoch, best_val = math.inf, -1, {}
    start_epoch = 0
    resume_file = _resume_path(out)
    if resume and resume_file.is_file() and optimizer is not None:
        meta = _load_resume(resume_file, step_module, optimizer)
        start_epoch = int(meta["epoch"]) + 1
        best_value, best_epoch, best_val = meta["best_value"], meta["best_epoch"], meta["best_val"]
        history = [h for h in _read_history(history_path) if h["epoch"] < start_epoch]
        if dist.main:  # drop epochs finished after the last resume state (and a line torn by a crash)
            _write_text_atomic(history_path, "".join(json.dumps(h) + "\n" for h in history))
        # the loaded param groups already hold the learning rate for the next step
        scheduler.last_epoch = start_epoch * steps_per_epoch
        scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]
        emit(Progress("load", message=f"resuming at epoch {start_epoch + 1}"))
    elif dist.main and history_path.exists():
        history_path.unlink()

    def save_best(val: dict[str, Any], epoch: int) -> None:
        if not dist.main:
            return
        training = {**config.to_dict(), "best_epoch": epoch, "data": data.report}
        metrics = {"val": val}
        owner = backbone
        if visual is not None:  # the tuned image encoder is part of what the checkpoint needs
            owner = save_backbone_weights(backbone, out.with_name(out.stem + ".backbone.safetensors"))
        if isinstance(head, PromptModel):
            save_checkpoint(out, head, owner, name=config.name or out.stem, training=training, metrics=metrics)
        else:
            _save_linear(out, head, owner, config.name or out.stem, training, metrics)

    def eval_head(split: str) -> dict[str, Any]:
        with torch.no_grad():
            protos = head(full_length=False)
        if visual is not None:
            visual.eval()
            split_feats = _encode_eval(backbone, dataset, samples[split])
            visual.train()
        else:
            split_feats = embed(split)
        return evaluate_features(protos, head.logit_scale, split_feats, labels[split])

    cancelled = False
    if not trainable or config.epochs == 0:
        val = eval_head("val")
        best_value, best_epoch, best_val = val[config.select_metric], 0, val
        save_best(val, 0)
    for epoch in range(start_epoch, config.epochs if trainable else 0):
        epoch_start = time.perf_counter()
        rng = np.random.default_rng([config.seed, epoch])
        order = rng.permutation(train_idx)
        train_labels = np.array([_train_label(samples["train"][i], rng) for i in order])
        losses = []
        for b in range(steps_per_epoch):
            if stop():
                cancelled = True
                break
            idx = order[b * global_batch : (b + 1) * global_batch]
            y = torch.as_tensor(train_labels[b * global_batch : (b + 1) * global_batch], device=device)
            shard = np.array_split(np.arange(len(idx)), dist.world)[dist.rank]
            if visual is None:
                x = feats["train"][idx[shard]].to(device)
            else:
                x = torch.stack([train_transform(dataset.load_image(samples["train"][i])) for i in idx[shard]]).to(device)
            with torch.autocast(device.type, enabled=use_amp):
                own_feats, protos = model_for_step(x)
            all_feats = _gather_uneven(own_feats, [len(s) for s in np.array_split(np.arange(len(idx)), dist.world)], dist)
            logits = head.logit_scale * all_feats.float() @ protos.float().T
            loss, parts = ordinal_loss(logits, y, config.kl_weight, config.distance_weighted)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            emit(Progress("train", b + 1, steps_per_epoch, epoch + 1, config.epochs, {"loss": losses[-1], **parts}))
        if cancelled:
            break
        val = eval_head("val")
        record = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)) if losses else None,
            "lr": float(optimizer.param_groups[0]["lr"]),
            "seconds": time.perf_counter() - epoch_start,
            **{f"val_{k}": v for k, v in val.items() if k != "per_rank_mae"},
        }
        history.append(record)
        improved = val[config.select_metric] < best_value
        if improved:
            best_value, best_epoch, best_val = val[config.select_metric], epoch, val
            save_best(val, epoch)
        if dist.main:
            with open(history_path, "a") as f:
                f.write(json.dumps(record) + "\n")
            _save_resume(resume_file, step_module, optimizer,
                         {"epoch": epoch, "best_value": best_value, "best_epoch": best_epoch, "best_val": best_val, "config": config.to_dict()})
        emit(Progress("epoch", epoch + 1, config.epochs, epoch + 1, config.epochs,
                      {"train_loss": record["train_loss"] or 0.0, "val_mae": val["mae_exp"], "val_acc": val["acc_max"], "best": float(improved)}))
    _barrier(dist)

    test_metrics = None
    if best_epoch < 0 or not out.is_file():
        raise Cancelled("The run was cancelled before its first checkpoint was written.")
    if not cancelled and data.splits.get("test") and visual is None:
        embed("test")  # on every process: embed() synchronises them
    if dist.main and not cancelled and data.splits.get("test"):
        emit(Progress("test", message="evaluating the best checkpoint on the test split"))
        best = load_checkpoint(out)
        if visual is None:
            test_feats = embed("test")
        else:  # the image encoder of the best epoch (the one the checkpoint names), not the last epoch's
            test_feats = _encode_eval(load_backbone(best.backbone_spec, device=device), dataset, samples["test"])
        test_metrics = evaluate_features(best.prototypes.matrix, best.prototypes.logit_scale, test_feats, labels["test"])
        update_metadata(out, metrics={"val": best_val, "test": test_metrics})
        resume_file.unlink(missing_ok=True)
    elif dist.main and not cancelled:
        resume_file.unlink(missing_ok=True)
    _barrier(dist)
    seconds = time.perf_counter() - started
    emit(Progress("done", 1, 1, message=f"best epoch {best_epoch + 1}, {seconds:.1f} s"))
    return TrainResult(out, history_path, history, best_val, test_metrics, best_epoch, seconds, cancelled)


def _read_history(path: Path) -> list[dict[str, Any]]:
    """History records of an earlier run; a line torn by a crash is skipped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "epoch" in record:
            records.append(record)
    return records


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _remove_stale_temporaries(out: Path) -> None:
    """Temporary files a killed run of this checkpoint left (atomic writes of the checkpoint, resume state,
    history and fine-tuned backbone); the finished files themselves are never touched."""
    if not out.parent.is_dir():
        return
    stem = out.stem
    patterns = (f".{out.name}.*.tmp", f"{stem}.resume.tmp", f"{stem}.history.jsonl.tmp", f"{stem}.backbone.safetensors.tmp")
    for pattern in patterns:
        for path in out.parent.glob(pattern):
            path.unlink(missing_ok=True)


def _train_label(sample, rng: np.random.Generator) -> int:
    """A random one of several labels for training (§6); the only label otherwise."""
    return int(sample.label_for(True, rng))


def _gather_uneven(x: torch.Tensor, sizes: list[int], d: _Dist) -> torch.Tensor:
    """All-gather shards whose sizes differ by at most one (pad, gather, trim)."""
    if not d.active:
        return x
    size = max(sizes)
    pad = size - x.shape[0]
    if pad:
        x = torch.cat([x, x.new_zeros(pad, *x.shape[1:])])
    gathered = _gather(x, d)
    parts = [gathered[i * size : i * size + n] for i, n in enumerate(sizes)]
    return torch.cat(parts)


@torch.no_grad()
def _encode_eval(backbone, dataset, samples) -> torch.Tensor:
    images = [dataset.load_image(s) for s in samples]
    return backbone.encode_images(images)


def _save_linear(out: Path, head: LinearProbe, backbone, name: str, training: dict, metrics: dict) -> Path:
    from .checkpoints import save_prototypes
    from .prototypes import Prototypes

    protos = Prototypes(head().detach().cpu(), head.logit_scale, head.ranks)
    return save_prototypes(out, protos, backbone.spec, backbone.backbone_id, name=name, source={"learner": "linear"},
                           training=training, metrics=metrics)


def evaluate_checkpoint(ckpt, backbone, dataset_spec: str, split: str = "test", cache_dir: str | None = None,
                        skip_bad: bool = False, min_label: int | None = None) -> dict[str, Any]:
    """Evaluate a checkpoint's prototypes on a dataset split (the split seed/fractions of its training run
    when it was trained on this dataset, else the defaults); ``min_label`` keeps only labels >= it
    (the long-tail evaluation of §6)."""
    from . import datasets as ds
    from .features import FeatureCache

    training = ckpt.meta.get("training") or {}
    same = training.get("dataset") == dataset_spec
    dataset = ds.open_dataset(dataset_spec)
    ds.validate(dataset, check_images=True, skip_bad=skip_bad)
    if len(dataset.ranks) != ckpt.prototypes.num_ranks:
        raise ExplorerError(f"{ckpt.name} predicts {ckpt.prototypes.num_ranks} ranks but {dataset_spec} has {len(dataset.ranks)}.")
    splits = ds.make_splits(
        dataset,
        val_fraction=training.get("val_fraction", 0.1) if same else 0.1,
        test_fraction=training.get("test_fraction", 0.2) if same else 0.2,
        seed=training.get("seed", 0) if same else 0,
    )
    idx = list(range(len(dataset.samples))) if split == "all" else list(splits.get(split, []))
    if min_label is not None:
        idx = ds.long_tail(idx, [dataset.samples[i].label for i in idx], min_label)
    if not idx:
        raise ExplorerError(f"The {split} split of {dataset_spec} has no images" + (f" with labels >= {min_label}." if min_label is not None else "."))
    samples = [dataset.samples[i] for i in idx]
    labels = np.array([s.label for s in samples], dtype=np.int64)
    feats = FeatureCache(backbone, cache_dir).features(dataset, samples)
    protos = ckpt.prototypes
    metrics = evaluate_features(protos.matrix, protos.logit_scale, feats, labels)
    return {"checkpoint": ckpt.name, "dataset": dataset_spec, "split": split, "min_label": min_label, "metrics": metrics}


def sweep(runs: list[tuple[str, int | None, int, TrainConfig]], out_dir: Path, progress: Callable[[Progress], None] | None = None) -> dict[str, Any]:
    """Train every (learner label, shots, seed, config); write results.csv / results.md with mean +- std over seeds."""
    import pandas as pd

    from .geometry import ordinality_report
    from .checkpoints import load_checkpoint
    from .metrics import aggregate

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for label, shots, seed, config in runs:
        if progress:
            progress(Progress("load", message=f"== {label}, shots {shots or 'all'}, seed {seed}"))
        result = train(config, progress=progress)
        test = result.test_metrics or {}
        protos = load_checkpoint(result.checkpoint).prototypes.matrix.numpy()
        rows.append({"learner": label, "shots": shots or "all", "seed": seed,
                     **{k: v for k, v in test.items() if k != "per_rank_mae"},
                     "ordinality": ordinality_report(protos)["ordinality"], "seconds": result.seconds})
    raw = pd.DataFrame(rows)
    raw.to_csv(out_dir / "runs.csv", index=False)
    metrics = ["mae_exp", "mae_max", "acc_max", "cs1", "qwk", "spearman", "ordinality"]
    summary = []
    for (label, shots), group in raw.groupby(["learner", "shots"], sort=False):
        agg = aggregate(group[metrics].to_dict("records"))
        summary.append({"learner": label, "shots": shots, "seeds": len(group),
                        **{f"{m}_mean": agg[m]["mean"] for m in metrics}, **{f"{m}_std": agg[m]["std"] for m in metrics}})
    table = pd.DataFrame(summary)
    csv_path, md_path = out_dir / "results.csv", out_dir / "results.md"
    table.to_csv(csv_path, index=False)
    lines = ["| learner | shots | seeds | test MAE (exp) | test acc % | 1-off % | QWK | ordinality % |", "|---|---|---|---|---|---|---|---|"]
    for r in summary:
        lines.append(
            f"| {r['learner']} | {r['shots']} | {r['seeds']} | {r['mae_exp_mean']:.3f} ± {r['mae_exp_std']:.3f} | "
            f"{r['acc_max_mean'] * 100:.1f} ± {r['acc_max_std'] * 100:.1f} | {r['cs1_mean'] * 100:.1f} ± {r['cs1_std'] * 100:.1f} | "
            f"{r['qwk_mean']:.3f} ± {r['qwk_std']:.3f} | {r['ordinality_mean'] * 100:.1f} ± {r['ordinality_std'] * 100:.1f} |"
        )
    markdown = "\n".join(lines)
    md_path.write_text(markdown + "\n")
    return {"csv": csv_path, "md": md_path, "markdown": markdown, "table": table}
