"""Hub backbones against a loopback stand-in for the hub (tests/hubserver.py): downloads with
progress, the cache with the network gone, a cut connection, cancel, and the fast failure.

Never the real network: HF_ENDPOINT points at 127.0.0.1 and HF_HOME at a temporary folder. The
suite runs with HF_HUB_OFFLINE=1 (tests/conftest.py); these tests unset it explicitly, and the
import-time copy in huggingface_hub.constants is restored by monkeypatch after each test.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import huggingface_hub.constants
import open_clip
import pytest
import torch
from hubserver import TINY_MODEL_CFG, TINY_PREPROCESS_CFG, HubServer, make_tiny_hub_model
from safetensors.torch import load_file

from explorer.backbones.catalog import backbone_status
from explorer.backbones.hub import DownloadCancelled, hub_model_for, remote_size, zoo_hub_model
from explorer.backbones.load import load_backbone
from explorer.core.errors import ExplorerError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = "explorer-tests/tiny-clip"
SPEC = f"hf-hub:{REPO}"
WEIGHTS = "open_clip_model.safetensors"


@pytest.fixture(scope="module")
def repo_folder(tmp_path_factory) -> Path:
    return make_tiny_hub_model(tmp_path_factory.mktemp("hub-repo"), seed=7)


@pytest.fixture
def server(repo_folder):
    with HubServer({REPO: repo_folder}) as hub:
        yield hub


def _online(monkeypatch, tmp_path: Path, endpoint: str) -> Path:
    """HF_ENDPOINT -> endpoint, HF_HOME -> tmp_path/hf, offline flags unset; returns the hub cache."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    return tmp_path / "hf" / "hub"


@pytest.fixture
def online(monkeypatch, tmp_path, server) -> Path:
    return _online(monkeypatch, tmp_path, server.url)


def _leftovers(cache: Path) -> list[Path]:
    return [p for p in cache.rglob("*") if p.name.endswith(".incomplete")]


def test_download_reports_monotone_progress_ending_at_the_size(online, server, repo_folder):
    events: list[tuple[int, int | None, str]] = []
    backbone = load_backbone(SPEC, device="cpu", progress=lambda d, t, f: events.append((d, t, f)))
    size = (repo_folder / WEIGHTS).stat().st_size
    weights = [(d, t) for d, t, f in events if f == WEIGHTS]
    assert weights and all(t == size for _, t in weights)
    assert [d for d, _ in weights] == sorted(d for d, _ in weights)
    assert weights[-1][0] == size
    assert {f for _, _, f in events} == {"open_clip_config.json", WEIGHTS}
    assert backbone.arch == "tiny-clip" and backbone.embed_dim == 64 and backbone.image_size == 32
    served = load_file(str(repo_folder / WEIGHTS))
    torch.testing.assert_close(backbone.model.state_dict()["text_projection"], served["text_projection"])
    assert remote_size(hub_model_for(SPEC)) == size + (repo_folder / "open_clip_config.json").stat().st_size


def test_cache_is_used_when_the_network_is_gone(online, server, monkeypatch):
    first = load_backbone(SPEC, device="cpu")
    server.stop()  # nothing listens on the port any more
    start = time.monotonic()
    again = load_backbone(SPEC, device="cpu")
    assert time.monotonic() - start < 2.0
    assert again.backbone_id == first.backbone_id
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert load_backbone(SPEC, device="cpu").backbone_id == first.backbone_id
    assert remote_size(hub_model_for(SPEC)) is None  # "unknown offline"
    assert backbone_status(SPEC) == (True, "")  # what the Library shows
    ok, note = backbone_status("hf-hub:explorer-tests/never-downloaded")
    assert ok is False and "offline" in note


class _NoSleep:
    """time for huggingface_hub's download retries, without the 1 s pauses between them."""

    def __getattr__(self, name):
        return getattr(time, name)

    @staticmethod
    def sleep(seconds):
        return None


def test_cut_connection_is_one_sentence_and_the_next_try_succeeds(online, server, monkeypatch, tmp_path):
    import huggingface_hub.file_download as fd

    clean = load_backbone(SPEC, device="cpu", cache_dir=str(tmp_path / "clean-cache"))
    monkeypatch.setattr(fd, "time", _NoSleep())
    server.cut(WEIGHTS, after=11_000_000)  # past huggingface_hub's first 10 MiB chunk
    with pytest.raises(ExplorerError) as err:
        load_backbone(SPEC, device="cpu")
    message = str(err.value)
    assert "\n" not in message and "interrupted" in message and "again" in message
    assert "bytes=10485760-" in server.gets(WEIGHTS)  # huggingface_hub resumed within the try
    assert not _leftovers(online)
    server.heal()
    assert load_backbone(SPEC, device="cpu").backbone_id == clean.backbone_id


def test_cancel_stops_the_download_and_keeps_nothing(online, server):
    seen = []
    with pytest.raises(DownloadCancelled):
        load_backbone(SPEC, device="cpu", progress=lambda d, t, f: seen.append(d),
                      should_stop=lambda: len(seen) > 3)
    assert not _leftovers(online)
    assert load_backbone(SPEC, device="cpu").arch == "tiny-clip"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("offline", [False, True], ids=["nothing-listening", "hf-hub-offline"])
