"""Sweeps beyond one process (explorer.training.sweeps / sweep_files / sweep_worker / executors / shards):
inline, local worker processes and Slurm job arrays (stand-in sbatch, srun, sacct and scancel from
tests/fakeslurm/ run the submitted array on this machine), resume after a kill, failed runs, the
sharded feature cache, and the Slurm defaults file.

Everything is real: the demo backbone, files on disk, worker processes started by submitit, SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from explorer import cli
from explorer.core.errors import ExplorerError
from explorer.training import sweep_files
from explorer.training.config import TrainConfig, parse_method_list, sweep_grid
from explorer.training.executors import ExecutorSpec, executor_spec
from explorer.training.slurm import parse_time, read_defaults, slurm_options
from explorer.training.sweeps import sweep

REPO = Path(__file__).resolve().parent.parent
FAKE_SLURM = REPO / "tests" / "fakeslurm"
DATA = "dots:4:6"  # 5 ranks, 30 images
METRICS = ["mae_exp", "mae_max", "acc_max", "cs1", "qwk", "spearman", "ordinality", "rps", "ece"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("features")


def grid(out_dir: Path, cache: Path, methods: str = "zeroshot,ordinalclip:linear", shots=(2,), seeds=(0, 1), **kw):
    base = TrainConfig(dataset=DATA, out=str(out_dir / "run.safetensors"), epochs=kw.pop("epochs", 2), batch_size=8,
                       device="cpu", cache_dir=str(cache), **kw)
    return sweep_grid(base, parse_method_list(methods, {"num_context_tokens": 4}), list(shots), list(seeds), out_dir)


def sweep_args(out_dir: Path, cache: Path, *extra: str, methods: str = "zeroshot,ordinalclip:linear", seeds: str = "0,1",
               epochs: int = 2) -> list[str]:
    return ["sweep", DATA, "--methods", methods, "--shots-list", "2", "--seeds", seeds, "--epochs", str(epochs),
            *(["--context-tokens", "4"] if methods != "zeroshot" else []), "--batch-size", "8", "--out-dir", str(out_dir), "--cache-dir", str(cache),
            "--device", "cpu", "--quiet", *extra]


def metrics_table(folder: Path) -> pd.DataFrame:
    runs = pd.read_csv(folder / "runs.csv")
    return runs.sort_values(["method", "seed"]).reset_index(drop=True)[["method", "shots", "seed", *METRICS]]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def worker_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}


# --- bad input: one sentence each -------------------------------------------------------------------


@pytest.mark.parametrize("command", ["sweep", "embed"])
@pytest.mark.parametrize("flags, expected", [
    (["--workers", "0"], "--workers must be at least 1 (got 0)."),
    (["--executor", "cloud"], "Unknown executor 'cloud'; choose inline, local or slurm."),
    (["--executor", "local", "--slurm-partition", "gpu"], "--slurm-partition only apply with --executor slurm."),
    (["--slurm-time", "60", "--slurm-gpus", "1"], "--slurm-time, --slurm-gpus only apply with --executor slurm."),
    (["--workers", "2"], "The inline executor runs one run at a time; use --executor local for several workers."),
])
def test_executor_flags_are_refused_in_one_sentence(command, flags, expected, tmp_path, capsys):
    args = sweep_args(tmp_path / "s", tmp_path / "c") if command == "sweep" else ["embed", DATA, "--cache-dir", str(tmp_path / "c")]
    assert cli.main(args + flags) == 2
    assert one_error_line(capsys) == f"error: {expected}"
    assert not (tmp_path / "s").exists()


def test_slurm_without_a_cluster_and_bad_grids_are_one_sentence(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert cli.main(sweep_args(tmp_path / "s", tmp_path / "c", "--executor", "slurm")) == 2
    assert "needs Slurm's sbatch and srun on PATH" in one_error_line(capsys)
    monkeypatch.undo()
    for flags, text in ((["--label-shifts", "10"], "C:S pairs"), (["--label-shifts", "none,10:0.5", "--label-shift", "10", "0.5"], "not both")):
        assert cli.main(sweep_args(tmp_path / "s", tmp_path / "c", *flags)) == 2
        assert text in one_error_line(capsys)
    with pytest.raises(ExplorerError, match="names a run twice"):
        sweep(grid(tmp_path / "d", tmp_path / "c", methods="zeroshot", seeds=(0, 0)), tmp_path / "d")


# --- the Slurm defaults file -----------------------------------------------------------------------


def test_slurm_defaults_file_and_flags_over_it(tmp_path, monkeypatch):
    assert [parse_time(t, "t") for t in ("90", 45, "1:30", "1:30:00", "2-00:00:00", "0:00:30")] == [90, 45, 90, 90, 2880, 1]
    with pytest.raises(ExplorerError, match=r"minutes or \[D-\]H:MM\[:SS\] \(got 'soon'\)"):
        parse_time("soon", "--slurm-time")
    path = tmp_path / "slurm.toml"
    path.write_text('partition = "gpu"\ntime = "12:00:00"\ncpus = 8\ngpus = 1\nmem_gb = 32\nsetup = ["module load cuda"]\n')
    monkeypatch.setenv("ORDINAL_EXPLORER_SLURM_CONFIG", str(path))
    opts = read_defaults()
    assert (opts.partition, opts.time, opts.cpus, opts.gpus, opts.mem_gb, opts.setup) == ("gpu", 720, 8, 1, 32, ["module load cuda"])
    over = slurm_options({"partition": "debug", "time": "30", "cpus": None, "gpus": 0})
    assert (over.partition, over.time, over.cpus, over.gpus) == ("debug", 30, 8, 0)
    params = over.parameters()
    assert params["partition"] == "debug" and params["time"] == 30 and params["cpus_per_task"] == 8 and params["mem"] == "32GB"
    path.write_text('partition = "gpu"\nnodes = 4\n')
    with pytest.raises(ExplorerError, match="unknown keys nodes"):
        read_defaults()
    path.write_text('cpus = "many"\n')
    with pytest.raises(ExplorerError, match="cpus must be a whole number"):
        read_defaults()
    path.write_text("partition = \n")
    with pytest.raises(ExplorerError, match="not readable TOML"):
        read_defaults()
    monkeypatch.setenv("ORDINAL_EXPLORER_SLURM_CONFIG", str(tmp_path / "none.toml"))
    assert read_defaults().time == 240 and read_defaults().partition is None


# --- what the files say: done, running, failed, waiting ----------------------------------------------


@pytest.mark.slow
def test_a_run_is_done_exactly_when_its_result_names_its_checkpoint(tmp_path, cache, capsys):
    out = tmp_path / "sweep"
    runs = grid(out, cache, methods="zeroshot", seeds=(0, 1))
    first = sweep(runs, out)
    assert first["counts"] == {"done": 2, "running": 0, "failed": 0, "waiting": 0}
    results = {r.id: sweep_files.run_folder(out, r) / sweep_files.RESULT for r in runs}
    stamps = {i: p.stat().st_mtime_ns for i, p in results.items()}
    again = sweep(runs, out)  # the same sweep again: nothing to do, the same tables
    assert {i: p.stat().st_mtime_ns for i, p in results.items()} == stamps
    assert again["markdown"] == first["markdown"] and len(pd.read_csv(out / "runs.csv")) == 2

    # a checkpoint that is not the one the result names (a later, unfinished write) is not done
    a, b = runs
    ckpt = Path(a.config.out)
    ckpt.write_bytes(ckpt.read_bytes()[:-10])
    assert [s.state for s in sweep_files.sweep_status(out, runs)] == ["waiting", "done"]
    # a run marked running by a process that is gone was interrupted: waiting, with why
    sweep_files.write_run_file(out, a, sweep_files.RUNNING, {"host": os.uname().nodename, "pid": 2**22 + 12345, "updated": time.time()})
    status = sweep_files.run_status(out, a)
    assert status.state == "waiting" and status.detail.startswith("interrupted (process 4206649")
    # ... by a live process: running, and the sweep refuses to start it twice
    sweep_files.write_run_file(out, a, sweep_files.RUNNING, {"host": os.uname().nodename, "pid": os.getpid(), "stage": "epoch 3/20",
                                                             "updated": time.time()})
    assert sweep_files.run_status(out, a).detail.startswith("epoch 3/20 (process")
    with pytest.raises(ExplorerError, match=r"^1 runs of this sweep are running now \(zeroshot-shots2-seed0: epoch 3/20"):
        sweep(runs, out)
    assert cli.main(sweep_args(out, cache, "--status", methods="zeroshot")) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:2] == ["zeroshot-shots2-seed0", "running"] and lines[1].split() == ["zeroshot-shots2-seed1", "done"]
    assert lines[-1] == "1 done, 1 running, 0 failed, 0 waiting"
    # the marker gone, the rerun redoes exactly that run; a temporary a killed writer left is removed
    sweep_files.clear_run_file(out, a, sweep_files.RUNNING)
    (sweep_files.run_folder(out, a) / f".{ckpt.name}.x1y2.tmp").write_bytes(b"half")
    assert sweep(runs, out)["counts"]["done"] == 2
    assert results[b.id].stat().st_mtime_ns == stamps[b.id] and results[a.id].stat().st_mtime_ns != stamps[a.id]
    assert not list(out.rglob("*.tmp"))
    assert sorted(pd.read_csv(out / "runs.csv")["seed"]) == [0, 1]


@pytest.mark.slow
def test_a_failed_run_is_one_sentence_in_its_folder_and_its_cell(tmp_path, cache, capsys):
    """OrdinalCLIP with more base ranks than the 5 ranks raises; the zero-shot runs complete."""
    out = tmp_path / "sweep"
    code = cli.main(sweep_args(out, cache, "--base-ranks", "9", seeds="0"))
    assert code == 1
    printed = capsys.readouterr().out
    sentence = "num_base_ranks must be between 1 and num_ranks (5); got 9."
    md = (out / "results.md").read_text().splitlines()
    assert md[2].startswith("| zeroshot | 2 | 1 | ") and "±" in md[2]
    assert md[3] == f"| ordinalclip:linear | 2 | 0 | failed: {sentence} | — | — | — | — |"
    failed = json.loads((out / "runs" / "ordinalclip-linear-shots2-seed0" / "failed.json").read_text())
    assert failed["error"] == sentence
    runs = pd.read_csv(out / "runs.csv")
    assert list(runs["status"]) == ["done", "failed"] and runs["error"].iloc[1] == sentence
    assert "1 of 2 runs failed" in printed
    curves = pd.read_csv(out / "curves.csv")
    assert set(curves["method"]) == {"zeroshot"}


# --- executors: inline == local == Slurm ------------------------------------------------------------


@pytest.mark.slow
def test_local_workers_give_the_inline_table(tmp_path, cache):
    """2 local worker processes (one torch thread each on this 2-core machine) and the in-process loop
    (one thread here): the same metrics for the same seeds, made from the runs' files."""
    inline = sweep(grid(tmp_path / "inline", cache, seeds=(0, 1)), tmp_path / "inline")
    events = []
    local = sweep(grid(tmp_path / "local", cache, seeds=(0, 1)), tmp_path / "local", progress=events.append,
                  executor=executor_spec("local", 2))
    assert local["counts"]["done"] == inline["counts"]["done"] == 4
    a, b = metrics_table(tmp_path / "inline"), metrics_table(tmp_path / "local")
    assert list(a["method"]) == list(b["method"]) and list(a["seed"]) == list(b["seed"])
    assert (a[METRICS] - b[METRICS]).abs().max().max() < 1e-6
    assert local["markdown"] == inline["markdown"]
    assert "4 runs submitted to 2 local workers" in [e.message for e in events]
    assert sum(e.message.startswith("done: ") for e in events) == 4
    logs = sorted((tmp_path / "local" / ".submitit").glob("*_log.out"))
    assert len(logs) == 2  # one worker process each, its runs one after another


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _epoch_marker(out: Path):
    """(run folder, pid) of a run in its 3rd epoch or later (its first checkpoint is written by then)."""
    for marker in out.glob("runs/*/running.json"):
        try:
            data = json.loads(marker.read_text())
        except (OSError, ValueError):
            continue
        stage = data.get("stage", "")
        if stage.startswith("epoch ") and int(stage.split()[1].split("/")[0]) >= 3:
            return marker.parent, int(data["pid"])
    return None


