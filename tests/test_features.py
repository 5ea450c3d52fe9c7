"""The on-disk feature cache (explorer.data.features) with the real demo backbone and real files."""

from __future__ import annotations

import dataclasses
import json
import os
import time

import numpy as np
import pytest
import torch
from app_testdata import demo_backbone
from open_clip.transform import image_transform
from PIL import Image
from safetensors import safe_open

from explorer.backbones.load import load_backbone, save_backbone_weights
from explorer.data.datasets import open_dataset
from explorer.data.features import FeatureCache, Interrupted, content_key

pytestmark = pytest.mark.usefixtures("one_torch_thread")

@pytest.fixture(scope="module")
def backbone():
    return demo_backbone()  # the test process's one demo backbone (only read here)


class Events:
    """A progress callback that records (done, total) pairs."""

    def __init__(self):
        self.calls: list[tuple[int, int]] = []

    def __call__(self, done: int, total: int) -> None:
        self.calls.append((done, total))

    @property
    def total(self) -> int:
        return self.calls[0][1]


def chunk_files(cache: FeatureCache) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(cache.folder.glob("chunk-*.safetensors"))}


def unique_keys(dataset) -> list[str]:
    return list(dict.fromkeys(content_key(dataset, s) for s in dataset.samples))


def write_folder_dataset(root, counts=(2, 2, 2)) -> None:
    rng = np.random.default_rng(0)
    for rank, n in enumerate(counts):
        (root / str(rank)).mkdir(parents=True)
        for j in range(n):
            pixels = rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / str(rank) / f"img{j}.png")


