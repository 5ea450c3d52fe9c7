"""Sweeps in the app (AppTest): the Train page starts one on local worker processes and shows its runs'
states and results as they finish; Compare opens a sweep folder (the app's, or one made by the CLI on
any executor, also while it runs under Slurm) with its mean ± std table and curves.
"""

from __future__ import annotations

import json
import time

import pytest
from app_helpers import ok, open_page, plotly_charts, texts

from explorer import cli
from explorer.training import sweep_files

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _counts(at) -> str:
    """The sweep's progress bar text: "2 done, 0 running, 0 failed, 0 waiting"."""
    return " ".join(p.proto.text for p in at.get("progress"))


def _fill_sweep_form(at, name: str, seeds: str = "0,1", shots: str = "2"):
    at.segmented_control(key="train-what").set_value("A sweep").run()
    for key, value in (("sweep-dataset", "dots:4:6"), ("sweep-name", name), ("sweep-methods", "zeroshot"),
                       ("sweep-shots", shots), ("sweep-seeds", seeds), ("sweep-shifts", "none")):
        at.text_input(key=key).set_value(value)
    at.number_input(key="sweep-epochs").set_value(1)
    at.number_input(key="sweep-workers").set_value(2)
    return at


def test_the_sweep_form_refuses_a_bad_grid_in_one_sentence(env):
    at = _fill_sweep_form(open_page(env, "train"), "bad", seeds="zero")
    at.button(key="FormSubmitter:sweep-form-Start sweep").click().run()
    assert [e.value for e in at.error] == [
        "Shots, seeds and label shifts are comma lists of numbers (shots may be 'all', shifts C:S or none)."]
    assert not (env["folder"] / "sweeps" / "bad").exists()


@pytest.mark.slow
def test_train_page_runs_a_sweep_on_local_workers_and_compare_opens_it(env):
    at = _fill_sweep_form(open_page(env, "train"), "apptest-sweep")
    at.button(key="FormSubmitter:sweep-form-Start sweep").click().run()
    ok(at)
    assert at.query_params["sweep"] in ("apptest-sweep", ["apptest-sweep"])
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and "2 done" not in _counts(at):
        time.sleep(1.0)
        at.run()
    ok(at)
    assert _counts(at) == "2 done, 0 running, 0 failed, 0 waiting" and "| zeroshot | 2 | 2 |" in texts(at)
    folder = env["folder"] / "sweeps" / "apptest-sweep"
    assert (folder / "sweep.json").is_file() and len(list(folder.glob("runs/*/result.json"))) == 2
    assert len(list((folder / ".submitit").glob("*_log.out"))) == 2  # two local worker processes
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "sweep apptest-sweep · finished" not in texts(at).lower():
        time.sleep(0.5)
        at.run()
    assert "Compare page" in texts(at)

    compare = open_page(env, "compare")
    compare.selectbox(key="sweep-choice").set_value("apptest-sweep").run()
    ok(compare)
    assert "| zeroshot | 2 | 2 |" in texts(compare)
    assert len([c for c in plotly_charts(compare) if "curves" in c.proto.id]) == 2


@pytest.mark.slow
def test_compare_shows_a_cli_sweep_with_a_failed_run_and_a_slurm_task_still_running(env, tmp_path, capsys):
    out = tmp_path / "cli-sweep"
    code = cli.main(["sweep", "dots:4:6", "--methods", "zeroshot,ordinalclip:linear", "--base-ranks", "9", "--shots-list", "1,2",
                     "--seeds", "0", "--epochs", "1", "--out-dir", str(out), "--cache-dir", str(env["cache"] / "features"),
                     "--device", "cpu", "--quiet"])
    assert code == 1
    capsys.readouterr()
    # a third run of the plan, running as a Slurm array task on another node (its heartbeat is fresh)
    runs = sweep_files.read_plan(out)
    extra = runs[0].__class__(runs[0].label, 4, 0, runs[0].config.__class__.from_dict({**runs[0].config.to_dict(), "shots": 4}))
    sweep_files.write_plan(out, runs + [extra])
    sweep_files.write_run_file(out, extra, sweep_files.RUNNING, {"host": "node17", "pid": 4242, "job": "1234_2",
                                                                 "stage": "epoch 1/1", "updated": time.time()})
    at = open_page(env, "compare")
    at.text_input(key="curves-folder").set_value(str(out)).run()
    ok(at)
    text = texts(at)
    assert _counts(at) == "2 done, 1 running, 2 failed, 0 waiting"
    assert "| ordinalclip:linear | 1 | 0 | failed: num_base_ranks must be between 1 and num_ranks (5); got 9. |" in text
    states = next(df.value for df in at.dataframe if "state" in df.value.columns)
    running = states[states["run"] == "zeroshot-shots4-seed0"].iloc[0]
    assert running["state"].endswith("running") and "job 1234_2" in running["detail"] and "node17" in running["detail"]
    assert len([c for c in plotly_charts(at) if "curves" in c.proto.id]) == 2
    # a sweep folder before any run finished
    empty = tmp_path / "just-started"
    sweep_files.write_plan(empty, [extra])
    at.text_input(key="curves-folder").set_value(str(empty)).run()
    ok(at)
    assert "No run of this sweep has finished yet." in texts(at) and json.loads((empty / "sweep.json").read_text())["runs"]
