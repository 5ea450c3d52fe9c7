"""Backbone loading: the shipped demo, the open_clip zoo offline, local weight files, devices.

Everything here is offline: real open_clip models with the demo's seeded weights or seeded random
weights, no mocks. Zoo tests point the hub at unreachable endpoints (a closed local port, an
``.invalid`` host) so they fail fast everywhere without ever downloading.
"""

from __future__ import annotations

import copy
import math
import os
import pickle
import re
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from open_clip.model import CLIP
from PIL import Image

from explorer.backbones.load import load_backbone, resolve_device
from explorer.backbones.sources import DEMO_CONFIG
from explorer.backbones.torchfiles import read_torchscript_tensors, read_weight_file
from explorer.core.errors import ExplorerError

ZOO_SPEC = "ViT-B-32:laion2b_s34b_b79k"




@pytest.fixture(scope="module")
def demo():
    return load_backbone("demo", device="cpu")


def _quickgelu_demo_arch(seed: int) -> CLIP:
    """The demo architecture with OpenAI's QuickGELU (what shape inference assumes), seeded weights."""
    torch.manual_seed(seed)
    cfg = DEMO_CONFIG
    model = CLIP(cfg["embed_dim"], cfg["vision_cfg"], cfg["text_cfg"], quick_gelu=True)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(100.0))
    return model.eval()


@pytest.fixture(scope="module")
def quickgelu_model():
    return _quickgelu_demo_arch(seed=1234)


@pytest.fixture(scope="module")
def probe_inputs():
    tokens = open_clip.get_tokenizer("ViT-B-16")(["a photo of a 25 year old person.", "an old black and white photo", "x"])
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    return tokens, images


def _features(model, tokens, images):
    with torch.no_grad():
        return model.encode_text(tokens).float(), model.encode_image(images).float()


# --- demo ---------------------------------------------------------------------------------------


def test_demo_loads_offline_with_expected_shapes(demo):
    assert demo.is_demo and demo.arch == "ordinalclip-demo"
    assert demo.embed_dim == 128
    assert demo.image_size == 64
    assert demo.context_length == 77
    assert demo.device == torch.device("cpu")
    assert demo.logit_scale == pytest.approx(100.0, rel=1e-3)  # log(100) stored in fp16
    assert not any(p.requires_grad for p in demo.model.parameters())
    assert not demo.model.training


def test_demo_backbone_id_is_stable_and_well_formed(demo):
    assert re.fullmatch(r"ordinalclip-demo@[0-9a-f]{16}", demo.backbone_id)
    again = load_backbone("demo", device="cpu")
    assert again.backbone_id == demo.backbone_id
    for (k, a), (k2, b) in zip(demo.model.state_dict().items(), again.model.state_dict().items()):
        assert k == k2 and torch.equal(a, b)


def test_demo_encode_images_unit_norm_and_any_pil_mode(demo):
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (80, 100, 3), dtype=np.uint8))
    grey = Image.fromarray(rng.integers(0, 256, (50, 60), dtype=np.uint8))
    rgba = Image.fromarray(rng.integers(0, 256, (70, 70, 4), dtype=np.uint8))
    assert (grey.mode, rgba.mode) == ("L", "RGBA")
    feats = demo.encode_images([rgb, grey, rgba], batch_size=2)  # two batches
    assert feats.shape == (3, 128) and feats.dtype == torch.float32
    torch.testing.assert_close(feats.norm(dim=-1), torch.ones(3), atol=1e-5, rtol=0)
    # Same as open_clip's own path on the preprocessed tensors (preprocess makes every mode RGB).
    batch = torch.stack([demo.preprocess(im) for im in (rgb, grey, rgba)])
    assert batch.shape == (3, 3, 64, 64)
    with torch.no_grad():
        ref = torch.nn.functional.normalize(demo.model.encode_image(batch), dim=-1)
    torch.testing.assert_close(feats, ref, atol=1e-5, rtol=0)
    # A preprocessed batch is accepted as is; an empty list gives 0 x E.
    torch.testing.assert_close(demo.encode_images(batch), ref, atol=1e-5, rtol=0)
    assert demo.encode_images([]).shape == (0, 128)