def test_features_are_the_encoder_outputs_and_a_second_call_computes_nothing(backbone, tmp_path):
    dataset = open_dataset("dots:3:3")
    cache = FeatureCache(backbone, tmp_path / "cache")
    events = Events()
    feats = cache.features(dataset, dataset.samples, batch_size=5, progress=events)

    reference = backbone.encode_images([dataset.load_image(s) for s in dataset.samples])
    assert feats.shape == (len(dataset.samples), backbone.embed_dim) and feats.dtype == torch.float32
    assert torch.allclose(feats, reference, atol=1e-5)
    assert events.total == len(unique_keys(dataset)) and events.calls[-1] == (events.total, events.total)
    files = chunk_files(cache)
    assert len(files) == -(-events.total // 5)

    again = Events()  # same instance
    assert torch.equal(cache.features(dataset, dataset.samples, batch_size=5, progress=again), feats)
    fresh = Events()  # a new process would start from the files on disk
    assert torch.equal(FeatureCache(backbone, tmp_path / "cache").features(dataset, dataset.samples, progress=fresh), feats)
    assert again.calls == [(0, 0)] and fresh.calls == [(0, 0)]
    assert chunk_files(cache) == files  # nothing rewritten
    # a subset and a different order come from the same cache
    order = [5, 0, 3]
    assert torch.equal(cache.features(dataset, [dataset.samples[i] for i in order]), feats[order])


def test_a_changed_image_file_is_the_only_one_embedded_again(backbone, tmp_path):
    root = tmp_path / "faces"
    write_folder_dataset(root)
    dataset = open_dataset(f"folder:{root}")
    cache_dir = tmp_path / "cache"
    before = FeatureCache(backbone, cache_dir).features(dataset, dataset.samples)

    changed = 3
    path = dataset.image_path(dataset.samples[changed])
    Image.fromarray(np.full((40, 48, 3), 200, dtype=np.uint8)).save(path)
    events = Events()
    after = FeatureCache(backbone, cache_dir).features(dataset, dataset.samples, progress=events)

    assert events.total == 1
    assert not torch.allclose(after[changed], before[changed], atol=1e-3)
    assert torch.allclose(after[changed], backbone.encode_images([Image.open(path).convert("RGB")])[0], atol=1e-5)
    others = [i for i in range(len(dataset.samples)) if i != changed]
    assert torch.equal(after[others], before[others])


def test_an_interrupted_embedding_keeps_its_chunks_and_resumes(backbone, tmp_path):
    dataset = open_dataset("dots:3:3")
    total = len(unique_keys(dataset))
    cache = FeatureCache(backbone, tmp_path / "cache")
    events = Events()
    with pytest.raises(Interrupted, match="run again"):
        cache.features(dataset, dataset.samples, batch_size=4, progress=events,
                       should_stop=lambda: len(events.calls) > 1)  # true once the first batch is reported
    assert events.calls == [(0, total), (4, total)]
    assert len(chunk_files(cache)) == 1

    rest = Events()
    resumed = FeatureCache(backbone, tmp_path / "cache").features(dataset, dataset.samples, batch_size=4, progress=rest)
    assert rest.total == total - 4
    straight = FeatureCache(backbone, tmp_path / "other").features(dataset, dataset.samples, batch_size=4)
    assert torch.allclose(resumed, straight, atol=1e-6)


def test_the_cache_is_keyed_by_backbone_weights_and_preprocessing(backbone, tmp_path):
    dataset = open_dataset("dots:2:2")
    cache_dir = tmp_path / "cache"
    base = FeatureCache(backbone, cache_dir)
    base_feats = base.features(dataset, dataset.samples)

    perturbed = load_backbone("demo", device="cpu")
    with torch.no_grad():
        perturbed.model.visual.proj.add_(0.05 * torch.randn(perturbed.model.visual.proj.shape, generator=torch.Generator().manual_seed(0)))
    saved = save_backbone_weights(perturbed, tmp_path / "perturbed.safetensors")
    other = load_backbone(f"ordinalclip-demo@{tmp_path / 'perturbed.safetensors'}", device="cpu")
    assert other.backbone_id == saved.backbone_id != backbone.backbone_id

    other_cache = FeatureCache(other, cache_dir)
    assert other_cache.folder != base.folder
    events = Events()
    other_feats = other_cache.features(dataset, dataset.samples, progress=events)
    assert events.total == len(unique_keys(dataset))  # nothing borrowed from the demo's features
    assert not torch.allclose(other_feats, base_feats, atol=1e-3)
    assert torch.allclose(other_feats, other.encode_images([dataset.load_image(s) for s in dataset.samples]), atol=1e-5)

    # same weights, other preprocessing (e.g. other normalisation statistics): another folder
    other_norm = dataclasses.replace(backbone, preprocess=image_transform(64, is_train=False, mean=(0.5,) * 3, std=(0.5,) * 3))
    norm_cache = FeatureCache(other_norm, cache_dir)
    assert norm_cache.folder != base.folder and norm_cache.folder.parent == base.folder.parent
    events = Events()
    norm_cache.features(dataset, dataset.samples, progress=events)
    assert events.total == len(unique_keys(dataset))
    assert torch.equal(FeatureCache(backbone, cache_dir).features(dataset, dataset.samples), base_feats)


def test_damaged_chunks_and_stale_temporaries_are_handled(backbone, tmp_path):
    dataset = open_dataset("dots:3:3")
    cache = FeatureCache(backbone, tmp_path / "cache")
    feats = cache.features(dataset, dataset.samples, batch_size=4)
    chunks = sorted(cache.folder.glob("chunk-*.safetensors"))
    assert len(chunks) >= 3
    damaged = sum(len(json.loads(safe_open(str(c), "pt").metadata()["keys"])) for c in chunks[:2])
    chunks[0].write_bytes(chunks[0].read_bytes()[:-40])  # truncated
    chunks[1].write_bytes(b"\x00" * 7)  # garbage
    stale = cache.folder / "tmpdead.tmp"  # what a process killed mid-write leaves
    stale.write_bytes(b"x")
    os.utime(stale, (time.time() - 2 * 3600,) * 2)
    live = cache.folder / "tmplive.tmp"  # may belong to a writer running right now
    live.write_bytes(b"x")

    events = Events()
    again = FeatureCache(backbone, tmp_path / "cache").features(dataset, dataset.samples, batch_size=4, progress=events)
    assert events.total == damaged  # the images of the two damaged chunks, nothing else
    assert torch.allclose(again, feats, atol=1e-6)
    assert not stale.exists() and live.exists()
    events = Events()
    FeatureCache(backbone, tmp_path / "cache").features(dataset, dataset.samples, progress=events)
    assert events.total == 0  # the rewritten chunks are whole again
