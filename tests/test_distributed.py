"""A real 2-process DDP run (torchrun, gloo on CPU) gives the single-process result.

The trainer all-gathers the image features with gradients, so every process sees the whole batch
and the loss (including the batch-level KL term) is the single-process loss.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from explorer.store.checkpoints import load_checkpoint
from explorer.training.config import TrainConfig
from explorer.training.trainer import train

REPO = Path(__file__).resolve().parent.parent
TORCHRUN = Path(sys.executable).with_name("torchrun")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]




@pytest.mark.slow
def test_two_process_ddp_matches_single_process(tmp_path, one_torch_thread):
    # batch 7 over 2 processes: shards of 4 and 3 (the uneven gather path)
    common = ["dots:4:8", "--method", "ordinalclip", "--context-tokens", "4", "--epochs", "3", "--batch-size", "7", "--device", "cpu"]
    ddp_dir = tmp_path / "ddp"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [str(TORCHRUN), "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
           "-m", "explorer", "train", *common, "--out", str(ddp_dir / "a.safetensors"),
           "--cache-dir", str(tmp_path / "cache-ddp"), "--json", "--quiet"]
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired as exc:  # a collective that only one process entered
        pytest.fail(f"the 2-process run did not finish in 180 s (deadlock?):\n{(exc.stderr or b'')[-3000:]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(printed) == 1  # only rank 0 reports
    summary = json.loads(printed[0])

    single = train(TrainConfig(dataset="dots:4:8", out=str(tmp_path / "single" / "a.safetensors"),
                               method_config={"method": "ordinalclip", "num_context_tokens": 4}, epochs=3, batch_size=7, device="cpu",
                               cache_dir=str(tmp_path / "cache-single")))

    # only rank 0 wrote: one checkpoint, one history with one line per epoch, nothing else
    assert sorted(p.name for p in ddp_dir.iterdir()) == ["a.history.jsonl", "a.safetensors"]
    ddp_history = [json.loads(line) for line in (ddp_dir / "a.history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in ddp_history] == [0, 1, 2]

    a, b = load_checkpoint(ddp_dir / "a.safetensors"), load_checkpoint(single.checkpoint)
    assert set(a.tensors) == set(b.tensors) == {"learner.context_embeds", "learner.rank_embeds", "prototypes"}
    for key in a.tensors:
        assert torch.allclose(a.tensors[key], b.tensors[key], atol=1e-5), key
    assert a.meta["training"]["best_epoch"] == single.best_epoch
    for h_ddp, h_single in zip(ddp_history, single.history):
        assert h_ddp["train_loss"] == pytest.approx(h_single["train_loss"], abs=1e-5)
        assert h_ddp["val_mae_exp"] == pytest.approx(h_single["val_mae_exp"], abs=1e-5)
    assert summary["test"]["mae_exp"] == pytest.approx(single.test_metrics["mae_exp"], abs=1e-5)
