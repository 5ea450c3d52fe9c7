"""The method contract, over every registered method: the five built-ins and the installable example
(examples/median_method, installed here into a temporary folder and found through its entry point).

Each method is built, trained one epoch, saved, loaded, rebuilt and asked to predict; its checkpoint is
exported to ONNX and onnxruntime gives the same answer (probs 1e-4, value 1e-3); the lab and token
decoding run exactly for the methods that implement their hooks. Registration refuses what breaks the
contract in one sentence, and a broken plug-in leaves the rest usable.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from app_testdata import demo_backbone
from example_plugin import EXAMPLE, ROOT, install_example

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from explorer import methods  # noqa: E402
from explorer.analysis import decode, lab  # noqa: E402
from explorer.core.errors import ExplorerError  # noqa: E402
from explorer.core.ranks import Ranks  # noqa: E402
from explorer.data.datasets import open_dataset  # noqa: E402
from explorer.methods import get_method, make_config, method_names  # noqa: E402
from explorer.methods.hooks import offers  # noqa: E402
from explorer.predict.onnx_runtime import load_onnx  # noqa: E402
from explorer.store.checkpoints import load_checkpoint  # noqa: E402
from explorer.store.onnx_export import export_onnx  # noqa: E402
from explorer.training.config import TrainConfig  # noqa: E402
from explorer.training.trainer import train  # noqa: E402

DATA = "dots:5:6"  # ranks 0..5 dots, 6 images each
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="class")
def example_installed(tmp_path_factory):
    """The example distribution on sys.path for one class of tests (then gone again)."""
    target = install_example(tmp_path_factory.mktemp("plugin") / "site")
    sys.path.insert(0, str(target))
    methods.refresh()
    yield target
    sys.path.remove(str(target))
    sys.modules.pop("median_method", None)
    methods.refresh()


@pytest.fixture(scope="module")
def demo():
    return demo_backbone()


def _config(name: str):
    """Small settings: 3 context tokens for the methods that learn them, NumCLIP's dots concepts."""
    fields = get_method(name).config_class.__dataclass_fields__
    settings = {"num_context_tokens": 3} if "num_context_tokens" in fields else {}
    if "concepts" in fields:
        settings.update(concepts="dots", context_init="")
    return make_config(name, **settings)


def _train_one_epoch(name: str, folder: Path) -> Path:
    config = TrainConfig(dataset=DATA, out=str(folder / f"{name}.safetensors"), method_config=_config(name), epochs=1,
                         batch_size=8, cache_dir=str(folder / "cache"), device="cpu")
    return train(config).checkpoint


def _pixels(n: int = 6) -> torch.Tensor:
    return torch.randn(n, 3, 64, 64, generator=torch.Generator().manual_seed(5))


def _assert_export_parity(ckpt, backbone, folder: Path) -> None:
    path = export_onnx(ckpt, folder / f"{ckpt.name}.onnx", backbone=backbone)
    onnx = load_onnx(path)
    assert onnx.meta["estimate"] == ckpt.predictor().estimate and onnx.meta["method"] == (ckpt.method_name or "prototypes")
    pixels = _pixels()
    want = ckpt.predictor().predict(backbone.encode_images(pixels))
    probs, value = onnx.run(pixels.numpy())
    np.testing.assert_allclose(probs, want.probs, atol=1e-4)
    np.testing.assert_allclose(value, want.value, atol=1e-3)


def _assert_lab_where_offered(ckpt, method, backbone) -> None:
    if not (ckpt.content == "full" and offers(method, "lab")):
        with pytest.raises(ExplorerError, match="interpolation lab needs"):
            lab.require_lab(method if ckpt.content == "full" else get_method("coop"))
        return
    options = lab.lab_options(method, ckpt.method_config)
    model = ckpt.build_model(backbone)
    same = lab.recompute(model, options.scheme, options.bandwidth)  # the trained setting: the stored prototypes
    np.testing.assert_allclose(same.prototypes, ckpt.prototypes.matrix.numpy(), atol=1e-5)
    other = lab.recompute(model, [s for s in options.schemes if s != options.scheme][0], 2.0, num_base_ranks=2)
    assert other.resampled and np.allclose(np.linalg.norm(other.prototypes, axis=1), 1.0, atol=1e-5)


