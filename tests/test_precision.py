"""Precision as a setting (explorer.backbones.precision): native bf16 detection, bf16 against fp32 on the
same images, the feature cache per precision, --precision on the command line."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
import pytest
import torch
from app_testdata import demo_backbone

from explorer.backbones.load import load_backbone
from explorer.backbones.precision import native_cpu_bf16, resolve_precision
from explorer.cli import main
from explorer.core.errors import ExplorerError
from explorer.data.datasets import open_dataset
from explorer.data.features import FeatureCache, preprocess_id
from explorer.store.checkpoints import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ("ordinalclip-linear", "ordinalclip-normal", "coop", "zero-shot", "numclip")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def native_here() -> bool:
    """Read apart from the module under test: x86-64 Linux with AVX512_BF16 or AMX-BF16 in /proc/cpuinfo."""
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        return False
    flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("flags")), [])
    return "avx512_bf16" in flags or "amx_bf16" in flags


@pytest.fixture(scope="module")
def bf16():
    return load_backbone("demo", device="cpu", precision="bf16")


@pytest.fixture(scope="module")
def photos():
    import face_photos as fp

    return [fp.photo(name) for name in ("astronaut", "camera", "coffee", "chelsea", "rocket", "coins")] + \
        [crop for _, crop, *_ in fp.tight_crops()[:10]]


# --- detection ----------------------------------------------------------------------------------


@pytest.mark.parametrize("system,machine,flags,native", [
    ("Linux", "x86_64", {"avx2", "avx512f", "avx512_bf16"}, True),
    ("Linux", "x86_64", {"avx2", "amx_tile", "amx_bf16"}, True),
    ("Linux", "x86_64", {"avx", "avx2", "fma"}, False),  # this machine: AVX2 only, bf16 emulated
    ("Linux", "x86_64", {"avx512f", "avx512bw"}, False),  # AVX-512 without its bf16 extension
    ("Linux", "aarch64", {"bf16", "asimd"}, False),  # ARM Linux: not trusted (unmeasured)
    ("Darwin", "arm64", {"FEAT_BF16"}, False),  # Apple M2+: fp32 goes through Accelerate, faster
    ("Windows", "AMD64", {"avx512_bf16"}, False),  # no flag source there: conservative
])
def test_native_bf16_is_read_from_the_cpu_flags(system, machine, flags, native):
    assert native_cpu_bf16(system, machine, flags) is native


def test_requests_resolve_per_device_and_bf16_is_never_a_silent_fp32(monkeypatch):
    monkeypatch.delenv("ORDINAL_EXPLORER_PRECISION", raising=False)  # the suite pins auto to fp32 (conftest.py)
    cpu = torch.device("cpu")
    auto = resolve_precision("auto", cpu)
    assert auto.name == ("bf16" if native_here() else "fp32") and auto.requested == "auto"
    assert auto.label == ("bf16 on this CPU" if native_here() else "fp32")
    assert resolve_precision(None, cpu).name == resolve_precision("fp32", cpu).name == "fp32"
    asked = resolve_precision("bf16", cpu)
    assert asked.name == "bf16" and asked.native is native_here()
    assert ("emulated" in asked.sentence() and "slower" in asked.sentence()) is not native_here()
    assert asked.label == ("bf16 on this CPU" if native_here() else "bf16 (emulated: slow)")
    with pytest.raises(ExplorerError, match="Unknown precision 'fp16'; choose auto, fp32 or bf16"):
        resolve_precision("fp16", cpu)
    with pytest.raises(ExplorerError, match="not on meta"):
        resolve_precision("bf16", torch.device("meta"))


# --- bf16 against fp32 --------------------------------------------------------------------------


def test_bf16_features_and_predictions_match_fp32(bf16, photos):
    fp32 = demo_backbone()
    a, b = fp32.encode_images(photos), bf16.encode_images(photos)
    assert b.dtype == torch.float32 and bf16.precision.name == "bf16"
    assert not torch.equal(a, b)  # bf16 did run
    assert torch.nn.functional.cosine_similarity(a, b).min() >= 0.999
    for name in BUNDLED:
        predictor = load_checkpoint(ROOT / "checkpoints" / f"{name}.safetensors").predictor()
        (pa, va), (pb, vb) = predictor.outputs(a), predictor.outputs(b)
        assert np.abs(pa - pb).max() <= 0.02, name
        assert np.abs(va - vb).max() <= 0.5, name  # label units (dots, years ...)


def test_a_cache_built_in_fp32_is_not_read_by_a_bf16_run(bf16, tmp_path):
    fp32 = demo_backbone()
    dataset = open_dataset("dots:4:3:11")
    samples = dataset.samples
    made = FeatureCache(fp32, tmp_path).features(dataset, samples)
    assert len(FeatureCache(fp32, tmp_path)) == len(samples)  # read back in fp32
    other = FeatureCache(bf16, tmp_path)
    assert other.folder != FeatureCache(fp32, tmp_path).folder and len(other) == 0
    todo = []
    feats = other.features(dataset, samples, progress=lambda done, total: todo.append(total))
    assert todo[0] == len(samples) and not torch.equal(feats, made)  # every image embedded again, in bf16
    torch.testing.assert_close(feats, bf16.encode_images([dataset.load_image(s) for s in samples]))
    import hashlib

    assert preprocess_id(fp32) == hashlib.blake2b(repr(fp32.preprocess).encode(), digest_size=6).hexdigest()  # fp32 keys as before


def test_cli_precision_bf16_is_said_once_and_predicts_like_fp32(capsys, tmp_path):
    from PIL import Image

    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (80, 60, 3), dtype=np.uint8)).save(image)
    ckpt = ROOT / "checkpoints" / "ordinalclip-linear.safetensors"
    runs = {}
    for precision in ("fp32", "bf16"):
        capsys.readouterr()
        assert main(["predict", str(ckpt), str(image), "--json", "--precision", precision, "--device", "cpu"]) == 0
        cap = capsys.readouterr()
        runs[precision] = json.loads(cap.out)
        lines = cap.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"precision: {precision}"), cap.err
    assert ("emulated" in lines[0]) is not native_here()
    assert abs(runs["bf16"]["expected_value"] - runs["fp32"]["expected_value"]) <= 0.5


@pytest.mark.parametrize("precision, amp, step_dtype", [("bf16", True, torch.bfloat16), ("bf16", False, torch.float32),
                                                        ("fp32", True, torch.float32)])
def test_a_training_step_computes_in_the_runs_precision(tmp_path, precision, amp, step_dtype):
    """The text tower's forward in a training step is bf16 exactly when the run's precision is bf16 and amp is on;
    evaluation stays fp32, and what is learned and stored is fp32 (master weights)."""
    from safetensors import safe_open

    from explorer.training.config import TrainConfig
    from explorer.training.trainer import train

    backbone = load_backbone("demo", device="cpu", precision=precision)
    seen: list[tuple[bool, torch.dtype]] = []
    last = backbone.model.transformer.resblocks[-1].mlp.c_proj  # the text tower's last layer
    hook = last.register_forward_hook(lambda module, args, out: seen.append((torch.is_grad_enabled(), out.dtype)))
    try:
        config = TrainConfig(dataset="dots:4:6", out=str(tmp_path / "run.safetensors"), epochs=1, batch_size=8, device="cpu",
                             method_config={"method": "ordinalclip", "num_context_tokens": 4}, cache_dir=str(tmp_path / "cache"),
                             precision=precision, amp=amp)
        result = train(config, backbone=backbone)
    finally:
        hook.remove()
    assert {dtype for grad, dtype in seen if grad} == {step_dtype}  # the training steps
    assert {dtype for grad, dtype in seen if not grad} == {torch.float32}  # validation and test prototypes
    with safe_open(str(result.checkpoint), framework="pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float32}
    training = load_checkpoint(result.checkpoint).meta["training"]
    assert (training["feature_precision"], training["step_precision"]) == (precision, "bf16" if step_dtype == torch.bfloat16 else "fp32")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_bf16_forward_projects_each_attention_input_in_one_matrix_product(precision):
    """Under bf16 a loaded backbone's attentions get their input laid out for one matrix product (a transposed
    input with a frozen weight ran as one product per position, copying the weight each time: a ViT-B image
    tower 3-3.5x slower than fp32, benchmarks/README.md); fp32 keeps torch's fused attention; no number changes."""
    import copy

    import torch.nn.functional as F
    from torch.profiler import ProfilerActivity, profile

    backbone = load_backbone("demo", device="cpu", precision=precision)
    pixels = torch.rand(4, 3, backbone.image_size, backbone.image_size, generator=torch.Generator().manual_seed(0))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        feats = backbone.encode_images(pixels)
    ops = {event.key for event in prof.key_averages()}
    if precision == "bf16":
        assert "aten::addmm" in ops and "aten::bmm" not in ops, sorted(ops)
    else:
        assert "aten::_native_multi_head_attention" in ops, sorted(ops)
    plain = copy.deepcopy(backbone.model)
    for module in plain.modules():
        module._forward_pre_hooks.clear()
    with torch.no_grad(), backbone.precision.autocast():
        reference = F.normalize(plain.encode_image(pixels).float(), dim=-1)
    assert torch.equal(feats, reference)
