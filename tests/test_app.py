"""The Streamlit app through streamlit.testing (AppTest): every page, the main interactions, uploads
(good, bad, oversized), error boundaries. The library is a temporary folder made on the demo backbone
(``ORDINAL_EXPLORER_CHECKPOINTS``), the cache another one (``ORDINAL_EXPLORER_CACHE``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from app_helpers import APP, TIMEOUT, ok, open_page, plotly_charts, texts, wait_for_backbone
from app_testdata import face_image, image_bytes, plain_image
from PIL import Image
from streamlit.testing.v1 import AppTest

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- every page ----------------------------------------------------------------------------------


@pytest.mark.parametrize("page, title", [
    (None, "Library"), ("geometry", "Geometry"), ("lab", "Interpolation lab"), ("compare", "Compare"),
    ("predict", "Predict"), ("train", "Train"), ("models", "Models"),
])
def test_every_page_renders_with_the_backbone_in_the_sidebar(env, page, title):
    at = wait_for_backbone(open_page(env, page))
    assert at.title[0].value == title
    side = " ".join(m.value for m in at.sidebar.markdown)
    assert "Active checkpoint:" in side
    assert "`demo` on **cpu**" in side
    assert any("demo backbone is in use" in w.value for w in at.sidebar.warning)
    ok(at)


def test_query_param_picks_the_active_checkpoint(env):
    at = open_page(env, checkpoint="dots-plain")
    assert "dots-plain" in " ".join(m.value for m in at.sidebar.markdown)
    assert at.session_state["active_checkpoint"].endswith("dots-plain.safetensors")


def _top_level_index(at, heading: str) -> int:
    """The position, among the main area's top-level elements, of the heading ``heading``."""
    return next(i for i, node in at.main.children.items() if getattr(node, "value", None) == heading)


def test_a_page_keeps_its_layout_when_the_listing_shows_progress(env, tmp_path):
    """The listing's progress bar (a cold cache, at least PROGRESS_FROM files to read) is drawn in the run's
    notices above the page, so the page's elements keep their places in the next run: had one moved, the
    browser drops the URL binding of the page's widgets and the next click no longer reaches the link."""
    from app_helpers import app_environment

    from app_pages.ui import listing

    assert len([p for p in env["folder"].iterdir() if p.is_file()]) >= listing.PROGRESS_FROM
    with app_environment(env["folder"], tmp_path / "cold-cache"):
        at = AppTest.from_file(APP, default_timeout=TIMEOUT)
        at.query_params["checkpoint"] = "dots-plain"
        at.switch_page("app_pages/geometry.py").run()
        first = _top_level_index(ok(at), "Projections")
        at.run()
        assert _top_level_index(ok(at), "Projections") == first


# --- library ----------------------------------------------------------------------------------------


def test_library_lists_good_and_bad_files(env):
    at = open_page(env)
    df = at.dataframe[0].value
    assert len(df) == 12
    status = dict(zip(df["file"], df["status"]))
    assert status["dots-rank-linear.safetensors"] == "ok"
    assert status["backbone-weights.safetensors"] == "not a checkpoint"
    assert status["evil.pt"] == "error" and status["corrupt.safetensors"] == "error"
    assert status["lost-backbone.safetensors"] == "backbone missing"
    messages = " ".join(e.value for e in at.error) + " ".join(w.value for w in at.warning)
    for words in ("would import and call os.system", "not a safetensors file", "empty (0 bytes)", "not an explorer checkpoint",
                  "pickles are never loaded", "Backbone weight file not found"):
        assert words in messages
    assert not any("Traceback" in e.value for e in at.error)


def test_library_picks_active_and_compare_set(env):
    at = open_page(env)
    target = str(env["folder"] / "dots-rank-inv_prop.safetensors")
    sel = at.selectbox(key="library-active")
    assert any("dots-rank-inv_prop" in o for o in sel.options)
    sel.set_value(target).run()
    ok(at)
    assert at.session_state["active_checkpoint"] == target
    keys = [str(env["folder"] / n) for n in ("dots-plain.safetensors", "ages-rank-normal.safetensors")]
    at.multiselect(key="library-compare").set_value(keys).run()
    ok(at)
    assert sorted(at.session_state["compare_checkpoints"]) == sorted(keys)
    # the choices follow the user to other pages
    at.switch_page("app_pages/geometry.py").run()
    ok(at)
    assert at.selectbox(key="geometry-checkpoint").value == target
    at.switch_page("app_pages/compare.py").run()
    assert sorted(at.multiselect(key="compare-checkpoints").value) == sorted(keys)