def _assert_decoding_where_offered(ckpt, method, backbone) -> None:
    decoded = decode.decode_checkpoint(ckpt, backbone, top=2)
    has_tokens = ckpt.content == "full" and offers(method, "decode") and bool(ckpt.method_tensors())
    assert decode.has_learned_tokens(ckpt) == has_tokens
    if has_tokens:
        assert decoded["message"] is None and [r["label"] for r in decoded["ranks"]] == list(ckpt.classes.labels)
        assert all(len(r["tokens"][0]) == 2 for r in decoded["ranks"])
    else:
        assert decoded["message"] and decoded["ranks"] == [] and decoded["context"] == []


@pytest.mark.usefixtures("example_installed")
class TestEveryRegisteredMethod:
    """With the example installed: every method registered, built-ins and plug-in."""

    def test_the_example_is_found_through_its_entry_point(self):
        assert EXAMPLE in method_names() and EXAMPLE not in methods.REGISTRY
        method = get_method(EXAMPLE)
        assert method.__module__ == "median_method" and offers(method, "lab") and offers(method, "decode")

    @pytest.mark.slow
    @pytest.mark.parametrize("name", [*methods.REGISTRY, EXAMPLE])
    def test_every_method_honours_the_contract(self, name, demo, tmp_path):
        method = get_method(name)
        ckpt = load_checkpoint(_train_one_epoch(name, tmp_path), backbone=demo)
        feats = demo.encode_images(_pixels())
        stored = ckpt.predictor()
        probs, values = stored.outputs(feats)
        assert probs.shape == (6, len(ckpt.classes)) and np.allclose(probs.sum(axis=1), 1.0)
        pred = stored.predict(feats)
        np.testing.assert_allclose(pred.value, values, atol=1e-9)
        assert pred.estimate == stored.estimate and pred.record(0)["estimate"] == stored.estimate
        if ckpt.content == "full":  # rebuilt from the stored learner: the same answer as the stored tensors
            rebuilt = ckpt.build_model(demo)
            assert type(rebuilt) is method
            again = rebuilt.predictor().outputs(feats)
            np.testing.assert_allclose(again[0], probs, atol=1e-5)
            np.testing.assert_allclose(again[1], values, atol=1e-4)
        _assert_export_parity(ckpt, demo, tmp_path)
        _assert_lab_where_offered(ckpt, method, demo)
        _assert_decoding_where_offered(ckpt, method, demo)

    @pytest.mark.parametrize("quantile", [0.5, 0.2])
    def test_the_estimate_is_the_quantile_of_the_distribution(self, demo, quantile):
        ranks = Ranks.integers(7)
        config = make_config(EXAMPLE, num_ranks=7, num_context_tokens=2, quantile=quantile)
        pred = get_method(EXAMPLE).build(demo, config, ranks, seed=0).predictor().predict(demo.encode_images(_pixels(8)))
        cdf = np.cumsum(pred.probs, axis=1)  # smallest rank whose CDF reaches the quantile, in float64 here
        np.testing.assert_allclose(pred.value, ranks.value_array[np.argmax(cdf >= quantile, axis=1)])
        assert pred.estimate == ("median" if quantile == 0.5 else "quantile 0.2") and not np.allclose(pred.value, pred.expected_value)