@pytest.mark.slow
def test_a_worker_killed_mid_run_and_the_sweep_rerun(tmp_path, cache):
    """SIGKILL a local worker during a run: that run (and the rest of that worker's list) is not done,
    its checkpoint is not taken for done; the same command again runs exactly those, once."""
    out = tmp_path / "sweep"
    args = [sys.executable, "-m", "explorer"] + sweep_args(out, cache, "--executor", "local", "--workers", "2", methods="ordinalclip:linear",
                                                          seeds="0,1,2,3", epochs=60)
    first = subprocess.Popen(args, cwd=REPO, env=worker_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed, pid = _wait_for(lambda: _epoch_marker(out), 240, "a run in its 3rd epoch")
    os.kill(pid, signal.SIGKILL)
    stdout, _ = first.communicate(timeout=600)
    assert first.returncode == 1 and "did not finish (a worker stopped); run the same command again" in stdout
    runs = sweep_files.read_plan(out)
    after_kill = {s.run.id: s for s in sweep_files.sweep_status(out, runs)}
    assert after_kill[killed.name].state == "waiting" and after_kill[killed.name].detail.startswith("interrupted")
    assert (killed / f"{killed.name}.safetensors").is_file()  # a complete file of a best epoch so far, not a done run
    done_before = {i: (out / "runs" / i / "result.json").stat().st_mtime_ns for i, s in after_kill.items() if s.state == "done"}
    assert 1 <= len(done_before) <= 3

    second = subprocess.run(args, cwd=REPO, env=worker_env(), capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    assert {i: (out / "runs" / i / "result.json").stat().st_mtime_ns for i in done_before} == done_before  # not redone
    table = pd.read_csv(out / "runs.csv")
    assert sorted(table["seed"]) == [0, 1, 2, 3] and set(table["status"]) == {"done"}  # each run once
    assert not list(out.rglob("*.tmp")) and not list(out.glob("runs/*/running.json"))
    from explorer.store.checkpoints import load_checkpoint

    row = table[table["seed"] == int(killed.name.rsplit("seed", 1)[1])].iloc[0]
    meta = load_checkpoint(killed / f"{killed.name}.safetensors").meta
    assert meta["metrics"]["test"]["mae_exp"] == pytest.approx(row["mae_exp"], abs=1e-12)


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """sbatch, srun, sacct and scancel stand-ins on PATH; a Slurm defaults file."""
    state = tmp_path / "slurm-state"
    monkeypatch.setenv("PATH", f"{FAKE_SLURM}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_STATE", str(state))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = tmp_path / "slurm.toml"
    config.write_text('partition = "gpu"\ntime = "2:00:00"\ncpus = 1\nsetup = ["export EXPLORER_SETUP_RAN=1"]\n')
    monkeypatch.setenv("ORDINAL_EXPLORER_SLURM_CONFIG", str(config))
    return state


@pytest.mark.slow
def test_a_slurm_job_array_gives_the_inline_table(tmp_path, cache, fake_slurm, capsys):
    """What submitit hands sbatch is what a cluster would get: one array, the defaults file's and the
    flags' settings in its #SBATCH lines; the tasks (run here by the stand-ins) give the inline results."""
    inline = tmp_path / "inline"
    sweep(grid(inline, cache, seeds=(0, 1)), inline)
    out = tmp_path / "slurm"
    code = cli.main(sweep_args(out, cache, "--executor", "slurm", "--workers", "2", "--slurm-partition", "debug", "--slurm-time", "45"))
    assert code == 0, capsys.readouterr()
    submitted = json.loads((fake_slurm / "1000.json").read_text())
    opts = submitted["options"]
    assert submitted["tasks"] == 4 and opts["array"] == "0-3%2"  # one array, 2 tasks at a time
    assert (opts["partition"], opts["time"], opts["cpus-per-task"]) == ("debug", "45", "1")  # flags over the file's
    assert "export EXPLORER_SETUP_RAN=1" in submitted["script"] and "srun --unbuffered" in submitted["script"]
    assert not (fake_slurm / "1001.json").exists()
    a, b = metrics_table(inline), metrics_table(out)
    assert (a[METRICS] - b[METRICS]).abs().max().max() < 1e-6
    # the sweep returns once every run's files are written; the tasks end just after
    _wait_for(lambda: sorted(p.read_text() for p in fake_slurm.glob("1000_*.state")) == ["COMPLETED"] * 4, 120, "the tasks to end")

    # cancelled while it waits: scancel stops the array, the finished runs stay, the same sweep goes on later
    again = tmp_path / "cancelled"
    runs = grid(again, cache, methods="zeroshot", seeds=(0, 1, 2))
    with pytest.raises(Exception, match="cancelled"):
        sweep(runs, again, executor=executor_spec("slurm", 1), should_stop=lambda: True)
    assert "CANCELLED" in {p.read_text() for p in fake_slurm.glob("1001_*.state")}
    assert sweep(runs, again)["counts"]["done"] == 3


# --- embed once, in shards -------------------------------------------------------------------------


def _chunks(root: Path) -> dict[str, list[str]]:
    """chunk file name -> the content keys it holds, over every cache folder under ``root``."""
    from safetensors import safe_open

    out = {}
    for chunk in sorted(root.rglob("chunk-*.safetensors")):
        with safe_open(str(chunk), framework="pt") as f:
            out[chunk.name] = json.loads(f.metadata()["keys"])
    return out


def _features(cache_dir: Path):
    from explorer.backbones.load import load_backbone
    from explorer.data.datasets import open_dataset
    from explorer.data.features import FeatureCache

    dataset = open_dataset(DATA)
    return FeatureCache(load_backbone("demo", device="cpu"), cache_dir).features(dataset, dataset.samples)


@pytest.mark.slow
def test_embed_in_shards_then_a_sweep_never_runs_the_image_tower(tmp_path, monkeypatch, capsys):
    from explorer.backbones.load import Backbone

    calls = []
    encode = Backbone.encode_images
    monkeypatch.setattr(Backbone, "encode_images", lambda self, images, **kw: calls.append(len(images)) or encode(self, images, **kw))
    cache = tmp_path / "features"
    args = ["embed", DATA, "--shards", "3", "--cache-dir", str(cache), "--device", "cpu", "--quiet"]
    assert cli.main(args) == 0
    assert "30 images in 3 shards, 30 embedded now" in capsys.readouterr().out
    chunks = _chunks(cache)
    assert sorted(len(keys) for keys in chunks.values()) == [10, 10, 10] and sum(calls) == 30  # one file per shard
    calls.clear()
    assert cli.main(args) == 0  # every shard is there: skipped, no image through the tower
    assert "30 images in 3 shards, 0 embedded now" in capsys.readouterr().out and calls == [] and _chunks(cache) == chunks

    result = sweep(grid(tmp_path / "sweep", cache, seeds=(0, 1)), tmp_path / "sweep")
    assert result["counts"]["done"] == 4 and calls == []  # every run read its features from the cache
    assert _chunks(cache) == chunks
    one = tmp_path / "unsharded"
    assert cli.main(["embed", DATA, "--cache-dir", str(one), "--device", "cpu", "--quiet"]) == 0
    assert (_features(cache) - _features(one)).abs().max() < 1e-6


@pytest.mark.slow
def test_embed_shards_on_local_workers_fill_the_same_cache(tmp_path, capsys):
    inline, local = tmp_path / "inline", tmp_path / "local"
    assert cli.main(["embed", DATA, "--shards", "2", "--cache-dir", str(inline), "--device", "cpu", "--quiet"]) == 0
    assert cli.main(["embed", DATA, "--shards", "2", "--executor", "local", "--workers", "2", "--cache-dir", str(local),
                     "--device", "cpu", "--quiet"]) == 0
    assert "30 images in 2 shards, 30 embedded now" in capsys.readouterr().out
    assert _chunks(local) == _chunks(inline)  # the same shards, the same keys in the same files
    assert (_features(local) - _features(inline)).abs().max() < 1e-6
    reports = sorted((local / "_jobs").glob("embed-*/shard-*.json"))
    assert [json.loads(r.read_text())["images"] for r in reports] == [15, 15]
    with pytest.raises(ExplorerError, match="--shards must be between 1 and the 30 images"):
        from explorer.training.shards import EmbedJob, embed_sharded

        embed_sharded(EmbedJob(DATA, num_shards=31, cache_dir=str(local)), ExecutorSpec())