def _onnx_entry(env, name: str):
    from explorer.store import library as lib

    return lib.inspect_entry(Path(env["folder"] / f"{name}.safetensors"))[0], env["folder"] / f"{name}.safetensors"


def test_library_builds_the_onnx_file_once_and_offers_it(env):
    pytest.importorskip("onnxruntime")
    from explorer.predict.onnx_runtime import SNIPPET, load_onnx
    from explorer.store import library as lib

    entry, path = _onnx_entry(env, "dots-plain")
    cached = lib.onnx_cache_path(entry.content_hash)
    assert cached.parent == env["cache"] / "onnx" and not cached.exists()
    at = open_page(env)
    at.selectbox(key="library-active").set_value(str(path)).run()
    assert not at.get("download_button") and not at.main.code  # the snippet comes with a file to run
    at.button(key="library-onnx-build").click().run()
    ok(at)
    assert SNIPPET.strip() in [c.value.strip() for c in at.code]
    assert not [e.value for e in at.error if "ONNX" in e.value or "went wrong" in e.value]  # (the others: bad files)
    assert cached.is_file() and [b.label for b in at.get("download_button")][0].startswith("Download dots-plain.onnx")
    model = load_onnx(cached)
    assert model.meta["checkpoint"]["name"] == "dots-plain" and model.run(np.zeros((2, 3, 64, 64), np.float32))[1].shape == (2,)
    before = cached.stat()
    again = open_page(env)  # a second visit: the cached file is offered as it is
    again.selectbox(key="library-active").set_value(str(path)).run()
    ok(again)
    assert len(again.get("download_button")) == 1 and "library-onnx-build" not in [b.key for b in again.button]
    after = cached.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_library_onnx_error_is_one_sentence(env, monkeypatch):
    from explorer.core.errors import ExplorerError
    from explorer.store import library as lib
    from explorer.store import onnx_export as deploy

    def missing():
        raise ExplorerError("ONNX export needs the onnx package; install it with 'pip install onnx onnxruntime'.")

    monkeypatch.setattr(deploy, "_require_onnx", missing)
    entry, path = _onnx_entry(env, "dots-rank-inv_prop")
    at = open_page(env)
    at.selectbox(key="library-active").set_value(str(path)).run()
    at.button(key="library-onnx-build").click().run()
    ok(at)
    assert [e.value for e in at.error if "onnx package" in e.value] and not at.get("download_button")
    assert not any("Traceback" in e.value or "\n" in e.value for e in at.error)
    assert not lib.onnx_cache_path(entry.content_hash).exists()


def test_library_add_by_path_and_uploads(env, tmp_path):
    from app_testdata import build, demo_backbone

    from explorer.store.checkpoints import save_checkpoint

    extra = save_checkpoint(tmp_path / "outside.safetensors", build("ordinalclip", seed=9), demo_backbone(), name="outside-ckpt")
    at = open_page(env)
    at.text_input(key="library-path").input(str(extra))
    at.button[0].click().run()  # the form's Add button
    ok(at)
    assert any("Added outside-ckpt" in s.value for s in at.success)
    df = at.dataframe[0].value
    assert "outside-ckpt" in set(df["name"]) and "added" in set(df["source"])
    # a path that does not exist
    at.text_input(key="library-path").input(str(tmp_path / "nope.safetensors"))
    at.button[0].click().run()
    ok(at)
    assert any("No file at" in e.value for e in at.error)
    # uploads: a pickle is refused, a good checkpoint is added
    at.file_uploader(key="library-upload").set_value(("evil.pt", (env["folder"] / "evil.pt").read_bytes(), "application/octet-stream")).run()
    ok(at)
    assert any(e.value.startswith("evil.pt is a pickle that would import and call os.system") for e in at.error)
    data = (env["folder"] / "dots-plain.safetensors").read_bytes()
    at.file_uploader(key="library-upload").set_value(("mine.safetensors", data, "application/octet-stream")).run()
    ok(at)
    assert any("Added dots-plain" in s.value for s in at.success)
    assert not list(Path(env["cache"]).glob("uploaded-checkpoints/*/evil.pt"))  # rejected uploads are not kept


