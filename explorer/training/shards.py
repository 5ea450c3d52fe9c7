"""Embedding a dataset once, in shards (``embed DATASET --shards K --executor ... --workers N``).

The dataset's samples, in their listed order, are cut into K contiguous shards. A worker embeds a
shard into the feature cache as one chunk (:meth:`explorer.data.features.FeatureCache.features` with
the shard as ``chunk_size``), written atomically when the shard is complete; a shard whose images are
all cached already is skipped without running the image tower. The cache's own keys decide (image
content, preprocessing, face crops), so every run afterwards reads these features and embeds nothing.

Each finished shard leaves a small report (``shard-K-of-N.json``) in the embedding's job folder
(``<cache>/_jobs/embed-<id>/``, beside submitit's logs); the command counts them for its progress
and its summary.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from explorer.core.errors import ExplorerError
from explorer.core.fsio import write_text
from explorer.training import executors
from explorer.training.config import Progress
from explorer.training.executors import ExecutorSpec


@dataclass
class EmbedJob:
    """What every shard of one embedding shares."""

    dataset: str
    backbone: str = "demo"
    num_shards: int = 1
    cache_dir: str | None = None
    device: str | None = None
    batch_size: int = 64
    face_margin: float | None = None  # None: whole images
    skip_bad: bool = False

    @property
    def folder(self) -> Path:
        """The job folder: shard reports and submitit's logs."""
        from explorer.data.features import default_cache

        key = json.dumps([self.dataset, self.backbone, self.face_margin, self.num_shards])
        name = "embed-" + hashlib.blake2b(key.encode(), digest_size=6).hexdigest()
        return Path(self.cache_dir or default_cache()).resolve() / "_jobs" / name

    def report_path(self, shard: int) -> Path:
        return self.folder / f"shard-{shard:05d}-of-{self.num_shards:05d}.json"


def shard_range(n: int, shard: int, num_shards: int) -> tuple[int, int]:
    """[start, end) of shard ``shard`` of ``num_shards`` over ``n`` samples (sizes differ by at most one)."""
    return n * shard // num_shards, n * (shard + 1) // num_shards


def _shard_dataset(dataset, job: EmbedJob, shard: int):
    """A copy of the opened dataset holding only the shard's samples, checked (images too)."""
    from explorer.data.datasets import validate

    part = copy.copy(dataset)
    start, end = shard_range(len(dataset.samples), shard, job.num_shards)
    part.samples, part.splits = list(dataset.samples[start:end]), {}
    report = validate(part, check_images=True, skip_bad=job.skip_bad) if part.samples else None
    part.face_margin = job.face_margin
    return part, (report.skipped if report else 0)


def embed_shards(job: EmbedJob, shards: list[int], threads: int | None = None,
                 progress: Callable[[Progress], None] | None = None) -> int:
    """One worker: embed ``shards`` of ``job`` (the function submitit runs); returns how many it embedded."""
    from explorer.backbones.load import load_backbone
    from explorer.data.datasets import open_dataset
    from explorer.data.features import FeatureCache
    executors.set_threads(threads)
    dataset = open_dataset(job.dataset)
    backbone = load_backbone(job.backbone, device=job.device)
    cache = FeatureCache(backbone, job.cache_dir)
    for shard in shards:
        started = time.perf_counter()
        part, skipped = _shard_dataset(dataset, job, shard)
        todo = []

        def on_batch(done: int, total: int) -> None:
            todo.append(total)
            if progress:
                progress(Progress("embed", done, total, message=f"shard {shard + 1} of {job.num_shards}"))
        cache.features(part, part.samples, batch_size=job.batch_size, progress=on_batch, chunk_size=max(1, len(part.samples)))
        found = [f for f in cache.last_faces if f is not None]
        write_text(job.report_path(shard), json.dumps({
            "shard": shard, "images": len(part.samples), "embedded": todo[0] if todo else 0, "skipped_bad": skipped,
            "faces_found": sum(found), "cache": str(cache.folder), "backbone": backbone.spec,
            "seconds": time.perf_counter() - started}) + "\n")
    return len(shards)


def read_reports(job: EmbedJob) -> list[dict[str, Any]]:
    """The reports of the shards finished so far (in shard order)."""
    reports = []
    for shard in range(job.num_shards):
        try:
            reports.append(json.loads(job.report_path(shard).read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    return reports


def _ticker(job: EmbedJob, progress: Callable[[Progress], None] | None) -> Callable[[], bool]:
    seen = [-1]

    def tick() -> bool:
        done = len(read_reports(job))
        if progress and done != seen[0]:
            seen[0] = done
            progress(Progress("embed", done, job.num_shards, message="shards embedded"))
        return done == job.num_shards
    return tick


def embed_sharded(job: EmbedJob, spec: ExecutorSpec, progress: Callable[[Progress], None] | None = None) -> dict[str, Any]:
    """Embed every shard of ``job`` on the executor and sum up the shards' reports."""
    from explorer.data.datasets import open_dataset

    n = len(open_dataset(job.dataset).samples)  # a bad spec fails here, before anything is submitted
    if not 1 <= job.num_shards <= max(n, 1):
        raise ExplorerError(f"--shards must be between 1 and the {n} images of {job.dataset} (got {job.num_shards}).")
    job.folder.mkdir(parents=True, exist_ok=True)
    for old in job.folder.glob("shard-*.json"):  # reports of an earlier call: this one counts afresh
        old.unlink()
    shards = list(range(job.num_shards))
    if spec.executor == "inline":
        embed_shards(job, shards, None, progress)
    else:
        jobs = executors.submit(spec, job.folder / "submitit", embed_shards, job, shards)
        executors.wait(jobs, _ticker(job, progress))
    return summarize(job)


def summarize(job: EmbedJob) -> dict[str, Any]:
    """Totals over the shard reports; one sentence when a shard did not finish."""
    reports = read_reports(job)
    missing = job.num_shards - len(reports)
    if missing:
        raise ExplorerError(f"{missing} of {job.num_shards} shards did not finish (logs in {job.folder}); "
                            "run the same command again to embed them (finished shards are skipped).")
    return {"images": sum(r["images"] for r in reports), "embedded": sum(r["embedded"] for r in reports),
            "skipped_bad": sum(r["skipped_bad"] for r in reports), "faces_found": sum(r["faces_found"] for r in reports),
            "shards": len(reports), "cache": reports[0]["cache"] if reports else "", "backbone": reports[0]["backbone"] if reports else "",
            "job": asdict(job)}