@pytest.mark.slow
def test_the_installed_example_through_the_command(tmp_path):
    """The example installed as users install it, then train / predict / export --onnx / predict on the ONNX file
    through the ordinal-explorer command: the two predictions agree."""
    target = install_example(tmp_path / "site")
    env = {**os.environ, "PYTHONPATH": str(target), "HF_HUB_OFFLINE": "1"}
    exe = Path(sys.executable).with_name("ordinal-explorer")

    def run(*args: str) -> str:
        done = subprocess.run([str(exe), *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
        assert done.returncode == 0, done.stderr
        return done.stdout

    dataset = open_dataset(DATA)
    images = []
    for i in (0, 7, 20):
        dataset.load_image(dataset.samples[i]).save(tmp_path / f"im{i}.png")
        images.append(f"im{i}.png")
    run("train", DATA, "--method", EXAMPLE, "--context-tokens", "2", "--quantile", "0.5", "--epochs", "1", "--batch-size", "8",
        "--out", "med.safetensors", "--cache-dir", "cache", "--device", "cpu", "--quiet")
    assert json.loads(run("info", "med.safetensors", "--json"))["method"] == EXAMPLE
    direct = json.loads(run("predict", "med.safetensors", *images, "--json"))
    run("export", "med.safetensors", "--onnx", "med.onnx")
    onnx = json.loads(run("predict", "med.onnx", *images, "--json"))
    for a, b in zip(direct, onnx):
        assert a["estimate"] == b["estimate"] == "median" and abs(a["value"] - b["value"]) < 1e-3
        np.testing.assert_allclose(a["probs"], b["probs"], atol=1e-4)


def test_the_guide_shows_the_example_verbatim():
    doc = (ROOT / "docs" / "writing-a-method.md").read_text(encoding="utf-8")
    for name in ("pyproject.toml", "median_method.py"):
        assert (ROOT / "examples" / "median_method" / name).read_text(encoding="utf-8") in doc, name


# --- registration: refused in one sentence, the rest unaffected ------------------------------------


def _dist(folder: Path, name: str, entries: dict[str, str]) -> Path:
    """A distribution's metadata on disk (what pip leaves in site-packages) naming ``entries``."""
    info = folder / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    lines = "\n".join(f"{k} = {v}" for k, v in entries.items())
    (info / "entry_points.txt").write_text(f"[{methods.ENTRY_POINT_GROUP}]\n{lines}\n")
    return folder


@pytest.fixture
def broken_plugins(tmp_path):
    folder = _dist(tmp_path / "site", "broken-methods", {
        "ghost": "no_such_module_anywhere:Ghost",
        "hollow": "explorer.methods.coop:NoSuchClass",
        "coop": "explorer.methods.coop:CoOp",  # a built-in's name
        "misnamed": "explorer.methods.coop:CoOp",  # its class says it is 'coop'
        "clash": f"{__name__}:ClashingMethod",
        "half": f"{__name__}:HalfLabMethod",
    })
    sys.path.insert(0, str(folder))
    methods.refresh()
    yield folder
    sys.path.remove(str(folder))
    methods.refresh()


def _clashing_classes():
    from dataclasses import dataclass

    from explorer.core.options import option
    from explorer.methods.coop import CoOp, CoOpConfig

    @dataclass
    class ClashConfig(CoOpConfig):
        method: str = option("clash")
        width: int = option(3, flag="--context-tokens", help="the flag coop has on num_context_tokens")

    class Clashing(CoOp):
        name, config_class = "clash", ClashConfig

    @dataclass
    class HalfConfig(CoOpConfig):
        method: str = option("half")

    class HalfLab(CoOp):
        name, config_class = "half", HalfConfig

        def reinterpolate(self, scheme, bandwidth=1.0, num_base_ranks=None):
            raise AssertionError("never called")

    return Clashing, HalfLab


ClashingMethod, HalfLabMethod = _clashing_classes()


def test_broken_plugins_are_unusable_in_one_sentence_each(broken_plugins, capsys):
    from explorer import cli

    problems = methods.unusable_methods()
    assert set(problems) == {"ghost", "hollow", "coop", "misnamed", "clash", "half"}
    assert "module 'no_such_module_anywhere' cannot be imported" in problems["ghost"]
    assert "has no class 'NoSuchClass'" in problems["hollow"]
    assert "is a built-in method's name" in problems["coop"] and "its name is 'coop'" in problems["misnamed"]
    assert "--context-tokens is declared on field 'width'" in problems["clash"]
    assert "implements reinterpolate but not lab_options" in problems["half"]
    assert all(text.count(".") >= 1 and "\n" not in text for text in problems.values())
    assert get_method("coop").__name__ == "CoOp"  # the built-in, unaffected
    with pytest.raises(ExplorerError, match="no_such_module_anywhere"):
        get_method("ghost")
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "ordinalclip: OrdinalCLIP" in out and "ghost: unusable (plug-in)" in out and "hollow: unusable" in out


def test_the_library_names_unusable_plugins_without_importing_them(broken_plugins):
    problems = methods.plugin_problems()  # nothing imported: only what can be told without importing
    assert "ghost" in problems and "not installed" in problems["ghost"] and "coop" in problems


def test_an_option_of_another_method_is_refused_naming_its_method(tmp_path, capsys):
    from explorer import cli

    code = cli.main(["train", "dots:4:4", "--method", "coop", "--interpolation", "normal", "--out", str(tmp_path / "x.safetensors")])
    assert code == 2 and "--interpolation is an option of ordinalclip, not of coop." in capsys.readouterr().err
    code = cli.main(["sweep", "dots:4:4", "--methods", "zeroshot,linear-probe", "--context-tokens", "2", "--out-dir", str(tmp_path)])
    assert code == 2 and "--context-tokens is an option of ordinalclip, coop, numclip, not of zeroshot, linear-probe." in capsys.readouterr().err


def test_old_names_still_work_with_a_deprecation_warning_outside_checkpoints():
    with pytest.warns(DeprecationWarning, match="'rank' is deprecated; use 'ordinalclip'"):
        assert get_method("rank").name == "ordinalclip"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert methods.stored_config({"kind": "plain", "num_ranks": 4, "num_base_ranks": 3}).method == "coop"


def test_export_refuses_a_predictor_without_an_export_module(demo, tmp_path):
    from explorer.store.checkpoints import save_checkpoint

    class Opaque:  # answers in Python, but gives nothing ONNX could trace
        estimate, ranks = "expected", Ranks.integers(4)

        def outputs(self, feats):
            raise AssertionError("never called")

    model = get_method("coop").build(demo, make_config("coop", num_ranks=4, num_context_tokens=2), Ranks.integers(4))
    ckpt = load_checkpoint(save_checkpoint(tmp_path / "c.safetensors", model, demo))
    ckpt.predictor = lambda: Opaque()
    with pytest.raises(ExplorerError, match=r"c cannot be exported to ONNX: its predictor \(Opaque\) has no export module"):
        export_onnx(ckpt, tmp_path / "c.onnx", backbone=demo)
    assert not (tmp_path / "c.onnx").exists()


def test_export_leaves_the_backbone_as_it_was(demo, tmp_path):
    """A pooled backbone's tower is never moved, cast or switched to eval by an export (a CUDA server's stays on CUDA)."""
    import copy

    ckpt = load_checkpoint(ROOT / "checkpoints" / "coop.safetensors")
    backbone = copy.copy(demo)
    backbone.model = copy.deepcopy(demo.model)
    backbone.model.visual.double().train()
    export_onnx(ckpt, tmp_path / "c.onnx", backbone=backbone)
    params = list(backbone.model.visual.parameters())
    assert all(p.dtype == torch.float64 for p in params) and backbone.model.visual.training
    assert all(m.training for m in backbone.model.visual.modules())
    assert load_onnx(tmp_path / "c.onnx").run(_pixels(2).numpy())[0].shape == (2, len(ckpt.classes))