# --- geometry ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_geometry_numbers_views_window_and_projections(env):
    from explorer.analysis import geometry
    from explorer.store.checkpoints import load_checkpoint

    at = open_page(env, "geometry", checkpoint="ages-rank-normal")
    P = load_checkpoint(env["folder"] / "ages-rank-normal.safetensors").prototypes.matrix.numpy()
    report = geometry.ordinality_report(P)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Ordinality (all pairs)"] == f"{100 * report['ordinality']:.2f} %"
    assert metrics["Violation rate"] == f"{100 * report['violation_rate']:.2f} %"
    assert metrics["Ranks in window"] == "101"
    assert len(plotly_charts(at)) == 4  # heatmap, violations, adjacent, projection
    spans = at.dataframe[0].value
    assert list(spans["span s"]) == list(report["spans"])

    at.select_slider[0].set_range("15", "75").run()
    ok(at)
    windowed = geometry.ordinality_report(P, (15, 75))
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Ranks in window"] == "61"
    assert metrics["Ordinality (all pairs)"] == f"{100 * windowed['ordinality']:.2f} %"

    at.segmented_control(key="geometry-view").set_value("softmax").run()
    ok(at)
    at.segmented_control(key="geometry-method").set_value("tsne").run()
    ok(at)
    at.segmented_control(key="geometry-dims").set_value(3).run()
    ok(at)
    assert len(plotly_charts(at)) == 4
    files = list(Path(env["cache"]).glob("projections/*-tsne-3-0.npy"))
    assert len(files) == 1 and "-w15_75-" in files[0].name
    assert np.load(files[0]).shape == (61, 3)


# --- interpolation lab ---------------------------------------------------------------------------------


def test_lab_recomputes_schemes_and_other_b(env):
    at = wait_for_backbone(open_page(env, "lab", checkpoint="dots-rank-linear"))
    assert at.selectbox(key="lab-checkpoint").value.endswith("dots-rank-linear.safetensors")
    table = at.dataframe[0].value
    assert list(table["prototypes"]) == ["stored (trained: linear, B=3)", "linear B=3", "inv_prop B=3", "normal (bw 1) B=3"]
    # the trained scheme recomputed equals the stored prototypes
    stored, same = table.iloc[0], table.iloc[1]
    assert same["ordinality %"] == pytest.approx(stored["ordinality %"])
    assert same["min cosine to stored"] == pytest.approx(1.0, abs=1e-5)
    assert len(plotly_charts(at)) == 1 + 4 + 1  # weights, 4 heatmaps, adjacent
    at.number_input(key=next(k for k in _widget_keys(at) if k.startswith("lab-b-"))).set_value(6).run()
    ok(at)
    labels = list(at.dataframe[0].value["prototypes"])
    assert "linear B=6 (resampled)" in labels
    at.multiselect(key="lab-schemes").set_value(["normal"]).run()
    ok(at)
    assert len(at.dataframe[0].value) == 2


def test_lab_explains_when_the_active_checkpoint_is_not_a_rank_learner(env):
    at = open_page(env, "lab", checkpoint="dots-plain")
    assert any("not a full OrdinalCLIP checkpoint" in i.value for i in at.info)
    assert not at.selectbox(key="lab-checkpoint").value.endswith("dots-plain.safetensors")


def _widget_keys(at) -> list[str]:
    return [k for k in at.session_state if isinstance(k, str)]


# --- compare -------------------------------------------------------------------------------------------


def test_compare_tables_per_rank_errors_and_one_image(env):
    at = wait_for_backbone(open_page(env, "compare"))
    keys = [str(env["folder"] / f"{n}.safetensors") for n in ("dots-rank-linear", "dots-plain", "ages-rank-normal")]
    at.multiselect(key="compare-checkpoints").set_value(keys).run()
    ok(at)
    ordinality, metrics = at.dataframe[0].value, at.dataframe[1].value
    assert list(ordinality.columns) == ["figure", "dots-rank-linear", "dots-plain", "ages-rank-normal"]  # one column each
    assert {"method", "ranks", "ordinality %", "violations %", "span 1 %"} <= set(ordinality["figure"])
    assert list(metrics["split"]) == ["test", "unspecified", "none stored"]
    assert metrics.loc[0, "mae_exp"] == pytest.approx(2.1)
    charts = plotly_charts(at)
    assert len(charts) == 3 + 1  # 3 heatmaps + per-rank errors (the reliability diagram waits for a dataset spec)
    assert "No per-rank errors stored for ages-rank-normal" in texts(at)
    at.file_uploader(key="compare-image").set_value(("face.png", image_bytes(face_image()), "image/png")).run()
    ok(at)
    assert len(plotly_charts(at)) == 5
    dists = at.dataframe[2].value
    assert list(dists["checkpoint"]) == ["dots-rank-linear", "dots-plain", "ages-rank-normal"]
    assert "Face found" in texts(at)


