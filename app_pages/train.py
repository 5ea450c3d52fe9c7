"""Train: a few-shot run in a background worker, with live progress, cancel and reconnect; or a sweep
(the grid as fields, on local worker processes: app_pages/ui/sweeps.py) with its runs' states live.

The run itself is ``explorer.training.jobs`` (one thread per job, one ``JobManager`` per server). The job
id sits in the URL (``?job=…``) so a reload reconnects to the running job; each job writes its own
``app-<name>-<id>.safetensors`` into the library folder, where the Library page lists it.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app_pages.ui import errors, resources, sweeps
from explorer.backbones import catalog as models
from explorer.core import settings
from explorer.core.fsio import safe_filename
from explorer.core.options import default_of, form_fields, form_label, widget_for
from explorer.methods import find_method, get_method, make_config, method_names
from explorer.training.config import TrainConfig, format_seconds
from explorer.training.jobs import JobManager

JOB_KEY = "job"


@st.cache_resource
def job_manager() -> JobManager:
    """One manager per server: jobs survive page reloads and are isolated by id; runs borrow the pool's backbones."""
    return JobManager(max_running=2, borrow=resources.backbone_registry().borrow)


def _config_from_form(values: dict, method_settings: dict) -> TrainConfig:
    """The run's TrainConfig, with the method's config from its own fields of the form."""
    name = safe_filename(values["name"].strip(), sep="-", default="run")
    method_config = make_config(values["method"], **method_settings)
    return TrainConfig(  # out: the job manager adds the job id (app-<name>-<id>.safetensors)
        dataset=values["dataset"].strip(), out=str(settings.library_folder() / f"app-{name}.safetensors"), name=name,
        backbone=values["backbone"].strip(), method_config=method_config, shots=int(values["shots"]) or None,
        epochs=int(values["epochs"]), seed=int(values["seed"]), lr=float(values["lr"]),
        faces=bool(values.get("faces", False)), device=settings.app_device(), precision=settings.default_precision(),
    )


def _method_fields(method, columns) -> dict:
    """One widget per field of the method's config that its form shows (``Method.form_fields``), made
    from the field's option metadata as the CLI makes its flags; a new method's options appear unchanged."""
    settings, shown = {}, form_fields(method.config_class, method.form_fields)
    if shown:
        st.caption(f"{method.title} settings (the flags of `train --learner {method.name}`)")
    for i, f in enumerate(shown):
        col, widget, key = columns[i % len(columns)], widget_for(f), f"train-{method.name}-{f.name}"
        default = method.form_defaults.get(f.name, default_of(method.config_class, f.name))
        label, help_text = form_label(f), f.metadata.get("help") or None
        if widget == "toggle":
            settings[f.name] = col.toggle(label, bool(default), key=key, help=help_text)
        elif widget == "choice":
            options = list(f.metadata["choices"])
            settings[f.name] = col.selectbox(label, options, index=options.index(default) if default in options else 0,
                                             key=key, help=help_text)
        elif widget == "int":
            settings[f.name] = int(col.number_input(label, value=int(default or 0), step=1, key=key, help=help_text))
        elif widget == "float":
            settings[f.name] = float(col.number_input(label, value=float(default or 0.0), key=key, help=help_text, format="%g"))
        else:  # text; an empty optional text is None
            text = col.text_input(label, "" if default is None else str(default), key=key, help=help_text)
            settings[f.name] = text if text or default is not None else None
    return settings


