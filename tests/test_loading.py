"""Loading without a second copy (meta device + assigned tensors), image-only backbones, remembered ids,
the image prefetch (explorer.backbones.build / sources / identity / load, explorer.core.prefetch)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from app_testdata import demo_backbone, face_image, plain_image
from safetensors.torch import save_file
from torch import nn

from explorer.backbones import identity
from explorer.backbones.build import ImageTower, assign_weights, finish, on_meta
from explorer.backbones.load import load_backbone
from explorer.backbones.spec import DEMO_ARCH
from explorer.core.errors import ExplorerError
from explorer.core.prefetch import prefetched

ROOT = Path(__file__).resolve().parents[1]
LINUX = platform.system() == "Linux"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Remembered ids go to this test's own cache folder."""
    monkeypatch.setenv("ORDINAL_EXPLORER_CACHE", str(tmp_path / "cache"))


def _old(path: Path) -> Path:
    """Make ``path`` an hour old (older than identity.RACY_SECONDS: its id may be remembered)."""
    past = time.time() - 3600
    os.utime(path, (past, past))
    return path


def _fp32_demo_file(folder: Path, name: str = "demo32.safetensors", shift: float = 0.0) -> Path:
    """The demo weights as fp32 safetensors (``shift`` added to every float: other weights, same size)."""
    state = {k: (v + shift if shift else v).contiguous() for k, v in demo_backbone().model.state_dict().items()}
    path = folder / name
    save_file(state, str(path))
    return path


def _images():
    return [face_image(160, 120), plain_image(90, 130), plain_image(64, 64, (200, 40, 10))]


def _mapping(path: Path) -> tuple[list[tuple[int, int]], int]:
    """(address ranges, resident bytes) of this process's mappings of ``path`` (/proc/self/smaps)."""
    ranges, rss, inside = [], 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5 and all(c in "0123456789abcdef-" for c in fields[0]):
            inside = line.endswith(str(path))
            if inside:
                lo, hi = (int(x, 16) for x in fields[0].split("-"))
                ranges.append((lo, hi))
        elif inside and fields[0] == "Rss:":
            rss += int(fields[1]) * 1024
    return ranges, rss


# --- image-only ---------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["safetensors", "zip pickle", "legacy pickle", "openai layout"])
def test_image_only_equals_the_whole_backbones_image_tower(tmp_path, form):
    state = {k: v.contiguous() for k, v in demo_backbone().model.state_dict().items()}
    path = tmp_path / ("w.safetensors" if form == "safetensors" else "w.pt")
    if form == "safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path, _use_new_zipfile_serialization=form != "legacy pickle")
    spec = str(path) if form == "openai layout" else f"{DEMO_ARCH}@{path}"
    whole, tower = load_backbone(spec, device="cpu"), load_backbone(spec, device="cpu", image_only=True)
    assert isinstance(tower.model, ImageTower) and tower.image_only and tower.tokenizer is None
    assert set(tower.model.state_dict()) == {k for k in whole.model.state_dict() if k.startswith("visual.")} | {"logit_scale"}
    assert tower.backbone_id == whole.backbone_id and tower.embed_dim == whole.embed_dim == 128
    assert tower.image_size == whole.image_size and tower.logit_scale == pytest.approx(whole.logit_scale)
    assert torch.equal(tower.encode_images(_images()), whole.encode_images(_images()))
    with pytest.raises(ExplorerError, match="without its text tower"):
        tower.context_length