def test_compare_two_faces_pick_the_second(env):
    import face_photos as fp
    from app_testdata import demo_backbone

    from explorer.predict.uploads import prepare_upload
    from explorer.store.checkpoints import load_checkpoint

    image, _ = fp.two_faces()
    data = image_bytes(image, "JPEG", quality=92)
    names = ("ages-rank-normal", "dots-rank-linear")
    at = wait_for_backbone(open_page(env, "compare"))
    at.multiselect(key="compare-checkpoints").set_value([str(env["folder"] / f"{n}.safetensors") for n in names]).run()
    at.file_uploader(key="compare-image").set_value(("two.jpg", data, "image/jpeg")).run()
    ok(at)
    picker = at.selectbox(key=next(k for k in (w.key for w in at.selectbox) if k and k.startswith("compare-face-")))
    assert picker.label == "Face used" and len(picker.options) == 2 and picker.index == 0

    def expected_values(face_index: int) -> list[float]:
        crop = prepare_upload(data, "two.jpg", face_index=face_index).crop
        feats = demo_backbone().encode_images([crop.image])
        return [load_checkpoint(env["folder"] / f"{n}.safetensors").predictor().predict(feats).record(0)["value"] for n in names]

    def shown() -> list[float]:
        table = next(df.value for df in at.dataframe if "expected" in df.value)
        assert list(table["checkpoint"]) == list(names)
        return list(table["expected"])

    assert shown() == pytest.approx(expected_values(0), abs=0.006)
    picker.set_value(1).run()
    ok(at)
    assert at.selectbox(key=picker.key).index == 1 and "face 2" in texts(at)
    second = expected_values(1)
    assert shown() == pytest.approx(second, abs=0.006)
    assert second[0] != pytest.approx(expected_values(0)[0], abs=0.05)


def test_compare_shows_one_colour_scale(env):
    at = open_page(env, "compare")
    assert "one colour scale" in texts(at)


# --- predict ------------------------------------------------------------------------------------------


def test_predict_one_image(env):
    at = wait_for_backbone(open_page(env, "predict", checkpoint="ages-rank-normal"))
    assert at.toggle(key="predict-whole").value is False  # ages: a face checkpoint crops by default
    at.file_uploader(key="predict-images").set_value(("face.jpg", image_bytes(face_image(), "JPEG"), "image/jpeg")).run()
    ok(at)
    metrics = {m.label: m.value for m in at.metric}
    assert set(metrics) == {"Expected value (years)", "Most probable (years)", "Median (years)", "90 % interval (years)"}
    assert 0 <= float(metrics["Expected value (years)"]) <= 100
    assert len(plotly_charts(at)) == 1
    assert any("Face found" in i.value for i in at.info)
    # the numbers are the explorer's
    from app_testdata import demo_backbone

    from explorer.predict.uploads import predict_uploads, prepare_uploads
    from explorer.store.checkpoints import load_checkpoint

    ckpt = load_checkpoint(env["folder"] / "ages-rank-normal.safetensors")
    ref = predict_uploads(prepare_uploads([("face.jpg", image_bytes(face_image(), "JPEG"))]), ckpt.predictor(), demo_backbone())
    assert metrics["Expected value (years)"] == f"{ref.record(0)['expected_value']:.1f}"
    # switch: whole image
    at.toggle(key="predict-whole").set_value(True).run()
    ok(at)
    assert any("face cropping switched off" in i.value for i in at.info)


def test_predict_two_faces_pick_the_second(env):
    import face_photos as fp
    from app_testdata import demo_backbone

    from explorer.predict.uploads import predict_uploads, prepare_uploads
    from explorer.store.checkpoints import load_checkpoint

    image, _ = fp.two_faces()
    data = image_bytes(image, "JPEG", quality=92)
    at = wait_for_backbone(open_page(env, "predict", checkpoint="ages-rank-normal"))
    at.file_uploader(key="predict-images").set_value(("two.jpg", data, "image/jpeg")).run()
    ok(at)
    picker = at.selectbox(key=next(k for k in (w.key for w in at.selectbox) if k and k.startswith("predict-face-")))
    assert picker.label == "Face used"
    assert len(picker.options) == 2 and picker.index == 0 and "largest" in picker.options[0]
    assert any("2 faces found" in i.value and "largest" in i.value for i in at.info)
    ckpt = load_checkpoint(env["folder"] / "ages-rank-normal.safetensors")
    refs = [predict_uploads(prepare_uploads([("two.jpg", data)], face_choices={0: i}), ckpt.predictor(), demo_backbone()).record(0)
            for i in (0, 1)]
    expected = {m.label: m.value for m in at.metric}["Expected value (years)"]
    assert expected == f"{refs[0]['expected_value']:.1f}"
    picker.set_value(1).run()
    ok(at)
    assert any("face 2" in i.value for i in at.info)
    assert {m.label: m.value for m in at.metric}["Expected value (years)"] == f"{refs[1]['expected_value']:.1f}"
    assert refs[0]["expected_value"] != pytest.approx(refs[1]["expected_value"], abs=0.05)
    assert at.selectbox(key=picker.key).index == 1
    at.run()  # the choice stays
    ok(at)
    assert any("face 2" in i.value for i in at.info)


