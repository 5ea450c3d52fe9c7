"""Train: a few-shot run in a background worker, with live progress, cancel and reconnect.

The run itself is ``explorer.training.jobs`` (one thread per job, one ``JobManager`` per server). The job
id sits in the URL (``?job=…``) so a reload reconnects to the running job; each job writes its own
``app-<name>-<id>.safetensors`` into the library folder, where the Library page lists it.
"""

from __future__ import annotations

import re

import pandas as pd
import streamlit as st

from app_pages.ui import errors, resources
from explorer.backbones import catalog as models
from explorer.core import settings
from explorer.core.options import choices_of, default_of
from explorer.methods import get_method, make_config, method_names
from explorer.methods.concepts import CONCEPT_PRESETS
from explorer.methods.prompt import LearnerConfig
from explorer.training.config import TrainConfig, format_seconds
from explorer.training.jobs import JobManager

JOB_KEY = "job"


@st.cache_resource
def job_manager() -> JobManager:
    """One manager per server: jobs survive page reloads and are isolated by id; runs borrow the pool's backbones."""
    return JobManager(max_running=2, borrow=resources.backbone_registry().borrow)


def _config_from_form(values: dict) -> TrainConfig:
    """The run's TrainConfig: the method's own config from the form's fields that it has."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", values["name"].strip()) or "run"
    method = get_method(values["learner"])
    learner_settings = {
        "num_context_tokens": int(values["context_tokens"]), "interpolation": values["interpolation"],
        "num_base_ranks": int(values["base_ranks"]), "template": values["template"], "concepts": values["concepts"],
    }
    fields = method.config_class.__dataclass_fields__
    learner = make_config(method.name, **{k: v for k, v in learner_settings.items() if k in fields})
    return TrainConfig(
        dataset=values["dataset"].strip(), out=str(settings.library_folder() / f"app-{name}.safetensors"), name=name,
        backbone=values["backbone"].strip(), learner=learner, shots=int(values["shots"]) or None,
        epochs=int(values["epochs"]), seed=int(values["seed"]), lr=float(values["lr"]),
        faces=bool(values.get("faces", False)), device=resources.device_setting(),
    )


def _form() -> None:
    """The run form; defaults and choices come from the config dataclasses (as the CLI's flags do)."""
    L, T = LearnerConfig, TrainConfig
    titles = {name: get_method(name).title for name in method_names()}
    with st.form("train-form"):
        st.subheader("New few-shot run")
        c1, c2, c3 = st.columns(3)
        values = {
            "dataset": c1.text_input("Dataset", "dots:20", help="DATASET spec: dots:K[:N[:SEED]], utkface:DIR, csv:FILE, folder:DIR, list:ROOT:TRAIN.txt:VAL.txt:TEST.txt …"),
            "backbone": c2.text_input("Backbone", "demo", help="demo, NAME:TAG (open_clip), hf-hub:ORG/REPO, PATH or ARCH@PATH; a hub download shows its progress"),
            "name": c3.text_input("Name", "my-run"),
            "learner": c1.selectbox("Learner", list(titles), format_func=titles.get),
            "interpolation": c2.selectbox("Interpolation (rank)", choices_of(L, "interpolation"),
                                          index=choices_of(L, "interpolation").index(default_of(L, "interpolation"))),
            "base_ranks": c3.number_input("Base ranks B (rank)", 1, 50, default_of(L, "num_base_ranks")),
            "context_tokens": c1.number_input("Context tokens n", 0, 60, default_of(L, "num_context_tokens")),
            "shots": c2.number_input("Shots per label (0 = all)", 0, 1000, 16),
            "epochs": c3.number_input("Epochs", 1, 500, default_of(T, "epochs")),
            "lr": c1.number_input("Learning rate", 1e-6, 1.0, default_of(T, "lr"), format="%.4f"),
            "seed": c2.number_input("Seed", 0, 10_000, default_of(T, "seed")),
            "template": c3.text_input("Template (zero-shot)", "a photo of {} dots."),
            "concepts": c1.selectbox("Concepts (NumCLIP)", list(CONCEPT_PRESETS), index=list(CONCEPT_PRESETS).index("dots"),
                                     help="NumCLIP's coarse concept bins (a preset; the CLI also takes a start,name file)"),
            "faces": c2.toggle("Crop faces", default_of(T, "faces"), key="train-faces",
                               help="Crop each image to its largest face exactly as Predict does (for photos of people; "
                                    "images without a face are used whole and counted). Off: whole images."),
        }
        submitted = st.form_submit_button("Start training", type="primary")
    if submitted:
        job = job_manager().start(_config_from_form(values))
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
    st.title("Train")
    st.caption("Runs train in the background on this server; reloading the page reconnects to the run in the URL.")
    job_id = st.query_params.get(JOB_KEY)
    if job_id:
        _job_panel(job_id)
        if st.button("New run"):
            del st.query_params[JOB_KEY]
            st.rerun()
    else:
        _form()


if __name__ == "__main__":
    errors.run_page(train_page)