@pytest.mark.skipif(not LINUX, reason="reads /proc/self/smaps")
def test_weights_are_the_files_pages_and_an_image_only_load_leaves_the_text_tower_unread(tmp_path):
    path = _fp32_demo_file(tmp_path)
    whole = load_backbone(f"{DEMO_ARCH}@{path}", device="cpu")
    ranges, _ = _mapping(path)
    assert ranges, "the safetensors file is memory-mapped"
    outside = [name for name, p in whole.model.named_parameters() if not any(lo <= p.data_ptr() < hi for lo, hi in ranges)]
    assert outside == []  # no copy: every weight lies in the file's mapping
    del whole  # (its mapping goes with it)

    tower = load_backbone(f"{DEMO_ARCH}@{path}", device="cpu", image_only=True)  # its id is known now
    tower.encode_images(_images())
    image_bytes = sum(p.numel() * 4 for p in tower.model.parameters())
    text_bytes = path.stat().st_size - image_bytes
    _, resident = _mapping(path)
    assert text_bytes > 5 * image_bytes  # the demo's text tower (its token embedding) dominates the file
    assert resident < image_bytes + text_bytes / 4, (resident, image_bytes, text_bytes)  # the text tower was never paged in


# --- remembered ids -----------------------------------------------------------------------------


def test_a_known_file_is_not_hashed_again_and_a_changed_one_is(tmp_path, monkeypatch):
    path = _old(_fp32_demo_file(tmp_path))
    spec = f"{DEMO_ARCH}@{path}"
    first = load_backbone(spec, device="cpu")
    assert first.backbone_id == demo_backbone().backbone_id  # fp16 file or fp32 file: same weights, same id
    assert identity.known_id(identity.file_key(f"file|{DEMO_ARCH}", [path])) == first.backbone_id

    def no_hashing(*args):
        raise AssertionError("the weights were hashed again")

    monkeypatch.setattr("explorer.backbones.load.weights_digest", no_hashing)
    assert load_backbone(spec, device="cpu", image_only=True).backbone_id == first.backbone_id
    monkeypatch.undo()
    monkeypatch.setenv("ORDINAL_EXPLORER_CACHE", str(tmp_path / "cache"))

    other = _fp32_demo_file(tmp_path, "other.safetensors", shift=1e-3)  # same size, other weights
    os.replace(other, path)
    _old(path)
    changed = load_backbone(spec, device="cpu", image_only=True)
    assert changed.backbone_id != first.backbone_id
    assert changed.backbone_id == load_backbone(spec, device="cpu").backbone_id


def test_a_file_written_just_now_is_not_remembered(tmp_path):
    path = _fp32_demo_file(tmp_path)  # its timestamp may not yet tell a rewrite in the same tick apart
    load_backbone(f"{DEMO_ARCH}@{path}", device="cpu")
    assert identity.known_id(identity.file_key(f"file|{DEMO_ARCH}", [path])) is None
    (tmp_path / "cache").mkdir(exist_ok=True)
    (tmp_path / "cache" / identity.ID_FILE).write_text("{not json")  # a damaged cache is ignored
    assert load_backbone(f"{DEMO_ARCH}@{_old(path)}", device="cpu").backbone_id == demo_backbone().backbone_id


# --- building on the meta device ----------------------------------------------------------------


class _Tower(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 3)
        self.register_buffer("scale", torch.arange(1.0, 4.0), persistent=False)  # not in a state dict
        self.offset = torch.full((3,), 0.5)  # a plain tensor attribute


class _Clip(nn.Module):
    """The parts of a CLIP that finish() looks at."""

    def __init__(self):
        super().__init__()
        self.visual = _Tower()
        self.text_projection = nn.Parameter(torch.randn(5, 3))
        self.logit_scale = nn.Parameter(torch.tensor(4.6))
        self.register_buffer("attn_mask", torch.full((6, 6), float("-inf")).triu_(1), persistent=False)