def test_predict_many_images_with_bad_ones(env):
    at = wait_for_backbone(open_page(env, "predict", checkpoint="dots-rank-linear"))
    assert at.toggle(key="predict-whole").value is True  # a whole-image checkpoint: no face cropping by default
    at.toggle(key="predict-whole").set_value(False).run()  # crop faces anyway
    big = Image.new("1", (8000, 6000))  # 48 MP: over the 40 MP limit, tiny as a PNG
    files = [
        ("face.png", image_bytes(face_image()), "image/png"),
        ("grass.webp", image_bytes(plain_image(), "WEBP"), "image/webp"),
        ("notes.png", b"just some text", "image/png"),
        ("empty.bmp", b"", "image/bmp"),
        ("huge.png", image_bytes(big), "image/png"),
        ("grey.tiff", image_bytes(face_image().convert("L"), "TIFF"), "image/tiff"),
        ("cmyk.jpg", image_bytes(face_image().convert("CMYK"), "JPEG"), "image/jpeg"),
        ("alpha.png", image_bytes(face_image().convert("RGBA")), "image/png"),
    ]
    at.file_uploader(key="predict-images").set_value(files).run()
    ok(at)
    errors = [e.value for e in at.error]
    assert any(e.startswith("notes.png is not an image") for e in errors)
    assert any(e.startswith("empty.bmp is empty") for e in errors)
    assert any(e.startswith("huge.png is 8000x6000 pixels, over the 40 MP limit") for e in errors)
    table = at.dataframe[0].value
    assert list(table["image"]) == [f[0] for f in files]
    assert (table["error"].fillna("") == "").sum() == 5
    assert table.loc[1, "face"] == "no (whole image)" and table.loc[0, "face"] == "yes"
    assert len(at.get("download_button")) == 1
    at.selectbox(key="predict-show").set_value(1).run()
    ok(at)
    assert any("No face found: the whole image is used" in w.value for w in at.warning)
    assert len(plotly_charts(at)) == 1


def test_predict_refuses_a_checkpoint_whose_backbone_is_missing(env):
    at = open_page(env, "predict", checkpoint="lost-backbone")
    at.file_uploader(key="predict-images").set_value(("face.png", image_bytes(face_image()), "image/png")).run()
    ok(at)
    assert any("needs a backbone that is not available" in e.value for e in at.error)
    assert any("backbone is not available" in e.value for e in at.sidebar.error)


def test_predict_bytes_is_the_upload_handler(env):
    """The page's upload handling as a function of (name, bytes) pairs."""
    at = open_page(env, "predict")  # builds the caches inside a script run
    ok(at)
    script = f"""
import sys
sys.path.insert(0, {str(Path(APP).parent)!r})
import streamlit as st
from app_pages.ui import errors, listing
from app_pages.ui.sections.predict import predict_bytes
entry = next(e for e in listing.library_entries() if e.name == "dots-rank-linear")
result = predict_bytes(entry, [("a.png", {image_bytes(face_image())!r}), ("b.png", b"")])
st.write(f"ok={{[it.ok for it in result.items]}} expected={{result.record(0)['expected_value']:.3f}}")
"""
    at2 = AppTest.from_string(script, default_timeout=TIMEOUT).run()
    ok(at2)
    assert "ok=[True, False]" in at2.markdown[0].value


# --- error boundaries ------------------------------------------------------------------------------------


def test_errors_become_one_line_messages():
    script = """
import sys
sys.path.insert(0, %r)
import streamlit as st
from app_pages.ui import errors, listing
from explorer.core.errors import ExplorerError

def explorer_error():
    raise ExplorerError("The thing is wrong; fix it.")

def unexpected():
    raise RuntimeError("kaboom\\nsecond line")

errors.run_page(explorer_error)
errors.run_page(unexpected)
with errors.guard("the section"):
    raise KeyError("k")
st.write("still running")
""" % str(Path(APP).parent)
    at = AppTest.from_string(script, default_timeout=TIMEOUT).run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert errors[0] == "The thing is wrong; fix it."
    assert "RuntimeError: kaboom second line" in errors[1] and "\n" not in errors[1]
    assert "the section" in errors[2] and "KeyError" in errors[2]
    assert at.markdown[-1].value == "still running"


