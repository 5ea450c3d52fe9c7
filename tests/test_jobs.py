"""Background training jobs (what the app's Train page runs)."""

import json
import time
from pathlib import Path

import pytest

from explorer.core.errors import ExplorerError
from explorer.store.checkpoints import load_checkpoint
from explorer.training.config import TrainConfig
from explorer.training.jobs import JobManager, job_output


def wait(job, timeout=120):
    deadline = time.monotonic() + timeout
    while job.active and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not job.active, f"job still {job.state} after {timeout} s"


def config(tmp_path, name, epochs=2, **kw):
    return TrainConfig(dataset="dots:4:6", out=str(tmp_path / f"{name}.safetensors"), epochs=epochs, batch_size=8,
                       cache_dir=str(tmp_path / "cache"), method_config={"method": "ordinalclip", "num_context_tokens": 2}, **kw)


@pytest.mark.slow
def test_two_jobs_run_to_completion_without_mixing(tmp_path):
    manager = JobManager()
    a = manager.start(config(tmp_path, "a", epochs=2))
    b = manager.start(config(tmp_path, "b", epochs=3, seed=1))
    assert a.id != b.id
    wait(a), wait(b)
    for job, epochs, name in ((a, 2, "a"), (b, 3, "b")):
        snap = job.snapshot()
        assert snap["state"] == "done", snap["error"]
        assert [h["epoch"] for h in snap["history"]] == list(range(1, epochs + 1))
        assert snap["fraction"] == 1.0 and snap["steps"]
        assert snap["checkpoint"] == str(tmp_path / f"{name}-{job.id}.safetensors")
        assert load_checkpoint(snap["checkpoint"]).meta["training"]["epochs"] == epochs
    assert manager.get(a.id) is a and manager.get(b.id) is b and manager.get("nope") is None


def test_the_job_id_names_the_output_file():
    assert job_output("lib/app-my-run.safetensors", "0123abcd") == Path("lib/app-my-run-0123abcd.safetensors")


@pytest.mark.slow
def test_two_jobs_with_the_same_name_started_together_write_two_checkpoints(tmp_path):
    """Same config, same out, started at once: each run writes (and cleans up) only its own files."""
    manager = JobManager()
    same = config(tmp_path, "same", epochs=3)
    jobs = [manager.start(same), manager.start(same)]
    for job in jobs:
        wait(job)
    outs = [Path(job.snapshot()["checkpoint"]) for job in jobs]
    assert [job.state for job in jobs] == ["done", "done"], [job.error for job in jobs]
    assert outs == [tmp_path / f"same-{job.id}.safetensors" for job in jobs] and same.out == str(tmp_path / "same.safetensors")
    for out in outs:
        ckpt = load_checkpoint(out)
        assert ckpt.content == "full" and ckpt.meta["training"]["epochs"] == 3
        history = out.with_name(out.stem + ".history.jsonl").read_text().splitlines()
        assert [json.loads(line)["epoch"] for line in history] == [0, 1, 2]  # 0-based on disk
    assert sorted(p.name for p in tmp_path.glob("same*")) == sorted(
        f"same-{job.id}{ext}" for job in jobs for ext in (".safetensors", ".history.jsonl"))


@pytest.mark.slow
def test_cancel_keeps_best_checkpoint(tmp_path):
    manager = JobManager()
    job = manager.start(config(tmp_path, "c", epochs=200))
    deadline = time.monotonic() + 120
    while not job.snapshot()["history"] and time.monotonic() < deadline:
        time.sleep(0.05)
    job.cancel()
    wait(job)
    snap = job.snapshot()
    assert snap["state"] == "cancelled"
    assert len(snap["history"]) < 200
    assert load_checkpoint(tmp_path / f"c-{job.id}.safetensors").content == "full"


def test_bad_config_fails_cleanly(tmp_path):
    manager = JobManager()
    with pytest.raises(ExplorerError):
        manager.start(config(tmp_path, "x", optimizer="lbfgs"))
    job = manager.start(TrainConfig(dataset="dots:0", out=str(tmp_path / "y.safetensors"), cache_dir=str(tmp_path)))
    wait(job)
    assert job.state == "failed" and "dots" in job.error and "Traceback" not in job.error


@pytest.mark.slow
def test_running_limit(tmp_path):
    manager = JobManager(max_running=1)
    job = manager.start(config(tmp_path, "d", epochs=200))
    with pytest.raises(ExplorerError, match="already"):
        manager.start(config(tmp_path, "e"))
    job.cancel()
    wait(job)


def test_embedding_progress_has_a_time_left():
    from explorer.training.config import RateEstimate, format_seconds

    eta = RateEstimate()
    assert eta.update(0, 5000, now=100.0) is None  # no rate yet
    assert eta.update(500, 5000, now=110.0) == pytest.approx(90.0)  # 50 images/s, 4500 left
    assert eta.update(1000, 5000, now=130.0) == pytest.approx(4000 / (1000 / 30))
    assert eta.update(200, 300, now=131.0) is None  # a new stage restarts the estimate
    assert [format_seconds(s) for s in (None, 12.4, 200, 3900)] == ["…", "12 s", "3 min 20 s", "1 h 05 min"]


@pytest.mark.slow
def test_a_job_reports_embedding_done_total_and_eta(tmp_path):
    manager = JobManager()
    job = manager.start(config(tmp_path, "embed-eta", epochs=1))
    seen = []
    deadline = time.monotonic() + 120
    while job.active and time.monotonic() < deadline:
        snap = job.snapshot()
        if snap["embed"]:
            seen.append(snap["embed"])
        time.sleep(0.01)
    final = job.snapshot()["embed"]
    assert final["total"] > 0 and final["done"] == final["total"]
    assert all(set(s) == {"done", "total", "eta_s"} for s in seen)


def test_finished_jobs_are_dropped_after_a_while(tmp_path):
    """A finished job stays findable long enough for its page to show the result, then it goes."""
    now = [1000.0]
    manager = JobManager(keep_finished_s=600, clock=lambda: now[0])
    job = manager.start(TrainConfig(dataset="dots:0", out=str(tmp_path / "y.safetensors"), cache_dir=str(tmp_path)))
    wait(job)
    assert job.finished == 1000.0
    now[0] += 599
    assert manager.get(job.id) is job
    now[0] += 2
    assert manager.get(job.id) is None


def test_a_job_borrows_the_pools_backbone(tmp_path, monkeypatch):
    """With ``borrow`` a run uses the pool's backbone (kept loaded for the run) instead of loading its own."""
    from explorer.backbones import load
    from explorer.backbones.pool import BackboneRegistry

    loads, real_load = [], load.load_backbone

    def counted(spec, device=None):
        loads.append(spec)
        return real_load(spec, device=device)

    registry = BackboneRegistry(max_entries=1, loader=counted)
    monkeypatch.setattr(load, "load_backbone", lambda *a, **k: pytest.fail("the run loaded its own backbone"))
    manager = JobManager(borrow=registry.borrow)
    job = manager.start(config(tmp_path, "borrowed", epochs=1, backbone="demo", device="cpu"))
    wait(job)
    assert job.state == "done", job.error
    assert loads == ["demo"] and [s.spec for s in registry.slots()] == ["demo"] and registry.slots()[0].borrowers == 0
