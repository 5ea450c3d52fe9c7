"""The bounded backbone registry: LRU eviction, one lock per backbone, memory stays bounded."""

from __future__ import annotations

import gc
import shutil
import threading
import weakref

import pytest

from explorer.backbones.load import load_backbone
from explorer.backbones.pool import BackboneRegistry
from explorer.backbones.spec import DEMO_ARCH, DEMO_WEIGHTS
from explorer.core.errors import ExplorerError


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    """Six distinct specs of the same demo weights (copies on disk)."""
    folder = tmp_path_factory.mktemp("weights")
    paths = []
    for i in range(6):
        path = folder / f"demo-{i}.safetensors"
        shutil.copy(DEMO_WEIGHTS, path)
        paths.append(f"{DEMO_ARCH}@{path}")
    return paths


@pytest.mark.slow
def test_many_specs_in_turn_keep_memory_bounded(weight_files, one_torch_thread):
    registry = BackboneRegistry(max_entries=2)
    alive = []
    for spec in weight_files:
        backbone = registry.get(spec, "cpu", timeout=120)
        assert backbone.spec == spec
        alive.append(weakref.ref(backbone.model))
        del backbone
        assert len(registry) <= 2
    gc.collect()
    live = [ref for ref in alive if ref() is not None]
    assert len(live) == 2, f"{len(live)} backbones still in memory with max_entries=2"
    assert [s.spec for s in registry.slots()] == weight_files[-2:]


def test_recent_use_protects_a_backbone_from_eviction(weight_files, one_torch_thread):
    registry = BackboneRegistry(max_entries=2)
    first = registry.slot(weight_files[0], "cpu")
    registry.slot(weight_files[1], "cpu")
    assert registry.slot(weight_files[0], "cpu") is first  # used again: now the most recent
    registry.slot(weight_files[2], "cpu")
    assert [s.spec for s in registry.slots()] == [weight_files[0], weight_files[2]]
    for slot in registry.slots():
        slot.wait(120)


def test_each_backbone_owns_its_lock_and_errors_are_one_sentence(weight_files, one_torch_thread):
    registry = BackboneRegistry(max_entries=3)
    a, b = registry.slot(weight_files[0], "cpu"), registry.slot(weight_files[1], "cpu")
    assert a.lock is not b.lock and a.lock is registry.slot(weight_files[0], "cpu").lock
    with a.lock:  # holding one backbone's lock does not block another's
        got = threading.Event()
        threading.Thread(target=lambda: (b.lock.acquire(), got.set(), b.lock.release())).start()
        assert got.wait(5)
    missing = registry.slot("ordinalclip-demo@/no/such/file.safetensors", "cpu")
    with pytest.raises(ExplorerError, match="not found"):
        missing.wait(30)
    assert missing.details is None  # a user error: no traceback kept


def test_an_unexpected_failure_keeps_its_traceback():
    def broken_loader(spec, device=None):
        raise ZeroDivisionError("a bug")

    slot = BackboneRegistry(max_entries=1, loader=broken_loader).slot("demo")
    with pytest.raises(ExplorerError, match="unexpectedly"):
        slot.wait(10)
    assert "ZeroDivisionError" in slot.details and "Traceback" in slot.details


def test_the_registry_serves_what_load_backbone_loads(one_torch_thread):
    registry = BackboneRegistry(max_entries=1)
    assert registry.get("demo", "cpu", timeout=120).backbone_id == load_backbone("demo", device="cpu").backbone_id


def test_image_only_slots_and_the_whole_backbone_that_replaces_them(weight_files, one_torch_thread):
    registry = BackboneRegistry(max_entries=2)
    spec = weight_files[3]
    image = registry.slot(spec, "cpu", image_only=True)
    tower = image.wait(120)
    assert tower.image_only and tower.tokenizer is None and not any(
        name.startswith(("transformer.", "token_embedding")) for name in tower.model.state_dict())
    assert registry.slot(spec, "cpu", image_only=True) is image  # kept: the next image request reuses it
    whole = registry.slot(spec, "cpu")
    assert whole is not image and image.released  # a whole backbone replaces the image-only slot
    assert registry.slots() == [whole] and not whole.wait(120).image_only
    assert registry.slot(spec, "cpu", image_only=True) is whole  # ... and serves image requests from then on
    assert tower.backbone_id == whole.backbone.backbone_id