def test_empty_library(tmp_path, monkeypatch):
    monkeypatch.setenv("ORDINAL_EXPLORER_CHECKPOINTS", str(tmp_path))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    ok(at)
    assert any("No usable checkpoint yet" in i.value for i in at.info)
    side = " ".join(m.value for m in at.sidebar.markdown)
    assert "**Active checkpoint:** none" in side
    assert "none loaded" in side or "**Backbone:** `demo`" in side  # backbones are per server: another test may have loaded it
    for page in ("geometry", "lab", "compare", "predict", "train"):
        at.switch_page(f"app_pages/{page}.py").run()
        ok(at)


# --- train ---------------------------------------------------------------------------------------


def _job_file(at, env, name: str) -> Path:
    """The checkpoint of the Train page's job (its id in the URL): ``app-<name>-<id>.safetensors``."""
    job_id = at.query_params["job"]
    return env["folder"] / f"app-{name}-{job_id[0] if isinstance(job_id, list) else job_id}.safetensors"


def _start_run(env, name: str, epochs: int = 2) -> AppTest:
    at = open_page(env, "train")
    at.text_input(key="train-dataset").set_value("dots:3:6")  # dataset
    at.text_input(key="train-name").set_value(name)  # name
    at.number_input(key="train-shots").set_value(2)  # shots
    at.number_input(key="train-epochs").set_value(epochs)  # epochs
    at.button[0].click().run()
    return ok(at)


@pytest.mark.slow
def test_train_page_runs_a_job_to_completion_and_the_checkpoint_reaches_the_library(env):
    at = _start_run(env, "apptest")
    ok(_run_job_to_end(at, 120))
    assert not at.error, [e.value for e in at.error]
    assert "now in the Library" in at.success[0].value
    path = _job_file(at, env, "apptest")
    assert path.is_file() and str(path) in at.success[0].value
    library = open_page(env)
    files = [str(n) for df in library.dataframe if "file" in df.value for n in df.value["file"]]
    assert path.name in files, files


@pytest.mark.slow
def test_two_runs_with_the_same_name_started_together_keep_their_own_checkpoints(env):
    """Two sessions start a run named "twin" at once: two files (the job id in each name), each run's
    own history, both load and both are listed."""
    from explorer.store.checkpoints import load_checkpoint

    first, second = _start_run(env, "twin", epochs=2), _start_run(env, "twin", epochs=3)
    paths = [_job_file(at, env, "twin") for at in (first, second)]
    assert paths[0] != paths[1]
    try:
        for at, epochs, path in ((first, 2, paths[0]), (second, 3, paths[1])):
            ok(_run_job_to_end(at, 180))
            assert not at.error, [e.value for e in at.error]
            assert str(path) in at.success[0].value
            ckpt = load_checkpoint(path)
            assert ckpt.name == "twin" and ckpt.meta["training"]["epochs"] == epochs
            history = path.with_name(path.stem + ".history.jsonl").read_text().splitlines()
            assert [json.loads(line)["epoch"] for line in history] == list(range(epochs))  # 0-based on disk
        assert sorted(p.name for p in env["folder"].glob("app-twin-*.safetensors")) == sorted(p.name for p in paths)
        library = open_page(env)
        files = [str(n) for df in library.dataframe if "file" in df.value for n in df.value["file"]]
        assert {p.name for p in paths} <= set(files)
    finally:
        for leftover in env["folder"].glob("app-twin-*"):
            leftover.unlink()


def _run_job_to_end(at, seconds: float = 180) -> AppTest:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        at.run()
        if at.success or at.error:
            break
        time.sleep(0.5)
    return at