def test_finish_rebuilds_what_a_state_dict_lacks_and_names_a_missing_weight():
    torch.manual_seed(0)
    real = _Clip()
    model = on_meta(_Clip)
    assign_weights(model, real.state_dict())
    model = finish(model, _Clip, False, "tiny.safetensors")
    assert torch.equal(model.attn_mask, real.attn_mask) and torch.equal(model.visual.scale, real.visual.scale)
    assert torch.equal(model.visual.offset, real.visual.offset)
    assert model.visual.proj.weight.data_ptr() == real.visual.proj.weight.data_ptr()  # assigned, not copied

    tower = on_meta(_Clip)
    assign_weights(tower, {k: v for k, v in real.state_dict().items() if k != "text_projection"}, image_only=True)
    assert set(finish(tower, _Clip, True, "tiny").state_dict()) == {"visual.proj.weight", "visual.proj.bias", "logit_scale"}

    broken = on_meta(_Clip)
    assign_weights(broken, {k: v for k, v in real.state_dict().items() if k != "visual.proj.bias"}, strict=False)
    with pytest.raises(ExplorerError, match=r"tiny.safetensors lacks weights the architecture needs \(visual.proj.bias\)"):
        finish(broken, _Clip, False, "tiny.safetensors")


# --- images prepared while the previous batch runs ----------------------------------------------


def test_prefetch_keeps_order_stays_one_ahead_and_raises_in_place():
    made = []

    def items():
        for i in range(6):
            made.append(i)
            yield i

    seen = []
    for item in prefetched(items()):
        time.sleep(0.02)
        assert len(made) <= item + 3  # at most the queued item and the one being made
        seen.append(item)
    assert seen == list(range(6))

    def failing():
        yield 1
        raise ExplorerError("bad.png is not an image")

    out = prefetched(failing())
    assert next(out) == 1
    with pytest.raises(ExplorerError, match="bad.png"):
        next(out)

    gone = threading.Event()

    def endless():
        try:
            while True:
                yield 0
        finally:
            gone.set()

    stream = prefetched(endless())
    next(stream)
    stream.close()  # the consumer leaves: the producer stops
    assert gone.wait(5)


def test_encode_images_from_openers_and_batches_equals_pil_images():
    backbone = demo_backbone()
    images = [face_image(100 + 10 * i, 90) for i in range(7)]
    opened = []
    openers = [lambda im=im: opened.append(1) or im for im in images]
    same_batches = backbone.encode_images(images, batch_size=3)  # (other batch sizes: float noise)
    assert torch.equal(backbone.encode_images(openers, batch_size=3), same_batches) and len(opened) == 7
    torch.testing.assert_close(same_batches, backbone.encode_images(images), atol=1e-5, rtol=1e-4)


def test_predict_reads_the_image_tower_alone(tmp_path, monkeypatch, capsys):
    from explorer.backbones import load
    from explorer.cli import main

    image = tmp_path / "face.png"
    face_image(200, 160).save(image)
    path = _old(_fp32_demo_file(tmp_path))
    ckpt = ROOT / "checkpoints" / "ordinalclip-linear.safetensors"
    load_backbone(f"{DEMO_ARCH}@{path}", device="cpu")  # the file's id is known from now on
    reads = []
    real = load.read_backbone
    monkeypatch.setattr(load, "read_backbone", lambda parsed, image_only, *a: reads.append(image_only) or real(parsed, image_only, *a))
    assert main(["predict", str(ckpt), str(image), "--backbone", f"{DEMO_ARCH}@{path}", "--json"]) == 0
    assert reads == [True]  # one read, of the image tower
    assert '"expected_value"' in capsys.readouterr().out


@pytest.mark.slow
def test_predict_imports_nothing_the_answer_does_not_need(tmp_path):
    image = tmp_path / "face.png"
    face_image(200, 160).save(image)
    ckpt = ROOT / "checkpoints" / "ordinalclip-linear.safetensors"
    code = ("import sys\nfrom explorer.cli import main\n"
            f"assert main(['predict', {str(ckpt)!r}, {str(image)!r}]) == 0\n"
            "print(sorted(m.split('.')[0] for m in sys.modules))\n")
    env = {**os.environ, "ORDINAL_EXPLORER_CACHE": str(tmp_path / "cache")}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    modules = set(eval(run.stdout.strip().splitlines()[-1]))
    for heavy in ("sklearn", "umap", "pandas", "plotly", "streamlit", "cv2", "onnxruntime", "scipy", "matplotlib"):
        assert heavy not in modules, heavy
