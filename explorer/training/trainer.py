"""Training runs: a small :class:`Trainer` in steps (prepare, embed, build, fit an epoch, validate,
keep the best, test) over any registered method.

Modes: ``frozen`` (default) trains the method on cached image features (CPU friendly);
``finetune`` also trains the image encoder on augmented images (the reference recipe, for GPUs).
Each epoch is validated with the full metric panel; the best checkpoint by validation MAE is kept
(written atomically); the test split is evaluated once, at the end, with that checkpoint. A
metrics history (JSONL) and a resume state sit beside it. Distributed runs: :mod:`explorer.training.distributed`.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from explorer.analysis.evaluation import evaluate_features
from explorer.backbones.precision import FP32, Precision
from explorer.core.fsio import write_text
from explorer.data.inputs import inputs_record
from explorer.store.resume import check_resumable, load_resume, read_resume_config, resume_path, save_resume
from explorer.training.config import Cancelled, Progress, TrainConfig, TrainResult, download_progress
from explorer.training.distributed import gather_uneven, init_distributed
from explorer.training.parts import cosine_with_warmup, make_optimizer, prepare_data, read_history, remove_stale_temporaries


class _Step(nn.Module):
    """What DDP wraps: (image features or images) -> (normalised features, normalised prototypes)."""

    def __init__(self, head: nn.Module, visual: nn.Module | None = None):
        super().__init__()
        self.head = head
        self.visual = visual

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.visual(x) if self.visual is not None else x
        return F.normalize(feats.float(), dim=-1), self.head()


# --- the trainer --------------------------------------------------------------------------------


@dataclass
class RunState:
    """What changes while a run goes on (and what a resume state restores)."""

    history: list[dict[str, Any]] = field(default_factory=list)
    best_value: float = math.inf
    best_epoch: int = -1
    best_val: dict[str, Any] = field(default_factory=dict)
    start_epoch: int = 0
    cancelled: bool = False


class Trainer:
    """One training run of ``config``; :meth:`run` goes through the steps in order."""

    def __init__(self, config: TrainConfig, progress: Callable[[Progress], None] | None = None,
                 should_stop: Callable[[], bool] | None = None, backbone=None):
        config.validate()
        self.given_backbone = backbone  # a loaded backbone to use instead of loading config.backbone
        self.config = config
        self.emit = progress or (lambda p: None)
        self.stop = should_stop or (lambda: False)
        self.out = Path(config.out)
        self.history_path = self.out.with_name(self.out.stem + ".history.jsonl")
        self.resume_file = resume_path(self.out)
        self.state = RunState()
        self.feats: dict[str, torch.Tensor] = {}

    def run(self, resume: bool = False) -> TrainResult:
        """Prepare, embed, build, fit every epoch, then test the best checkpoint."""
        started = time.perf_counter()
        self.prepare()
        self.embed_for_training()
        self.build()
        self.restore(resume)
        if not self.trainable:
            self.keep_best(self.validate(), 0)
        for epoch in range(self.state.start_epoch, self.config.epochs if self.trainable else 0):
            self.run_epoch(epoch)
            if self.state.cancelled:
                break
        self.dist.barrier()
        test_metrics = self.test()
        self.dist.barrier()
        seconds = time.perf_counter() - started
        s = self.state
        self.emit(Progress("done", 1, 1, message=f"best epoch {s.best_epoch + 1}, {seconds:.1f} s"))
        return TrainResult(self.out, self.history_path, s.history, s.best_val, test_metrics, s.best_epoch, seconds, s.cancelled)

    # --- steps ---

    def prepare(self) -> None:
        """Device, processes, dataset (before the backbone: a bad spec fails fast), backbone, cache."""
        from explorer.backbones.load import resolve_device
        from explorer.data.features import FeatureCache
        from explorer.methods import get_method

        self.dist, self.device = init_distributed(resolve_device(self.config.device))
        if self.dist.main:
            remove_stale_temporaries(self.out)
        self.emit(Progress("load", message=f"opening dataset {self.config.dataset}"))
        self.data = prepare_data(self.config, self.emit)
        self.ranks = self.data.dataset.ranks
        self.emit(Progress("load", message=f"loading backbone {self.config.backbone}"))
        self.backbone = self.given_backbone or self.load_backbone(self.config.backbone)
        self.method = get_method(self.config.method)
        if not self.method.trainable:  # nothing to learn; never mutate the caller's config
            self.config = replace(self.config, epochs=0)
        torch.manual_seed(self.config.seed)
        dataset = self.data.dataset
        self.samples = {name: [dataset.samples[i] for i in idx] for name, idx in self.data.splits.items()}
        self.labels = {name: self.data.labels_eval[idx] for name, idx in self.data.splits.items()}
        self.cache = FeatureCache(self.backbone, Path(self.config.cache_dir) if self.config.cache_dir else None)

    def load_backbone(self, spec: str):
        """The backbone of ``spec``; a hub download emits "download" progress and honours cancel."""
        from explorer.backbones.hub import DownloadCancelled
        from explorer.backbones.load import load_backbone

        try:
            return load_backbone(spec, device=self.device, progress=download_progress(self.emit, spec), should_stop=self.stop,
                                 precision=self.config.precision)
        except DownloadCancelled as exc:
            raise Cancelled(str(exc)) from exc

    def embed(self, split: str) -> torch.Tensor:
        """Cached features of a split (computed by the main process first, then read by the others)."""
        from explorer.data.features import Interrupted

        if split not in self.feats:
            def on_batch(done, total):
                self.emit(Progress("embed", done, total, message=f"embedding {split} images"))
            try:
                if self.dist.main:
                    self.feats[split] = self.cache.features(self.data.dataset, self.samples[split], progress=on_batch,
                                                            should_stop=self.stop)
                self.dist.barrier()
                if not self.dist.main:
                    self.feats[split] = self.cache.features(self.data.dataset, self.samples[split])
            except Interrupted as exc:
                raise Cancelled(str(exc)) from exc
            self._report_faces(split, self.cache.last_faces)
        return self.feats[split]

    def _report_faces(self, split: str, found: list[bool | None]) -> None:
        """With --faces: count the faces found in a split (kept in the run's data report) and say so."""
        from explorer.data.faces import faces_sentence

        sentence = faces_sentence(found)
        if sentence:
            flags = [f for f in found if f is not None]
            self.data.report.setdefault("faces", {})[split] = {"found": sum(flags), "images": len(flags)}
            self.emit(Progress("embed", message=f"{split}: {sentence}"))

    def embed_for_training(self) -> None:
        """Embed what the epochs need: train (frozen mode) and val."""
        if self.config.mode == "frozen":
            self.embed("train")
        self.embed("val")

    def build(self) -> None:
        """The method's head, the image encoder when fine-tuning, optimizer and schedule."""
        config = self.config
        method_config = config.method_config
        if hasattr(method_config, "num_ranks"):  # the dataset decides how many ranks there are
            method_config = replace(method_config, num_ranks=len(self.ranks))
        self.head = self.method.build(self.backbone, method_config, self.ranks, seed=config.seed)
        self.visual = None
        if config.mode == "finetune":
            self.visual = self.backbone.model.visual
            self.visual.requires_grad_(True).train()
        self.step_module = _Step(self.head, self.visual).to(self.device)
        groups = self.head.param_groups(config.lr)
        if self.visual is not None:
            groups.append({"params": list(self.visual.parameters()), "lr": config.image_lr})
        self.trainable = sum(p.numel() for g in groups for p in g["params"]) > 0 and config.epochs > 0
        self.model_for_step: nn.Module = self.step_module
        if self.dist.active and self.trainable:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model_for_step = DDP(self.step_module, device_ids=ids)
        self.optimizer = make_optimizer(config, groups) if self.trainable else None
        self._build_schedule()

    def _build_schedule(self) -> None:
        n = len(self.samples["train"])
        self.global_batch = min(self.config.batch_size, n)
        self.steps_per_epoch = max(1, math.ceil(n / self.global_batch)) if self.trainable else 0
        total = self.steps_per_epoch * self.config.epochs
        warmup = int(round(self.config.warmup_epochs * self.steps_per_epoch))
        self.scheduler = None
        if self.optimizer is not None:
            schedule = lambda s: cosine_with_warmup(s, total, warmup)  # noqa: E731
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        self.train_transform = None
        if self.visual is not None:
            from open_clip.transform import image_transform

            from explorer.backbones.sources import OPENAI_MEAN, OPENAI_STD

            self.train_transform = image_transform(self.backbone.image_size, is_train=True, mean=OPENAI_MEAN, std=OPENAI_STD)

    def restore(self, resume: bool) -> None:
        """Continue from the resume state (``resume``), or start a fresh history."""
        s = self.state
        if resume and self.resume_file.is_file() and self.optimizer is not None:
            check_resumable(read_resume_config(self.resume_file), self.config, self.resume_file)
            meta = load_resume(self.resume_file, self.step_module, self.optimizer)
            s.start_epoch = int(meta["epoch"]) + 1
            s.best_value, s.best_epoch, s.best_val = meta["best_value"], meta["best_epoch"], meta["best_val"]
            s.history = [h for h in read_history(self.history_path) if h["epoch"] < s.start_epoch]
            if self.dist.main:  # drop epochs finished after the last resume state (and a line torn by a crash)
                write_text(self.history_path, "".join(json.dumps(h) + "\n" for h in s.history))
            # the loaded param groups already hold the learning rate for the next step
            self.scheduler.last_epoch = s.start_epoch * self.steps_per_epoch
            self.scheduler._last_lr = [g["lr"] for g in self.optimizer.param_groups]
            self.emit(Progress("load", message=f"resuming at epoch {s.start_epoch + 1}"))
        elif self.dist.main and self.history_path.exists():
            self.history_path.unlink()

    def run_epoch(self, epoch: int) -> None:
        """Fit one epoch, validate, keep the best, record history and the resume state."""
        started = time.perf_counter()
        losses = self.fit_epoch(epoch)
        if self.state.cancelled:
            return
        val = self.validate()
        record = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)) if losses else None,
            "lr": float(self.optimizer.param_groups[0]["lr"]),
            "seconds": time.perf_counter() - started,
            **{f"val_{k}": v for k, v in val.items() if k != "per_rank_mae"},
        }
        self.state.history.append(record)
        improved = self.keep_best(val, epoch)
        self.save_progress(record, epoch)
        epochs = self.config.epochs
        self.emit(Progress("epoch", epoch + 1, epochs, epoch + 1, epochs,
                           {"train_loss": record["train_loss"] or 0.0, "val_mae": val[self.config.selection_metric], "val_acc": val["acc_max"],
                            "best": float(improved)}))

    def fit_epoch(self, epoch: int) -> list[float]:
        """One pass over the training split in a seeded order; returns the step losses."""
        rng = np.random.default_rng([self.config.seed, epoch])
        order = rng.permutation(len(self.samples["train"]))
        labels = np.array([int(self.samples["train"][i].label_for(True, rng)) for i in order])
        losses = []
        b = self.global_batch
        for step in range(self.steps_per_epoch):
            if self.stop():
                self.state.cancelled = True
                break
            loss, parts = self.train_step(order[step * b : (step + 1) * b], labels[step * b : (step + 1) * b])
            losses.append(loss)
            self.emit(Progress("train", step + 1, self.steps_per_epoch, epoch + 1, self.config.epochs, {"loss": loss, **parts}))
        return losses

    def train_step(self, idx: np.ndarray, labels: np.ndarray) -> tuple[float, dict[str, float]]:
        """Forward this process's shard, gather features, method loss, backward, optimizer + schedule step."""
        sizes = self.dist.shard_sizes(len(idx))
        start = sum(sizes[: self.dist.rank])
        own = idx[start : start + sizes[self.dist.rank]]
        if self.visual is None:
            x = self.feats["train"][own].to(self.device)
        else:
            x = torch.stack([self.train_transform(self.data.dataset.model_image(self.samples["train"][i])) for i in own]).to(self.device)
        with self.step_precision.autocast():
            own_feats, protos = self.model_for_step(x)
        feats = gather_uneven(own_feats, sizes, self.dist)
        y = torch.as_tensor(labels, device=self.device)
        loss, parts = self.head.loss(feats.float(), protos.float(), y, self.config)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return float(loss.detach()), parts

    @property
    def step_precision(self) -> Precision:
        """What a training step's forward computes in: the run's precision with ``amp`` on (bf16: autocast of
        the text tower, and of the image tower when fine-tuned), else fp32. Master weights, the loss, the
        optimizer, and the prototypes and metrics of validation and test stay fp32 (the image features are
        the run's precision; benchmarks/README.md: the speed and the checkpoints)."""
        return self.backbone.precision if self.config.amp else FP32

    def validate(self) -> dict[str, Any]:
        """The metric panel of the current head on the val split."""
        return self.evaluate_split("val")

    def evaluate_split(self, split: str) -> dict[str, Any]:
        with torch.no_grad():
            predictor = self.head.predictor()
        if self.visual is None:
            feats = self.embed(split)
        else:
            self.visual.eval()
            feats = _encode_eval(self.backbone, self.data.dataset, self.samples[split])
            self.visual.train()
        return evaluate_features(predictor, feats, self.labels[split], self.data.dataset.spreads(self.samples[split]))

    def keep_best(self, val: dict[str, Any], epoch: int) -> bool:
        """Write the checkpoint when ``val`` improves on the best so far; returns whether it did."""
        s = self.state
        value = val[self.config.selection_metric]
        if not value < s.best_value and s.best_epoch >= 0:
            return False
        s.best_value, s.best_epoch, s.best_val = value, epoch, val
        if self.dist.main:
            self.save_checkpoint(val, epoch)
        return True

    def save_checkpoint(self, val: dict[str, Any], epoch: int) -> None:
        from explorer.backbones.load import save_backbone_weights
        from explorer.store.checkpoints import save_checkpoint

        config = self.config
        inputs = inputs_record(config.faces, config.dataset, config.recipe, config.face_margin if config.faces else None)
        training = {**config.to_dict(), "best_epoch": epoch, "data": self.data.report, "inputs": inputs,
                    "feature_precision": self.backbone.precision.name,
                    "step_precision": self.step_precision.name if self.trainable else None}
        owner = self.backbone
        if self.visual is not None:  # the tuned image encoder is part of what the checkpoint needs
            owner = save_backbone_weights(self.backbone, self.out.with_name(self.out.stem + ".backbone.safetensors"))
        save_checkpoint(self.out, self.head, owner, name=config.name or self.out.stem, training=training, metrics={"val": val})

    def save_progress(self, record: dict[str, Any], epoch: int) -> None:
        """Append the epoch to the history and write the resume state (main process)."""
        if not self.dist.main:
            return
        with open(self.history_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        s = self.state
        save_resume(self.resume_file, self.step_module, self.optimizer,
                    {"epoch": epoch, "best_value": s.best_value, "best_epoch": s.best_epoch, "best_val": s.best_val,
                     "config": self.config.to_dict()})

    def test(self) -> dict[str, Any] | None:
        """Evaluate the best checkpoint once on the test split; removes the resume state of a finished run."""
        from explorer.store.checkpoints import load_checkpoint, update_metadata

        if self.state.best_epoch < 0 or not self.out.is_file():
            raise Cancelled("The run was cancelled before its first checkpoint was written.")
        if self.state.cancelled:
            return None
        has_test = bool(self.data.splits.get("test"))
        if has_test and self.visual is None:
            self.embed("test")  # on every process: embed() synchronises them
        if not self.dist.main:
            return None
        metrics = None
        if has_test:
            self.emit(Progress("test", message="evaluating the best checkpoint on the test split"))
            best = load_checkpoint(self.out)
            if self.visual is None:
                feats = self.embed("test")
            else:  # the image encoder of the best epoch (the one the checkpoint names), not the last epoch's
                feats = _encode_eval(self.load_backbone(best.backbone_spec), self.data.dataset, self.samples["test"])
            spreads = self.data.dataset.spreads(self.samples["test"])
            metrics = evaluate_features(best.predictor(), feats, self.labels["test"], spreads)
            update_metadata(self.out, metrics={"val": self.state.best_val, "test": metrics})
        self.resume_file.unlink(missing_ok=True)
        return metrics


@torch.no_grad()
def _encode_eval(backbone, dataset, samples) -> torch.Tensor:
    return backbone.encode_images([dataset.model_image(s) for s in samples])


def train(config: TrainConfig, progress: Callable[[Progress], None] | None = None,
          should_stop: Callable[[], bool] | None = None, resume: bool = False, backbone=None) -> TrainResult:
    """Run one training job end to end and return where its checkpoint and history are; ``backbone``:
    an already loaded backbone of ``config.backbone`` (a shared one: fine-tuning would change it)."""
    return Trainer(config, progress, should_stop, backbone).run(resume)