@pytest.mark.slow
def test_train_page_crops_faces_when_asked(env, tmp_path):
    """The Train page's "Crop faces" toggle trains on Predict's crops; the checkpoint says so and Predict
    then crops faces by default for it."""
    import face_photos as fp

    from explorer.data.inputs import checkpoint_inputs
    from explorer.store.checkpoints import load_checkpoint

    data = fp.write_scene_dataset(tmp_path)
    at = open_page(env, "train")
    at.text_input(key="train-dataset").set_value(f"csv:{data}")  # dataset
    at.text_input(key="train-name").set_value("apptest-faces")  # name
    at.number_input(key="train-shots").set_value(0)  # shots: all
    at.number_input(key="train-epochs").set_value(1)  # epochs
    at.toggle(key="train-faces").set_value(True)
    at.button[0].click().run()
    ok(_run_job_to_end(at))
    assert not at.error, [e.value for e in at.error]
    path = _job_file(at, env, "apptest-faces")
    try:
        record = checkpoint_inputs(load_checkpoint(path).meta)
        assert record["faces"] and record["cropped"], record
        predict = wait_for_backbone(open_page(env, "predict", checkpoint=path.stem))
        assert predict.toggle(key="predict-whole").value is False
    finally:
        for leftover in env["folder"].glob("app-apptest-faces*"):
            leftover.unlink()


@pytest.mark.slow
def test_numclip_from_the_train_page_to_geometry_and_predict(env):
    """A NumCLIP run trained on the Train page lands in the Library; Geometry shows its 5 concept
    prototypes and Predict its concept distribution with the regressed value."""
    at = open_page(env, "train")
    at.selectbox(key="train-method").set_value("numclip").run()  # the method (outside the form): its fields appear
    assert at.text_input(key="train-numclip-concepts").value == "dots"
    at.text_input(key="train-dataset").set_value("dots:6:8")  # dataset
    at.text_input(key="train-name").set_value("apptest-numclip")  # name
    at.number_input(key="train-epochs").set_value(3)  # epochs
    at.button[0].click().run()
    ok(_run_job_to_end(at))
    assert not at.error, [e.value for e in at.error]
    assert "now in the Library" in at.success[0].value
    path = _job_file(at, env, "apptest-numclip")
    from explorer.store.checkpoints import load_checkpoint

    ckpt = load_checkpoint(path)
    assert ckpt.meta["learner"]["kind"] == "numclip" and ckpt.meta["learner"]["concepts"] == "dots"

    geo = wait_for_backbone(open_page(env, "geometry", checkpoint=path.stem))
    ok(geo)
    assert geo.selectbox(key="geometry-checkpoint").value == str(path)
    assert len(plotly_charts(geo)) >= 1 and "5" in texts(geo)

    pred = wait_for_backbone(open_page(env, "predict", checkpoint=path.stem))
    pred.file_uploader(key="predict-images").set_value(("dots.png", image_bytes(plain_image()), "image/png")).run()
    ok(pred)
    metrics = {m.label: m.value for m in pred.metric}
    assert "Regressed value (dots)" in metrics, metrics
    assert metrics["Most probable (dots)"] in ckpt.classes.labels
    assert "Top concepts" in texts(pred)


@pytest.mark.slow
def test_a_plugged_in_methods_option_is_a_train_form_field(env, monkeypatch, tmp_path):
    """The installable example of docs/writing-a-method.md, found through its entry point: the Train page
    offers it, shows its own --quantile option as a field (built from its config like the CLI flag), and
    the run uses the value."""
    import sys

    from example_plugin import install_example

    from explorer import methods
    from explorer.store.checkpoints import load_checkpoint

    monkeypatch.syspath_prepend(str(install_example(tmp_path / "site")))
    methods.refresh()
    monkeypatch.delitem(sys.modules, "median_method", raising=False)
    try:
        at = open_page(env, "train")
        assert "OrdinalCLIP, median estimate" in at.selectbox(key="train-method").options  # by its title
        assert not [w for w in at.number_input if w.label == "Quantile"]  # OrdinalCLIP's fields first
        at.selectbox(key="train-method").set_value("ordinalclip-median").run()
        ok(at)
        quantile = at.number_input(key="train-ordinalclip-median-quantile")
        assert quantile.label == "Quantile" and quantile.value == pytest.approx(0.5) and "median" in quantile.help
        at.text_input(key="train-dataset").set_value("dots:3:6")
        at.text_input(key="train-name").set_value("apptest-median")
        at.number_input(key="train-epochs").set_value(1)
        quantile.set_value(0.3)
        at.button[0].click().run()
        ok(_run_job_to_end(at))
        assert not at.error, [e.value for e in at.error]
        (path,) = env["folder"].glob("app-apptest-median*.safetensors")
        try:
            ckpt = load_checkpoint(path)
            assert ckpt.meta["learner"]["kind"] == "ordinalclip-median" and ckpt.meta["learner"]["quantile"] == 0.3
            assert ckpt.predictor().estimate == "quantile 0.3"
        finally:
            for leftover in env["folder"].glob("app-apptest-median*"):
                leftover.unlink()
    finally:
        methods.refresh()