def test_no_hub_and_no_cache_fails_fast_naming_the_model(monkeypatch, tmp_path, offline):
    _online(monkeypatch, tmp_path, f"http://127.0.0.1:{_closed_port()}")
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(ExplorerError) as err:
        load_backbone(SPEC, device="cpu")
    assert time.monotonic() - start < 2.0
    message = str(err.value)
    assert SPEC in message and "ARCH@/path" in message and "\n" not in message
    assert ("HF_HUB_OFFLINE" in message) if offline else ("cannot be reached" in message)


@pytest.fixture
def tiny_zoo_entry(monkeypatch):
    """An open_clip zoo entry 'explorer-tiny:hubtest' whose weights live in the loopback hub repo."""
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, "explorer-tiny", TINY_MODEL_CFG)
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, "explorer-tiny",
                        {"hubtest": {"hf_hub": f"{REPO}/", **TINY_PREPROCESS_CFG}})
    return "explorer-tiny:hubtest"


def test_zoo_entries_on_the_hub_use_the_same_download_path(online, server, tiny_zoo_entry, repo_folder):
    events = []
    backbone = load_backbone(tiny_zoo_entry, device="cpu", progress=lambda d, t, f: events.append((d, t, f)))
    assert events[-1] == ((repo_folder / WEIGHTS).stat().st_size,) * 2 + (WEIGHTS,)
    assert backbone.arch == "explorer-tiny"
    server.stop()
    assert load_backbone(tiny_zoo_entry, device="cpu").backbone_id == backbone.backbone_id


def test_zoo_hub_file_names_follow_open_clip():
    assert zoo_hub_model("A:b", "A", {"hf_hub": "org/repo/"}).files == (
        ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"),)
    model = zoo_hub_model("A:b", "A", {"hf_hub": "org/repo/pytorch_model.bin"})
    assert (model.repo_id, model.files) == ("org/repo", (("pytorch_model.safetensors", "pytorch_model.bin"),))
    assert zoo_hub_model("A:b", "A", {"url": "https://example.invalid/x.pt"}) is None
    assert hub_model_for("ViT-B-32:laion2b_s34b_b79k").repo_id == "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"


# --- download progress of train / embed / sweep (the trainer's "download" events) -----------------


def _train_config(tmp_path: Path, **kw):
    from explorer.training.config import TrainConfig

    return TrainConfig(dataset="dots:3:6", out=str(tmp_path / "run.safetensors"), backbone=SPEC, method_config={"method": "linear-probe"},
                       epochs=1, batch_size=8, device="cpu", cache_dir=str(tmp_path / "features"), **kw)


def _assert_bytes_rise_to(done: list[int], size: int) -> None:
    assert len(done) >= 2 and done == sorted(done) and done[-1] == size, done


def test_trainer_reports_download_progress_in_bytes(online, server, repo_folder, tmp_path):
    from explorer.training.trainer import train

    events = []
    train(_train_config(tmp_path), progress=events.append)
    size = (repo_folder / WEIGHTS).stat().st_size
    downloads = [p for p in events if p.stage == "download"]
    assert {p.message for p in downloads} == {f"Downloading {SPEC}"}
    _assert_bytes_rise_to([p.done for p in downloads if p.total == size], size)
    first_embed = next(i for i, p in enumerate(events) if p.stage == "embed")
    assert max(i for i, p in enumerate(events) if p.stage == "download") < first_embed


def test_trainer_cancelled_during_the_download_keeps_nothing(online, server, tmp_path):
    from explorer.training.config import Cancelled
    from explorer.training.trainer import train

    with pytest.raises(Cancelled, match="cancelled"):
        train(_train_config(tmp_path), should_stop=lambda: True)
    assert not _leftovers(online)


def _tqdm_percents(stderr: str, desc: str, total: str) -> list[int]:
    """The percentages a tqdm bar ``desc`` drew for a file of ``total`` (tqdm's own size text)."""
    import re

    bars = re.findall(re.escape(desc) + r":\s+(\d+)%\|[^|]*\|\s*[\d.]+\w?/([\d.]+\w?) ", stderr)
    return [int(pct) for pct, shown in bars if shown == total]


@pytest.mark.parametrize("command", ["train", "embed"])
def test_cli_shows_a_byte_bar_while_the_backbone_downloads(online, server, repo_folder, tmp_path, capsys, command):
    from tqdm import tqdm

    from explorer.cli import main

    args = ["dots:3:6", "--backbone", SPEC, "--device", "cpu", "--cache-dir", str(tmp_path / "features")]
    if command == "train":
        args += ["--method", "linear-probe", "--epochs", "1", "--out", str(tmp_path / "run.safetensors")]
    assert main([command, *args]) == 0
    err = capsys.readouterr().err
    size = (repo_folder / WEIGHTS).stat().st_size
    desc = f"Downloading {SPEC}" if command == "train" else WEIGHTS
    percents = _tqdm_percents(err, desc, tqdm.format_sizeof(size, divisor=1024))
    assert percents == sorted(percents) and percents[-1] == 100 and len(set(percents)) >= 2, err
    assert "B/s]" in err  # a byte bar


def test_a_training_job_records_the_download(online, server, repo_folder, tmp_path):
    from explorer.training.jobs import JobManager

    job = JobManager().start(_train_config(tmp_path))
    deadline = time.monotonic() + 120
    while job.active and time.monotonic() < deadline:
        time.sleep(0.1)
    snap = job.snapshot()
    assert snap["state"] == "done", snap["error"]
    size = (repo_folder / WEIGHTS).stat().st_size
    assert snap["download"] == {"done": size, "total": size} and snap["backbone"] == SPEC
