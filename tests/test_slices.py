"""Where a checkpoint fails (issue 17): slice fields from the readers, `eval --by / --errors`, the
rank axis; every figure checked against an independent computation from `predict` outputs."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import stats

from explorer import cli
from explorer.analysis import geometry, slices
from explorer.core.errors import ExplorerError
from explorer.core.ranks import Ranks
from explorer.data import datasets as D

SITES = ["a", "b", "", "a", "b", "a"]  # "" -> the slice "missing"


def _cli(*args: str) -> subprocess.CompletedProcess:
    """``ordinal-explorer ARGS`` in this process (the real parser and commands), its output captured."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(args))
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def _image(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(path)


@pytest.fixture(scope="module")
def age_csv(tmp_path_factory):
    """18 noise images with ages 3-95 and two fields (site with a missing value, camera), plus the age preset."""
    root = tmp_path_factory.mktemp("slices")
    rows = []
    for i in range(18):
        _image(root / "img" / f"{i}.png", i)
        rows.append({"path": f"img/{i}.png", "label": 3 + 5 * i + (i % 3), "site": SITES[i % 6], "camera": "x" if i < 9 else "y"})
    rows.append({"path": "img/0.png", "label": 120, "site": "only-bad", "camera": "x"})  # outside 0-100: skipped
    with open(root / "d.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out = _cli("zero-shot", "--preset", "age", "--backbone", "demo", "--out", str(root / "age.safetensors"))
    assert out.returncode == 0, out.stderr
    return root


def _eval(root: Path, *extra: str) -> dict:
    out = _cli("eval", str(root / "age.safetensors"), f"csv:{root / 'd.csv'}", "--split", "all", "--skip-bad",
               "--cache-dir", str(root / "cache"), "--json", *extra)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _predicted(root: Path) -> dict[str, float]:
    paths = [str(root / "img" / f"{i}.png") for i in range(18)]
    out = _cli("predict", str(root / "age.safetensors"), *paths, "--no-face", "--json")
    assert out.returncode == 0, out.stderr
    return {Path(p["image"]).name: p["value"] for p in json.loads(out.stdout)}


def test_csv_extra_columns_are_slice_fields(age_csv):
    ds = D.open_dataset(f"csv:{age_csv / 'd.csv'}")
    assert slices.field_names(ds.samples) == ["camera", "site", "band"]
    assert [s.fields["site"] for s in ds.samples[:6]] == ["a", "b", "missing", "a", "b", "a"]


def test_utkface_gender_and_race_from_file_names(tmp_path):
    for name in ("25_0_1_20170116174525125.jpg.chip.jpg", "30_1_3_2017.jpg", "39_1_20170116174525125.jpg"):
        _image(tmp_path / name, 0)
    ds = D.open_dataset(f"utkface:{tmp_path}")
    got = {s.path: s.fields for s in ds.samples}
    assert got == {"25_0_1_20170116174525125.jpg.chip.jpg": {"gender": "male", "race": "black"},
                   "30_1_3_2017.jpg": {"gender": "female", "race": "indian"},
                   "39_1_20170116174525125.jpg": {"gender": "female", "race": "missing"}}


def test_adience_gender_column(tmp_path):
    head = "user_id\toriginal_image\tface_id\tage\tgender"
    body = ["u1\ta.jpg\t1\t(25, 32)\tm", "u1\tb.jpg\t2\t(0, 2)\tf", "u2\tc.jpg\t3\t(38, 43)\tu"]
    (tmp_path / "fold_0_data.txt").write_text("\n".join([head, *body]) + "\n")
    for u, o, f in (("u1", "a.jpg", 1), ("u1", "b.jpg", 2), ("u2", "c.jpg", 3)):
        _image(tmp_path / "faces" / u / f"coarse_tilt_aligned_face.{f}.{o}", f)
    ds = D.open_dataset(f"adience:{tmp_path}")
    assert [s.fields["gender"] for s in ds.samples] == ["male", "female", "missing"]


def test_bands_are_decades_for_years_else_ten_equal_widths():
    years = Ranks([str(a) for a in range(101)], list(range(101)), "years")
    assert slices.band_names(np.array([0.0, 9, 10, 45, 100]), years) == ["0-9", "0-9", "10-19", "40-49", "100-109"]
    scores = Ranks([str(v) for v in range(1, 6)], [1, 2, 3, 4, 5], "")
    assert slices.band_names(np.array([1.0, 2.5, 5]), scores) == ["1-1.8", "1.8-2.6", "4.2-5"]
    many = Ranks.integers(50)
    assert len(set(slices.band_names(many.value_array, many))) == 10


def test_eval_by_matches_predict_outputs(age_csv):
    result = _eval(age_csv, "--by", "site,camera,band")
    values = _predicted(age_csv)
    ds = D.open_dataset(f"csv:{age_csv / 'd.csv'}")
    rows = [(Path(s.path).name, float(ds.ranks.values[s.label]), s.fields) for s in ds.samples[:18]]
    for field in ("site", "camera"):
        for value in {f[field] for _, _, f in rows}:
            errors = np.array([abs(values[name] - label) for name, label, f in rows if f[field] == value])
            got = result["slices"][field][value]
            assert got["n"] == errors.size and got["mae_value"] == pytest.approx(errors.mean(), abs=1e-4)
            lo, hi = got["ci95"]
            ref = stats.bootstrap((errors,), np.mean, n_resamples=2000, method="percentile", random_state=1).confidence_interval
            assert lo <= errors.mean() <= hi and abs(lo - ref.low) < 0.25 * (hi - lo) + 1e-9 and abs(hi - ref.high) < 0.25 * (hi - lo) + 1e-9
    maes = {v: m["mae_value"] for v, m in result["slices"]["site"].items() if m["n"]}
    gap = result["gaps"]["site"]
    assert gap["gap"] == pytest.approx(max(maes.values()) - min(maes.values())) and maes[gap["worst"]] == max(maes.values())
    assert list(result["slices"]["band"])[:2] == ["0-9", "10-19"]  # numeric order


def test_empty_slice_after_skip_bad_and_one_sample_slice(age_csv):
    result = _eval(age_csv, "--by", "site")
    assert result["slices"]["site"]["only-bad"] == {"n": 0}
    band = _eval(age_csv, "--by", "band")["slices"]["band"]
    single = [m for m in band.values() if m["n"] == 1]
    assert single and all(m["ci95"][0] == m["ci95"][1] == m["mae_value"] for m in single)


def test_unknown_field_is_one_sentence(age_csv):
    out = _cli("eval", str(age_csv / "age.safetensors"), f"csv:{age_csv / 'd.csv'}", "--split", "all", "--skip-bad",
               "--cache-dir", str(age_csv / "cache"), "--by", "gender")
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "There is no field 'gender' in this dataset; its fields are camera, site, band." in out.stderr


def test_errors_csv_is_sorted_and_matches_predict(age_csv, tmp_path):
    _eval(age_csv, "--errors", str(tmp_path / "errors.csv"))
    values = _predicted(age_csv)
    with open(tmp_path / "errors.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 18 and set(rows[0]) == {"path", "label", "value", "error", "top", "top_prob", "camera", "site"}
    errors = [float(r["error"]) for r in rows]
    assert errors == sorted(errors, reverse=True)
    for r in rows:
        assert float(r["error"]) == pytest.approx(abs(values[Path(r["path"]).name] - float(r["label"])), abs=1e-4)


def test_rank_axis_spearman_matches_an_independent_projection(age_csv):
    from explorer.backbones.load import load_backbone
    from explorer.store.checkpoints import load_checkpoint

    result = _eval(age_csv)
    ckpt = load_checkpoint(age_csv / "age.safetensors")
    ds = D.open_dataset(f"csv:{age_csv / 'd.csv'}")
    images = [Image.open(age_csv / s.path).convert("RGB") for s in ds.samples[:18]]
    feats = load_backbone("demo").encode_images(images).numpy().astype(np.float64)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    P = ckpt.prototypes.matrix.numpy().astype(np.float64)
    axis = (P[-1] - P[0]) / np.linalg.norm(P[-1] - P[0])
    rho = stats.spearmanr([ds.ranks.values[s.label] for s in ds.samples[:18]], feats @ axis).statistic
    assert result["rank_axis"] == {"axis": "ends", "spearman": pytest.approx(rho, abs=1e-6)}


def test_rank_axis_directions():
    P = np.array([[1.0, 0, 0], [0.8, 0.6, 0], [0, 1.0, 0]])
    ends = geometry.rank_axis(P, "ends")
    assert np.allclose(ends, np.array([-1.0, 1.0, 0]) / np.sqrt(2))
    principal = geometry.rank_axis(P, "principal")
    assert principal @ (P[-1] - P[0]) > 0 and np.isclose(np.linalg.norm(principal), 1.0)
    with pytest.raises(ExplorerError, match="Unknown rank axis"):
        geometry.rank_axis(P, "diagonal")
    with pytest.raises(ExplorerError, match="identical"):
        geometry.rank_axis(np.array([[1.0, 0], [1.0, 0]]))