# --- open_clip zoo, offline -----------------------------------------------------------------------


def _assert_helpful_zoo_error(message: str) -> None:
    assert ZOO_SPEC in message
    assert "ViT-B-32@/path/to/weights" in message  # how to pass a local file
    assert "cache" in message


def test_zoo_fails_fast_with_hf_hub_offline(tmp_path):
    start = time.monotonic()
    with pytest.raises(ExplorerError) as err:
        load_backbone(ZOO_SPEC, device="cpu", cache_dir=str(tmp_path))
    assert time.monotonic() - start < 2.0
    _assert_helpful_zoo_error(str(err.value))


@pytest.mark.parametrize(
    "endpoint",
    ["https://huggingface-unreachable.invalid", "http://127.0.0.1:9"],
    ids=["dns-failure", "connection-refused"],
)
def test_zoo_fails_fast_without_offline_flag(monkeypatch, tmp_path, endpoint):
    """Without HF_HUB_OFFLINE the hub is probed: an unreachable hub must fail within ~2.5 s."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)  # huggingface_hub honours it too (make test sets it)
    monkeypatch.setenv("HF_ENDPOINT", endpoint)  # never the real hub: no download, ever
    start = time.monotonic()
    with pytest.raises(ExplorerError) as err:
        load_backbone(ZOO_SPEC, device="cpu", cache_dir=str(tmp_path))
    assert time.monotonic() - start < 2.5
    _assert_helpful_zoo_error(str(err.value))
    assert "cannot be reached" in str(err.value)


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("ViT-B-99:openai", "no architecture 'ViT-B-99'"),
        ("ViT-B-32:no_such_tag", "no pretrained tag 'no_such_tag'"),
        ("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "ARCH@/path/to/open_clip_model.safetensors"),
        ("not-a-backbone", "neither 'demo'"),
        ("", "No backbone"),
    ],
)
def test_unknown_zoo_specs_are_explained(spec, fragment):
    with pytest.raises(ExplorerError) as err:
        load_backbone(spec, device="cpu")
    assert fragment in str(err.value)


# --- local files ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_openai_layout_fp32_state_dict_infers_architecture(tmp_path, quickgelu_model, probe_inputs):
    path = tmp_path / "model.pt"
    torch.save(quickgelu_model.state_dict(), path)
    bb = load_backbone(str(path), device="cpu")
    assert re.fullmatch(r"ViT-w128-p8-l4@[0-9a-f]{16}", bb.backbone_id)
    assert bb.config["quick_gelu"] is True and bb.embed_dim == 128 and bb.image_size == 64
    # Every weight arrives exactly (no silent fp16 rounding of an fp32 file).
    loaded = bb.model.state_dict()
    for key, value in quickgelu_model.state_dict().items():
        assert torch.equal(loaded[key], value), key
    text, image = _features(bb.model, *probe_inputs)
    ref_text, ref_image = _features(quickgelu_model, *probe_inputs)
    torch.testing.assert_close(text, ref_text, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(image, ref_image, atol=1e-5, rtol=1e-5)
    # The same file through a 'module.'-prefixed Lightning-style wrapper gives the same id.
    wrapped = tmp_path / "wrapped.ckpt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in quickgelu_model.state_dict().items()}}, wrapped)
    assert load_backbone(str(wrapped), device="cpu").backbone_id == bb.backbone_id


def test_openai_layout_fp16_state_dict_like_openai(tmp_path, quickgelu_model, probe_inputs):
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in quickgelu_model.state_dict().items()}
    path = tmp_path / "model-fp16.pt"
    torch.save(half, path)
    bb = load_backbone(str(path), device="cpu")
    assert all(v.dtype == torch.float32 for v in bb.model.state_dict().values() if v.is_floating_point())
    # Reference: the same architecture holding the fp16-rounded weights in fp32.
    ref_model = _quickgelu_demo_arch(seed=0)
    ref_model.load_state_dict({k: v.float() for k, v in half.items()})
    text, image = _features(bb.model, *probe_inputs)
    ref_text, ref_image = _features(ref_model, *probe_inputs)
    torch.testing.assert_close(text, ref_text, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(image, ref_image, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_demo_weights_in_openai_layout_load_as_quickgelu_clip(tmp_path, demo, probe_inputs):
    """The demo's state dict (OpenAI key names) infers the demo shapes; inference assumes QuickGELU."""
    path = tmp_path / "demo-openai.pt"
    torch.save(demo.model.state_dict(), path)
    bb = load_backbone(str(path), device="cpu")
    for key, value in demo.model.state_dict().items():
        assert torch.equal(bb.model.state_dict()[key], value), key
    ref = _quickgelu_demo_arch(seed=0)
    ref.load_state_dict(demo.model.state_dict())
    text, image = _features(bb.model, *probe_inputs)
    ref_text, ref_image = _features(ref, *probe_inputs)
    torch.testing.assert_close(text, ref_text, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(image, ref_image, atol=1e-5, rtol=1e-5)
    # ... which is why these features are not the (GELU) demo's own.
    demo_text, _ = _features(demo.model, *probe_inputs)
    assert (text - demo_text).abs().max() > 1e-3


def test_same_weights_same_id_across_file_formats(tmp_path, quickgelu_model):
    from safetensors.torch import save_file

    sd = {k: v.contiguous() for k, v in quickgelu_model.state_dict().items()}
    st = tmp_path / "weights.safetensors"
    save_file(sd, str(st))
    pt = tmp_path / "weights.pt"
    torch.save(sd, pt)
    # Same weights, two formats: same id (the id hashes the weights as loaded, not the file).
    assert load_backbone(str(st), device="cpu").backbone_id == load_backbone(str(pt), device="cpu").backbone_id


@pytest.mark.slow
def test_torchscript_archive_read_without_torch_jit_load(tmp_path, quickgelu_model, probe_inputs):
    tokens, images = probe_inputs
    with warnings.catch_warnings():  # torch.jit.trace is deprecated; still what OpenAI's files are
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(quickgelu_model, (images, tokens), check_trace=False)
    path = tmp_path / "ViT-traced.pt"
    traced.save(str(path))
    with zipfile.ZipFile(path) as zf:
        assert any("/code/__torch__" in n for n in zf.namelist())

    tensors = read_torchscript_tensors(path)
    expected = quickgelu_model.state_dict()
    assert set(expected) <= set(tensors)
    # TorchScript keeps the non-persistent causal mask buffer too (as torch.jit.load().state_dict() does).
    assert set(tensors) - set(expected) <= {"attn_mask"}
    for key, value in expected.items():
        assert tensors[key].dtype == value.dtype and torch.equal(tensors[key], value), key
    assert read_weight_file(path).keys() == tensors.keys()

    bb = load_backbone(str(path), device="cpu")
    plain = tmp_path / "plain.pt"
    torch.save(expected, plain)
    assert bb.backbone_id == load_backbone(str(plain), device="cpu").backbone_id
    text, image = _features(bb.model, tokens, images)
    ref_text, ref_image = _features(quickgelu_model, tokens, images)
    torch.testing.assert_close(text, ref_text, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(image, ref_image, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_torchscript_archive_with_fp16_weights(tmp_path, quickgelu_model, probe_inputs):
    tokens, images = probe_inputs
    half_model = copy.deepcopy(quickgelu_model).half()  # a traced module shares its parameters
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(half_model, (images.half(), tokens), check_trace=False)
    path = tmp_path / "fp16-traced.pt"
    traced.save(str(path))
    tensors = read_torchscript_tensors(path)
    assert tensors["visual.conv1.weight"].dtype == torch.float16
    for key, value in quickgelu_model.state_dict().items():
        torch.testing.assert_close(tensors[key].float(), value.half().float(), atol=0, rtol=0)


class _Payload:
    """Unpickling this would create a file (standing in for arbitrary code execution)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class _SystemPayload:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


@pytest.mark.parametrize("payload_cls", [_Payload, _SystemPayload], ids=["builtins.open", "os.system"])
def test_malicious_pickle_is_refused_and_not_executed(tmp_path, payload_cls):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"visual.proj": torch.zeros(2), "evil": payload_cls(marker)}, path)
    assert not marker.exists()
    with pytest.raises(ExplorerError) as err:
        load_backbone(str(path), device="cpu")
    assert "evil.pt" in str(err.value) and "refused" in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("payload_cls", [_Payload, _SystemPayload], ids=["builtins.open", "os.system"])
def test_malicious_torchscript_lookalike_is_refused_and_not_executed(tmp_path, payload_cls):
    """A zip shaped like a TorchScript archive goes to the restricted unpickler: it must refuse too."""
    marker = tmp_path / "pwned"
    path = tmp_path / "evil-script.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/code/__torch__/model.py", "class CLIP(Module):\n  pass\n")
        zf.writestr("archive/data.pkl", pickle.dumps({"weight": payload_cls(marker)}, protocol=2))
    with pytest.raises(ExplorerError) as err:
        load_backbone(str(path), device="cpu")
    assert "could not be read safely" in str(err.value)
    assert not marker.exists()


def test_corrupt_and_truncated_files_are_refused(tmp_path, quickgelu_model):
    from safetensors.torch import save_file

    good = tmp_path / "good.safetensors"
    save_file({k: v.contiguous() for k, v in quickgelu_model.state_dict().items()}, str(good))
    data = good.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01not a safetensors file at all")
    pt = tmp_path / "truncated.pt"
    torch.save(quickgelu_model.state_dict(), pt)
    pt.write_bytes(pt.read_bytes()[:5000])
    not_tensors = tmp_path / "list.pt"
    torch.save([1, 2, 3], not_tensors)
    for bad in (truncated, garbage, pt, not_tensors):
        with pytest.raises(ExplorerError) as err:
            load_backbone(str(bad), device="cpu")
        assert bad.name in str(err.value)


@pytest.mark.slow
def test_arch_at_path_with_wrong_architecture(tmp_path, demo):
    path = tmp_path / "demo.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in demo.model.state_dict().items()}, str(path))
    with pytest.raises(ExplorerError) as err:
        load_backbone(f"ViT-B-32@{path}", device="cpu")
    assert "does not fit the ViT-B-32 architecture" in str(err.value)
    with pytest.raises(ExplorerError) as err:
        load_backbone(f"NoSuchArch@{path}", device="cpu")
    assert "no architecture 'NoSuchArch'" in str(err.value)


def test_state_dict_without_openai_layout_needs_arch(tmp_path):
    path = tmp_path / "head.pt"
    torch.save({"weight": torch.zeros(3, 4)}, path)
    with pytest.raises(ExplorerError) as err:
        load_backbone(str(path), device="cpu")
    assert "ARCH@PATH" in str(err.value)


def test_missing_files(tmp_path):
    for spec in (str(tmp_path / "nope.pt"), f"ViT-B-16@{tmp_path / 'nope.safetensors'}", "missing.safetensors"):
        with pytest.raises(ExplorerError) as err:
            load_backbone(spec, device="cpu")
        assert "not found" in str(err.value)


# --- devices --------------------------------------------------------------------------------------


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device(None).type == expected
    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
    else:
        with pytest.raises(ExplorerError) as err:
            resolve_device("cuda")
        assert "--device cpu" in str(err.value)
        with pytest.raises(ExplorerError):
            load_backbone("demo", device="cuda")


def test_demo_arch_at_path_round_trips_to_the_demo_id(tmp_path, demo):
    path = tmp_path / "demo-copy.pt"
    torch.save(demo.model.state_dict(), path)
    bb = load_backbone(f"ordinalclip-demo@{path}", device="cpu")
    assert bb.is_demo and bb.backbone_id == demo.backbone_id
    # One changed weight changes the id.
    sd = demo.model.state_dict()
    sd["ln_final.bias"] = sd["ln_final.bias"] + 1e-3
    torch.save(sd, path)
    assert load_backbone(f"ordinalclip-demo@{path}", device="cpu").backbone_id != demo.backbone_id
