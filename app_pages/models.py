"""Models: curated backbones and any spec, cached or not, download with progress, zero-shot presets."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app_pages.ui import errors, resources
from explorer.backbones import catalog as models
from explorer.backbones import hub
from explorer.core import settings
from explorer.training import presets
from explorer.training.presets import PRESETS

TYPED = "models-typed-specs"  # session key: specs the user added


@st.cache_resource(show_spinner=False)
def _downloads() -> dict[str, models.DownloadJob]:
    """Download jobs by spec, one dict per server (a reloaded page finds its download again)."""
    return {}


@st.cache_data(show_spinner=False, ttl=60)
def _statuses(specs: tuple[str, ...], descriptions: tuple[str, ...], cache_key: str) -> list[models.ModelStatus]:
    online = models.hub_online()
    return [models.model_status(s, online, description=d) for s, d in zip(specs, descriptions)]


def _specs() -> tuple[tuple[str, ...], tuple[str, ...]]:
    typed = list(st.session_state.get(TYPED, []))
    pairs = list(models.CURATED) + [(s, "added by you") for s in typed if s not in dict(models.CURATED)]
    return tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)


def _table(statuses: list[models.ModelStatus]) -> None:
    rows = [{"backbone": s.spec, "description": s.description, "cached": "yes" if s.cached else "no",
             "download size": "—" if s.cached else models.format_size(s.size), "status": s.note} for s in statuses]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")


def _download_panel(status: models.ModelStatus) -> None:
    jobs = _downloads()
    job = jobs.get(status.spec)
    if job is not None and job.active:
        _progress_fragment(job)
        return
    if job is not None and job.state != "done":
        (st.info if job.state == "cancelled" else st.error)(job.error or "The download stopped.")
    if status.cached:
        st.success(f"{status.spec} is cached: it loads without the network.")
    elif not status.downloadable:
        st.warning(status.note)
    elif st.button(f"Download {status.spec}", key="models-download", type="primary"):
        jobs[status.spec] = models.start_download(status.spec)
        st.rerun()


def _progress_fragment(job: models.DownloadJob) -> None:
    @st.fragment(run_every=0.5)
    def _show():
        if not job.active:
            st.rerun()
        st.progress(job.fraction, text=models.download_text(job.filename or job.spec, job.done, job.total))
        if st.button("Cancel download", key="models-cancel"):
            job.cancel()

    _show()


def _preset_panel(status: models.ModelStatus) -> None:
    st.subheader("Zero-shot checkpoint from a preset")
    names = list(PRESETS)
    preset = st.selectbox("Preset", names, format_func=lambda n: f"{n} · {PRESETS[n].title}", key="models-preset")
    st.caption(f"{len(PRESETS[preset].labels)} ranks, {len(PRESETS[preset].templates)} templates averaged per rank; "
               f"written into the library folder `{settings.library_folder()}`.")
    if not st.button("Build checkpoint", key="models-build", disabled=not status.cached):
        if not status.cached:
            st.caption("The backbone must be cached (or local) first.")
        return
    slot = resources.backbone_slot(status.spec)
    with st.spinner(f"Loading {status.spec} and encoding the prompts…"):
        with slot.handle().use() as backbone:
            path = presets.build_preset_for(status.spec, preset, settings.library_folder(), backbone=backbone)
    st.success(f"Wrote {path.name}: it is now in the Library (and usable on Predict).")


def models_page() -> None:
    env = hub.hub_environment()
    st.caption(f"Hub: `{env.endpoint}` · cache `{env.cache_dir}`" + (" · HF_HUB_OFFLINE is set" if env.offline else ""))
    specs, descriptions = _specs()
    # a download that ended (each job once: a retry is another job) may change a status
    ended = sorted(f"{spec}:{job.state}:{id(job)}" for spec, job in _downloads().items() if not job.active)
    statuses = _statuses(specs, descriptions, f"{env.endpoint}|{env.cache_dir}|{env.offline}|{ended}")
    _table(statuses)
    with st.form("models-add", clear_on_submit=True):
        typed = st.text_input("Another backbone: NAME:TAG, hf-hub:ORG/REPO, a local path or ARCH@PATH")
        if st.form_submit_button("Add") and typed.strip():
            st.session_state[TYPED] = list(dict.fromkeys([*st.session_state.get(TYPED, []), typed.strip()]))
            st.rerun()
    by_spec = {s.spec: s for s in statuses}
    chosen = st.selectbox("Backbone", list(by_spec), key="models-chosen")
    status = by_spec[chosen]
    with errors.guard("the download"):
        _download_panel(status)
    with errors.guard("the preset build"):
        _preset_panel(status)


if __name__ == "__main__":
    errors.run_page(models_page)