@pytest.mark.slow
def test_train_page_shows_the_backbone_download_in_bytes(env, monkeypatch, tmp_path):
    import huggingface_hub.constants
    from hubserver import HubServer, make_tiny_hub_model

    from explorer.backbones.catalog import format_size

    spec = "hf-hub:explorer-tests/tiny-clip"
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    repo = make_tiny_hub_model(tmp_path / "repo")
    total = format_size((repo / "open_clip_model.safetensors").stat().st_size)
    with HubServer({"explorer-tests/tiny-clip": repo}, chunk_delay=0.3) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        at = open_page(env, "train")
        at.text_input(key="train-dataset").set_value("dots:3:6")  # dataset
        at.text_input(key="train-backbone").set_value(spec)  # backbone
        at.text_input(key="train-name").set_value("apptest-hub")  # name
        at.number_input(key="train-epochs").set_value(1)  # epochs
        at.button[0].click().run()
        seen = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (at.success or at.error):
            seen += [p.text for p in at.get("progress")]
            time.sleep(0.3)
            at.run()
    assert not at.error, [e.value for e in at.error]
    downloads = [t for t in seen if t.startswith(f"Downloading {spec}: ")]
    assert any(f" MB of {total} (" in t and " %) · " in t for t in downloads), seen
    assert "now in the Library" in at.success[0].value


# --- models page ---------------------------------------------------------------------------------


def test_models_page_offline_says_not_cached_in_one_sentence(env, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    at = open_page(env, "models")
    assert at.title[0].value == "Models"
    table = at.dataframe[0].value
    assert {"ViT-B-16:openai", "RN50:openai", "hf-hub:apple/MobileCLIP-S1-OpenCLIP"} <= set(table["backbone"])
    assert set(table["download size"]) == {"unknown offline"}
    warning = at.warning[0].value
    assert warning == "ViT-B-16:openai is not cached and cannot be downloaded here (HF_HUB_OFFLINE is set)."
    assert not at.error and not at.exception
    at.button(key="models-build")  # present, disabled until the backbone is cached
    assert "must be cached" in texts(at)


@pytest.mark.slow
def test_models_page_downloads_with_progress_and_builds_a_preset(env, monkeypatch, tmp_path):
    import huggingface_hub.constants
    from hubserver import HubServer, make_tiny_hub_model

    spec = "hf-hub:explorer-tests/tiny-clip"
    library = tmp_path / "library"
    library.mkdir()
    monkeypatch.setenv("ORDINAL_EXPLORER_CHECKPOINTS", str(library))
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with HubServer({"explorer-tests/tiny-clip": make_tiny_hub_model(tmp_path / "repo")}, chunk_delay=0.15) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        at = open_page(env, "models")
        at.text_input[0].set_value(spec)
        at.button[0].click().run()  # the form's Add button
        at.selectbox(key="models-chosen").set_value(spec).run()
        ok(at)
        assert "Not cached yet" in " ".join(at.dataframe[0].value["status"])
        at.button(key="models-download").click().run()
        seen = []
        deadline = time.monotonic() + 180  # a bound under load, not a speed target
        while time.monotonic() < deadline and not at.success:
            bars = [p.value for p in at.get("progress")]
            # the first run without the progress bar (the job has ended) shows the model cached, not stale
            assert bars or not seen or at.success, [b.label for b in at.button]
            seen += bars
            time.sleep(0.3)
            at.run()
        assert seen and at.success and "is cached" in at.success[0].value
        assert not at.error, [e.value for e in at.error]
        at.selectbox(key="models-preset").set_value("aesthetics").run()
        at.button(key="models-build").click().run()
        ok(at)
        assert "now in the Library" in at.success[-1].value, [s.value for s in at.success]
    written = list(library.glob("zeroshot-aesthetics-*.safetensors"))
    assert len(written) == 1
    lib_page = open_page(env)
    names = [str(n) for df in lib_page.dataframe if "name" in df.value for n in df.value["name"]]
    assert any("aesthetics" in n for n in names), names
    # Predict works on it (the backbone now comes from the cache: the hub server is gone)
    at = wait_for_backbone(open_page(env, "predict", checkpoint=written[0].stem))
    at.toggle(key="predict-whole").set_value(True).run()
    at.file_uploader(key="predict-images").set_value(("plain.png", image_bytes(plain_image(), "PNG"), "image/png")).run()
    ok(at)
    metrics = {m.label: m.value for m in at.metric}
    assert 1 <= float(metrics["Expected value"]) <= 5, metrics