def _form() -> None:
    """The run form; defaults and choices come from the config dataclasses (as the CLI's flags do), the
    method's fields from the chosen method's config."""
    T = TrainConfig
    titles = {name: cls.title for name in method_names() if (cls := find_method(name)) is not None}  # usable ones
    st.subheader("New few-shot run")
    chosen = st.selectbox("Method", list(titles), format_func=titles.get, key="train-method")
    method = get_method(chosen)
    with st.form("train-form"):
        c1, c2, c3 = st.columns(3)
        values = {
            "method": chosen,
            "dataset": c1.text_input("Dataset", "dots:20", key="train-dataset",
                                     help="DATASET spec: dots:K[:N[:SEED]], utkface:DIR, csv:FILE, folder:DIR, list:ROOT:TRAIN.txt:VAL.txt:TEST.txt …"),
            "backbone": c2.text_input("Backbone", "demo", key="train-backbone",
                                      help="demo, NAME:TAG (open_clip), hf-hub:ORG/REPO, PATH or ARCH@PATH; a hub download shows its progress"),
            "name": c3.text_input("Name", "my-run", key="train-name"),
            "shots": c1.number_input("Shots per label (0 = all)", 0, 1000, 16, key="train-shots"),
            "epochs": c2.number_input("Epochs", 1, 500, default_of(T, "epochs"), key="train-epochs"),
            "lr": c3.number_input("Learning rate", 1e-6, 1.0, default_of(T, "lr"), format="%.4f", key="train-lr"),
            "seed": c1.number_input("Seed", 0, 10_000, default_of(T, "seed"), key="train-seed"),
            "faces": c2.toggle("Crop faces", default_of(T, "faces"), key="train-faces",
                               help="Crop each image to its largest face exactly as Predict does (for photos of people; "
                                    "images without a face are used whole and counted). Off: whole images."),
        }
        method_settings = _method_fields(method, st.columns(3))
        submitted = st.form_submit_button("Start training", type="primary")
    if submitted:
        job = job_manager().start(_config_from_form(values, method_settings))
        st.query_params[JOB_KEY] = job.id
        st.rerun()


@st.fragment(run_every=1.0)
def _job_panel(job_id: str) -> None:
    job = job_manager().get(job_id)
    if job is None:
        st.warning("That training job is not known to this server (it may have been restarted); start a new run.")
        return
    snap = job.snapshot()
    st.subheader(f"Run {job.config.name} · {snap['state']}")
    st.progress(_progress_value(snap), text=_progress_text(snap))
    if snap["history"]:
        hist = pd.DataFrame(snap["history"]).set_index("epoch")
        c1, c2 = st.columns(2)
        c1.caption("Training loss per epoch")
        c1.line_chart(hist[["train_loss"]])
        c2.caption("Validation MAE per epoch")
        c2.line_chart(hist[["val_mae"]])
    if snap["state"] in ("queued", "running"):
        if st.button("Cancel run", key=f"cancel-{job_id}"):
            job.cancel()
    elif snap["state"] == "done":
        test = snap["test"] or {}
        st.success(f"Finished: {snap['checkpoint']}" + (f" · test MAE {test['mae_exp']:.3f}" if test else "") + " · it is now in the Library.")
    elif snap["state"] == "cancelled":
        st.info(f"Cancelled. {snap['error'] or 'The best checkpoint so far is kept and listed in the Library.'}")
    else:
        st.error(snap["error"] or "The run failed.")


def _progress_value(snap: dict) -> float:
    """The bar: the backbone file's bytes while it downloads, else the run's fraction."""
    download = snap["download"]
    if snap["stage"] == "download" and download.get("total"):
        return min(1.0, download["done"] / download["total"])
    return min(1.0, snap["fraction"])


def _progress_text(snap: dict) -> str:
    """What the run is doing: the backbone download, images embedded with the time left, or the epoch."""
    embed, download = snap["embed"], snap["download"]
    if snap["stage"] == "download":
        return f"{models.download_text(snap['backbone'], download['done'], download['total'])} · {snap['elapsed']:.0f} s"
    if snap["stage"] == "embed" and embed.get("total"):
        where = f"{embed['done']:,} / {embed['total']:,} images · about {format_seconds(embed['eta_s'])} left"
    else:
        where = f"epoch {snap['epoch']}/{snap['epochs']}"
    return f"{snap['message'] or snap['stage']} · {where} · {snap['elapsed']:.0f} s"


def train_page() -> None:
    st.caption("Runs and sweeps train in the background on this server; reloading the page reconnects to the one in the URL.")
    job_id, sweep = st.query_params.get(JOB_KEY), st.query_params.get(sweeps.SWEEP_KEY)
    if job_id or sweep:
        if job_id:
            _job_panel(job_id)
        else:
            sweeps.sweep_panel(sweep)
        if st.button("New run or sweep"):
            st.query_params.pop(JOB_KEY if job_id else sweeps.SWEEP_KEY)
            st.rerun()
    else:
        what = st.segmented_control("Start", ["One run", "A sweep"], default="One run", key="train-what") or "One run"
        if what == "One run":
            _form()
        else:
            sweeps.sweep_form()


if __name__ == "__main__":
    errors.run_page(train_page)
