"""Dataset readers, splits, bad-data reports and the §6 data regimes, on tiny real files."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from explorer.core.errors import ExplorerError
from explorer.core.ranks import Ranks
from explorer.data import datasets as D


def img(path: Path, fmt: str | None = None, colour=(120, 30, 200)) -> Path:
    """Write a tiny real image (format from the suffix unless given)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), colour).save(path, format=fmt)
    return path


def split_of(ds: D.Dataset) -> dict[int, str]:
    return {i: s for s, idx in ds.splits.items() for i in idx}


# --------------------------------------------------------------------------- list format


def make_list_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for i in range(6):
        img(root / "img" / f"{i:03d}.png")
    (root / "train.txt").write_text("img/000.png 0\nimg/001.png 3\n\n# comment\nimg/002.png 4 1 2\n")
    (root / "val.txt").write_text("img/003.png 1\n")
    (root / "test.txt").write_text("img/004.png 2\nimg/005.png 5\n")
    return root


def test_list_reader_given_splits_and_labels(tmp_path):
    root = make_list_root(tmp_path)
    ds = D.open_dataset(f"list:{root}:train.txt:val.txt:test.txt")
    assert ds.reader == "list" and len(ds) == 6
    assert len(ds.ranks) == 6 and ds.ranks.labels == ["0", "1", "2", "3", "4", "5"]
    multi = ds.samples[2]
    assert multi.labels == [1, 2, 4] and multi.label == 2 and multi.line == 5 and multi.source == "train.txt"
    assert multi.label_for(False) == 2
    rng = np.random.default_rng(0)
    drawn = {multi.label_for(True, rng) for _ in range(60)}
    assert drawn == {1, 2, 4}
    assert multi.label_for(True, random.Random(1)) in {1, 2, 4}
    assert ds.splits == {"train": [0, 1, 2], "val": [3], "test": [4, 5]}
    assert ds.load_image(0).mode == "RGB"
    assert D.validate(ds).skipped == 0


def test_list_reader_num_ranks_and_carved_splits(tmp_path):
    root = tmp_path / "d"
    lines = []
    for i in range(40):
        img(root / f"{i}.png")
        lines.append(f"{i}.png {i % 4}")
    (root / "all.txt").write_text("\n".join(lines))
    ds = D.open_dataset(f"list:{root}:all.txt", num_ranks=10)
    assert len(ds.ranks) == 10
    sizes = {k: len(v) for k, v in ds.splits.items()}
    assert sizes == {"train": 28, "val": 4, "test": 8}
    assert sorted(sum(ds.splits.values(), [])) == list(range(40))
    # an explicit val list: val kept, test carved from train
    (root / "v.txt").write_text("0.png 0\n1.png 1\n")
    ds2 = D.open_dataset(f"list:{root}:all.txt:v.txt", num_ranks=10)
    assert set(ds2.splits["val"]) == {40, 41} and len(ds2.splits["test"]) == 8


# --------------------------------------------------------------------------- CSV


def test_csv_reader_numeric_names_split_subject(tmp_path):
    for i in range(5):
        img(tmp_path / "im" / f"{i}.jpg")
    (tmp_path / "a.csv").write_text(
        "Path,Label,split,subject\nim/0.jpg,20,train,s1\nim/1.jpg,22,val,s2\nim/2.jpg,23;21,test,s3\nim/3.jpg,21,,s1\n"
    )
    ds = D.open_dataset(f"csv:{tmp_path / 'a.csv'}", unit="years")
    assert ds.ranks.labels == ["20", "21", "22", "23"] and ds.ranks.values == [20, 21, 22, 23]
    assert ds.ranks.unit == "years"
    assert [s.labels for s in ds.samples] == [[0], [2], [1, 3], [1]]
    assert [s.subject for s in ds.samples] == ["s1", "s2", "s3", "s1"]
    assert ds.splits == {"train": [0, 3], "val": [1], "test": [2]}
    assert ds.load_image(1).size == (4, 4)
    # auto-detected from the .csv suffix
    assert D.open_dataset(str(tmp_path / "a.csv")).reader == "csv"


def test_csv_reader_rank_names_and_bad_labels(tmp_path):
    for i in range(4):
        img(tmp_path / f"{i}.png")
    (tmp_path / "b.csv").write_text("path,label\n0.png,low\n1.png,high\n2.png,mid\n3.png,huge\n")
    ds = D.open_dataset(f"csv:{tmp_path / 'b.csv'}", ranks="low,mid,high")
    assert ds.ranks.labels == ["low", "mid", "high"] and ds.ranks.values == [0, 1, 2]
    assert [s.labels for s in ds.samples[:3]] == [[0], [2], [1]]
    assert ds.samples[3].error and "huge" in ds.samples[3].error and ds.samples[3].line == 5
    with pytest.raises(ExplorerError, match=r"1 of 4 entries is unusable \(first: b.csv:5: bad label 'huge'"):
        D.validate(ds)
    with pytest.raises(ExplorerError, match="header row with 'path' and 'label'"):
        (tmp_path / "c.csv").write_text("file_name,age\n0.png,3\n")
        D.open_dataset(f"csv:{tmp_path / 'c.csv'}")


# --------------------------------------------------------------------------- folders


def test_folder_reader_orders(tmp_path):
    num = tmp_path / "num"
    for name in ("10", "2", "5"):
        img(num / name / "a.png")
        img(num / name / "sub" / "b.jpg")
    (num / "notes.txt").write_text("ignored")
    ds = D.open_dataset(f"folder:{num}")
    assert ds.ranks.labels == ["2", "5", "10"] and ds.ranks.values == [2, 5, 10]
    assert Counter(s.label for s in ds.samples) == {0: 2, 1: 2, 2: 2}
    assert ds.samples[0].path == "10/a.png" and ds.samples[0].label == 2

    alpha = tmp_path / "alpha"
    for name in ("young", "Old", "middle"):
        img(alpha / name / "x.png")
    assert D.open_dataset(str(alpha)).ranks.labels == ["middle", "Old", "young"]
    ds2 = D.open_dataset(f"folder:{alpha}", ranks=["young", "middle"])
    assert ds2.ranks.labels == ["young", "middle"]
    bad = [s for s in ds2.samples if s.error]
    assert len(bad) == 1 and "folder 'Old' is not one of the given ranks" in bad[0].error
    report = D.validate(ds2, skip_bad=True)
    assert report.skipped == 1 and len(ds2) == 2


# --------------------------------------------------------------------------- face datasets


def test_utkface_reader(tmp_path):
    for name in ("25_0_1_20170116174525125.jpg.chip.jpg", "30_1_0_2017.jpg", "27_1_2_2017.jpg", "x_1_2.jpg"):
        img(tmp_path / name, "JPEG")
    ds = D.open_dataset(f"utkface:{tmp_path}")
    assert ds.ranks.labels[0] == "25" and ds.ranks.labels[-1] == "30" and len(ds.ranks) == 6
    assert ds.ranks.unit == "years"
    ages = {s.path: int(ds.ranks.values[s.labels[0]]) for s in ds.samples if not s.error}
    assert ages == {"25_0_1_20170116174525125.jpg.chip.jpg": 25, "30_1_0_2017.jpg": 30, "27_1_2_2017.jpg": 27}
    assert [s.path for s in ds.samples if s.error] == ["x_1_2.jpg"]


def write_fold(path: Path, rows: list[tuple[str, str, int, str]]) -> None:
    head = "user_id\toriginal_image\tface_id\tage\tgender\tx\ty\tdx\tdy\ttilt_ang\tfiducial_yaw_angle\tfiducial_score"
    body = [f"{u}\t{o}\t{f}\t{a}\tm\t0\t0\t10\t10\t0\t0\t1" for u, o, f, a in rows]
    path.write_text("\n".join([head] + body) + "\n")


def test_adience_reader(tmp_path):
    rows0 = [("u1", "a.jpg", 1, "(25, 32)"), ("u1", "b.jpg", 2, "(0, 2)"), ("u2", "c.jpg", 3, "None")]
    rows1 = [("u3", "d.jpg", 4, "(60, 100)"), ("u3", "e.jpg", 5, "(38, 42)")]
    write_fold(tmp_path / "fold_0_data.txt", rows0)
    write_fold(tmp_path / "fold_1_data.txt", rows1)
    for u, o, f, _ in rows0 + rows1:
        img(tmp_path / "faces" / u / f"coarse_tilt_aligned_face.{f}.{o}", "JPEG")
    ds = D.open_dataset(f"adience:{tmp_path}", fold=1)
    assert ds.ranks.labels == ["0-2", "4-6", "8-12", "15-20", "25-32", "38-43", "48-53", "60-100"]
    s0 = ds.samples[0]
    assert s0.path == "faces/u1/coarse_tilt_aligned_face.1.a.jpg" and s0.labels == [4] and s0.subject == "u1"
    assert ds.samples[3].labels == [7]
    bad = [s for s in ds.samples if s.error]
    assert [(s.source, s.line) for s in bad] == [("fold_0_data.txt", 4), ("fold_1_data.txt", 3)]
    assert ds.splits["test"] == [3]  # fold 1, usable rows only
    assert ds.load_image(0).mode == "RGB"
    with pytest.raises(ExplorerError, match="fold_0_data.txt:4: bad label 'None'"):
        D.validate(ds)
    assert D.validate(ds, skip_bad=True).skipped == 2
    with pytest.raises(ExplorerError, match="fold 7 does not exist"):
        D.open_dataset(f"adience:{tmp_path}", fold=7)


def test_fgnet_reader(tmp_path):
    for name in ("001A02.JPG", "001A10.JPG", "002A05a.JPG", "readme.JPG"):
        img(tmp_path / "images" / name, "JPEG")
    ds = D.open_dataset(f"fgnet:{tmp_path}")
    good = [s for s in ds.samples if not s.error]
    assert [(s.subject, int(ds.ranks.values[s.label])) for s in good] == [("001", 2), ("001", 10), ("002", 5)]
    assert ds.ranks.labels[0] == "2" and ds.ranks.labels[-1] == "10"
    assert sum(1 for s in ds.samples if s.error) == 1


def test_afad_reader(tmp_path):
    full = tmp_path / "AFAD-Full"
    img(full / "15" / "111" / "a.jpg", "JPEG")
    img(full / "18" / "112" / "b.jpg", "JPEG")
    img(full / "18" / "113" / "c.jpg", "JPEG")
    ds = D.open_dataset(f"afad:{tmp_path}")
    assert ds.root == full and ds.ranks.labels == ["15", "16", "17", "18"]
    assert [s.labels for s in ds.samples[:2]] == [[0], [3]] and ds.samples[0].subject is None
    assert "bad gender folder '113'" in ds.samples[2].error


# --------------------------------------------------------------------------- dots


def count_dots(image: Image.Image) -> int:
    grey = np.asarray(image, dtype=np.float64).mean(axis=2)
    return int(ndimage.label(grey < 128)[1])


def test_dots_labels_counts_and_determinism():
    ds = D.open_dataset("dots:6:3:11")
    assert len(ds.ranks) == 7 and ds.ranks.unit == "dots" and ds.ranks.labels == [str(i) for i in range(7)]
    assert len(ds) == 21 and ds.root is None
    for s in ds.samples:
        im = ds.load_image(s)
        assert im.size == (64, 64) and im.mode == "RGB"
        assert count_dots(im) == s.label
    again = D.open_dataset("dots:6:3:11")
    other = D.open_dataset("dots:6:3:12")
    assert all(ds.load_image(i).tobytes() == again.load_image(i).tobytes() for i in range(len(ds)))
    assert any(ds.load_image(i).tobytes() != other.load_image(i).tobytes() for i in range(1, len(ds)))
    assert ds.load_image(20).tobytes() != other.load_image(20).tobytes()
    assert D.validate(ds).skipped == 0


def test_dots_crowded_and_defaults():
    ds = D.open_dataset("dots:20:1")
    assert len(ds) == 21 and ds.generator.n == 1 and ds.generator.seed == 0
    assert count_dots(ds.load_image(20)) == 20
    assert len(D.open_dataset("dots:3")) == 4 * D.DOTS_DEFAULT_N
    for bad in ("dots:0", "dots:21", "dots:x", "dots:3:0", "dots:1:2:3:4"):
        with pytest.raises(ExplorerError):
            D.open_dataset(bad)


# --------------------------------------------------------------------------- splits


def test_stratified_splits_cover_labels(tmp_path):
    ds = D.open_dataset("dots:9:7", val_fraction=0.1, test_fraction=0.2)
    tr, va, te = (set(ds.splits[s]) for s in ("train", "val", "test"))
    assert not (tr & va or tr & te or va & te) and len(tr | va | te) == 70
    assert (len(va), len(te)) == (7, 14)
    assert {ds.samples[i].label for i in tr} == set(range(10))
    # small labels: every label with >= 3 samples keeps one in train
    rows = ["path,label"] + [f"{lab}_{j}.png,{lab}" for lab, n in enumerate((3, 3, 4, 1, 2, 30)) for j in range(n)]
    (tmp_path / "s.csv").write_text("\n".join(rows))
    for seed in range(10):
        ds = D.open_dataset(f"csv:{tmp_path / 's.csv'}", seed=seed)
        assert {ds.samples[i].label for i in ds.splits["train"]} == set(range(6))
    a = D.make_splits(ds, seed=3)
    assert a == D.make_splits(ds, seed=3) and a != D.make_splits(ds, seed=4)


def test_subject_exclusive_splits(tmp_path):
    rows = ["path,label,subject"]
    rng = np.random.default_rng(0)
    for subj in range(40):
        for j in range(int(rng.integers(1, 6))):
            rows.append(f"s{subj}_{j}.png,{int(rng.integers(0, 5))},p{subj}")
    (tmp_path / "subj.csv").write_text("\n".join(rows))
    for seed in range(5):
        ds = D.open_dataset(f"csv:{tmp_path / 'subj.csv'}", seed=seed)
        where: dict[str, set[str]] = {}
        for split, idx in ds.splits.items():
            for i in idx:
                where.setdefault(ds.samples[i].subject, set()).add(split)
        assert all(len(v) == 1 for v in where.values())
        sizes = {k: len(v) for k, v in ds.splits.items()}
        n = len(ds)
        assert sizes["val"] > 0 and sizes["test"] > 0 and sizes["train"] > 0.55 * n
        assert abs(sizes["test"] - 0.2 * n) < 0.1 * n


# --------------------------------------------------------------------------- bad data


def test_bad_data_reported_with_line_numbers_and_skipped(tmp_path):
    root = tmp_path / "r"
    img(root / "ok0.png")
    img(root / "ok1.png")
    img(root / "ok2.png")
    (root / "broken.png").write_bytes(b"not an image at all")
    (root / "train.txt").write_text(
        "ok0.png 0\nmissing.png 1\nok1.png x\nbroken.png 2\nok2.png 2\nlonely.png\n"
    )
    (root / "test.txt").write_text("ok0.png -1\nok1.png 1\n")
    ds = D.open_dataset(f"list:{root}:train.txt::test.txt")
    with pytest.raises(ExplorerError) as exc:
        D.validate(ds)
    msg = str(exc.value)
    assert msg.startswith("5 of 8 entries are unusable (first: train.txt:2: missing file missing.png; ")
    assert "train.txt:3: bad label 'x'" in msg and "train.txt:4: unreadable image" in msg
    assert msg.endswith("; fix them or pass --skip-bad.")
    # labels-only check still finds the label problems
    with pytest.raises(ExplorerError, match=r"^3 of 8 entries"):
        D.validate(ds, check_images=False)
    report = D.validate(ds, skip_bad=True)
    assert (report.total, report.skipped) == (8, 5)
    assert report.problems[-1] == "test.txt:1: label -1 out of range 0..2 for ok0.png"
    assert "Skipped 5 of 8" in str(report)
    assert [s.path for s in ds.samples] == ["ok0.png", "ok2.png", "ok1.png"]
    assert ds.splits == {"train": [0, 1], "val": [], "test": [2]}


def test_spec_and_option_errors(tmp_path):
    with pytest.raises(ExplorerError, match="start it with one of"):
        D.open_dataset("nope:thing")
    with pytest.raises(ExplorerError, match="Unknown dataset option 'fodl'"):
        D.open_dataset("dots:3", fodl=1)
    with pytest.raises(ExplorerError, match="does not exist"):
        D.open_dataset(f"folder:{tmp_path / 'missing'}")
    with pytest.raises(ExplorerError, match="was not found"):
        D.open_dataset(f"list:{tmp_path}:nothere.txt")
    with pytest.raises(ExplorerError, match="must stay below 1"):
        D.open_dataset("dots:3", val_fraction=0.5, test_fraction=0.5)


# --------------------------------------------------------------------------- regimes


def test_few_shot_counts_without_replacement():
    labels = [0] * 10 + [1] * 3 + [2] * 1 + [3] * 7
    indices = list(range(100, 100 + len(labels)))
    label_of = dict(zip(indices, labels))
    for k in (1, 2, 4, 64):
        chosen = D.few_shot(indices, labels, k, seed=5)
        assert len(chosen) == len(set(chosen)) and set(chosen) <= set(indices)
        counts = Counter(label_of[i] for i in chosen)
        assert counts == {lab: min(k, n) for lab, n in Counter(labels).items()}
    assert D.few_shot(indices, labels, 2, seed=5) == D.few_shot(indices, labels, 2, seed=5)
    assert D.few_shot(indices, labels, 2, seed=5) != D.few_shot(indices, labels, 2, seed=6)
    with pytest.raises(ExplorerError):
        D.few_shot(indices, labels, 0)


def test_label_shift_against_hand_computation():
    # label: count -> 0:20, 1:5, 2:12, 3:1, 4:9
    counts = {0: 20, 1: 5, 2: 12, 3: 1, 4: 9}
    labels = [lab for lab, n in counts.items() for _ in range(n)]
    indices = list(range(len(labels)))
    chosen = D.label_shift(indices, labels, num_classes_c=3, scale_s=0.1, seed=0)
    got = Counter(labels[i] for i in chosen)
    # the 3 most frequent (0, 2, 4) keep max(int(n*0.1), 1): 2, 1, 1; the rest are untouched
    assert got == {0: 2, 1: 5, 2: 1, 3: 1, 4: 1}
    chosen = D.label_shift(indices, labels, num_classes_c=2, scale_s=0.2, seed=1)
    assert Counter(labels[i] for i in chosen) == {0: 4, 1: 5, 2: 2, 3: 1, 4: 9}
    assert len(set(chosen)) == len(chosen)


def test_long_tail():
    labels = [10, 49, 50, 51, 80]
    assert D.long_tail([5, 6, 7, 8, 9], labels) == [7, 8, 9]
    assert D.long_tail([5, 6, 7, 8, 9], labels, min_label=60) == [9]


def test_ranks_option_accepts_ranks_object(tmp_path):
    for i in range(3):
        img(tmp_path / f"{i}.png")
    (tmp_path / "r.csv").write_text("path,label\n0.png,3\n1.png,25\n2.png,100\n")
    given = Ranks.integers(101, unit="years")
    ds = D.open_dataset(f"csv:{tmp_path / 'r.csv'}", ranks=given)
    assert len(ds.ranks) == 101 and [s.label for s in ds.samples] == [3, 25, 100]
    assert ds.ranks is not given and ds.summary()["num_ranks"] == 101


# --------------------------------------------------------------------------- real data formats (issue 9, item 4)


def write_official_fold(path: Path, rows: list[tuple[str, str, int, str]]) -> None:
    """An Adience fold file as distributed: tab-separated, header row, CRLF line endings."""
    head = "user_id\toriginal_image\tface_id\tage\tgender\tx\ty\tdx\tdy\ttilt_ang\tfiducial_yaw_angle\tfiducial_score"
    body = [f"{u}\t{o}\t{f}\t{a}\tf\t0\t0\t10\t10\t0\t0\t1" for u, o, f, a in rows]
    path.write_bytes(("\r\n".join([head] + body) + "\r\n").encode())


def test_adience_official_fold_files_contained_ages(tmp_path):
    ages = ["(25, 32)", "(38, 42)", "(8, 23)", "35", "5", "3", "13", "None", "", "(60, 100)", "(27, 32)", "(0, 2)"]
    rows = [(f"u{i % 3}", f"{i}.jpg", i, age) for i, age in enumerate(ages)]
    write_official_fold(tmp_path / "fold_0_data.txt", rows[:6])
    write_official_fold(tmp_path / "fold_1_data.txt", rows[6:])
    for u, o, f, _ in rows:
        img(tmp_path / "faces" / u / f"coarse_tilt_aligned_face.{f}.{o}", "JPEG")
    ds = D.open_dataset(f"adience:{tmp_path}", adience_ages="contained", fold=0)
    assert ds.samples[0].path == "faces/u0/coarse_tilt_aligned_face.0.0.jpg"
    got = {s.line + (0 if s.source == "fold_0_data.txt" else 100): (s.labels[0] if s.labels else None) for s in ds.samples}
    assert got == {2: 4, 3: 5, 4: None, 5: None, 6: 1, 7: None, 102: None, 103: None, 104: None, 105: 7, 106: 4, 107: 0}
    assert [D.adience_group(a, contained=True) for a in ("(38, 43)", "(40, 41)", "(0, 3)", "60", "101")] == [5, 5, None, 7, None]
    with pytest.raises(ExplorerError) as exc:
        D.validate(ds)
    msg = str(exc.value)
    assert msg.startswith("6 of 12 entries are unusable (first: fold_0_data.txt:4: bad label '(8, 23)' "
                          "(not inside exactly one of the 8 Adience age groups) for faces/u2/coarse_tilt_aligned_face.2.2.jpg; ")
    assert "fold_0_data.txt:5: bad label '35'" in msg
    report = D.validate(ds, skip_bad=True)
    assert (report.total, report.skipped) == (12, 6)
    assert "fold_1_data.txt:3: bad label 'None' (not an age or age range) for faces/u1/coarse_tilt_aligned_face.7.7.jpg" in report.problems
    assert "fold_1_data.txt:4: bad label '' (an empty age) for faces/u2/coarse_tilt_aligned_face.8.8.jpg" in report.problems
    assert len(ds.splits["test"]) == 3  # fold 0's usable rows: (25, 32), (38, 42), 5


def test_adience_exact_ages_by_default(tmp_path):
    write_official_fold(tmp_path / "fold_0_data.txt", [("u1", "a.jpg", 1, "(38, 42)"), ("u1", "b.jpg", 2, "(38, 43)"),
                                                       ("u2", "c.jpg", 3, "(0, 2)")])
    ds = D.open_dataset(f"adience:{tmp_path}")
    assert [s.labels for s in ds.samples] == [[], [5], [0]]
    assert "adience_ages='contained'" in ds.samples[0].error
    with pytest.raises(ExplorerError, match="adience_ages is 'loose'"):
        D.open_dataset(f"adience:{tmp_path}", adience_ages="loose")


def test_list_numeric_ish_labels_header_and_crlf(tmp_path):
    root = tmp_path / "decades"
    for i in range(5):
        img(root / f"{i}.png")
    (root / "train.txt").write_bytes(b"path label\r\n0.png 1930s\r\n1.png 1950s\r\n2.png 1940s 1930s\r\n3.png x\r\n4.png 1950s\r\n")
    ds = D.open_dataset(f"list:{root}:train.txt", val_fraction=0, test_fraction=0)
    assert ds.ranks.labels == ["1930s", "1940s", "1950s"] and ds.ranks.values == [1930, 1940, 1950]
    assert [s.labels for s in ds.samples] == [[0], [2], [0, 1], [], [2]]
    assert [s.line for s in ds.samples] == [2, 3, 4, 5, 6]
    with pytest.raises(ExplorerError, match=r"^1 of 5 entries is unusable \(first: train.txt:5: bad label 'x' \(not a number\) for 3.png\)"):
        D.validate(ds)
    # 3.0 and 3 are the same rank: rank indices when every label is a whole number ...
    (root / "idx.txt").write_text("0.png 3.0\n1.png 3\n2.png 0\n3.png 1.00\n")
    ds = D.open_dataset(f"list:{root}:idx.txt")
    assert len(ds.ranks) == 4 and [s.labels for s in ds.samples] == [[3], [3], [0], [1]]
    # ... and one rank per distinct value, in value order, when some label is a fraction
    (root / "val.txt").write_text("0.png 3\n1.png 2.5\n2.png 3.0\n3.png 10\n")
    ds = D.open_dataset(f"list:{root}:val.txt")
    assert ds.ranks.labels == ["2.5", "3", "10"] and [s.labels for s in ds.samples] == [[1], [0], [1], [2]]
    # a first line with an image path is data, never a header
    (root / "nohead.txt").write_text("0.png x\n1.png 1\n2.png 0\n")
    ds = D.open_dataset(f"list:{root}:nohead.txt")
    assert ds.samples[0].error == "bad label 'x' (not an integer) for 0.png" and ds.samples[0].line == 1


def test_utkface_name_variants(tmp_path):
    names = ("61_1_2_20170109150557335.jpg.chip.jpg", "39_1_20170116174525125.jpg.chip.jpg",
             "_1_2_20170109150557335.jpg.chip.jpg", "age_1_2_2017.jpg")
    for name in names:
        img(tmp_path / name, "JPEG")
    ds = D.open_dataset(f"utkface:{tmp_path}", val_fraction=0, test_fraction=0)
    ages = {s.path: int(ds.ranks.values[s.label]) for s in ds.samples if not s.error}
    assert ages == {names[0]: 61, names[1]: 39}
    report = D.validate(ds, skip_bad=True)
    assert report.problems == [
        f"{names[2]}: cannot read the age from the file name {names[2]} (expected age_gender_race_date.jpg)",
        f"{names[3]}: cannot read the age from the file name {names[3]} (expected age_gender_race_date.jpg)",
    ]


def test_csv_apparent_age_spread(tmp_path):
    from explorer.metrics.ordinal import epsilon_error

    for i in range(5):
        img(tmp_path / f"{i}.jpg")
    (tmp_path / "lap.csv").write_bytes(b"filename,age,stdv\r\n0.jpg,25,3.5\r\n1.jpg,30,2\r\n2.jpg,27,4.25\r\n3.jpg,28,0\r\n4.jpg,29,\r\n")
    ds = D.open_dataset(f"csv:{tmp_path / 'lap.csv'}", val_fraction=0, test_fraction=0)
    assert [s.spread for s in ds.samples[:3]] == [3.5, 2.0, 4.25] and ds.ranks.labels[0] == "25"
    assert ds.samples[3].error == "bad spread '0' (not a positive number) for 3.jpg"
    with pytest.raises(ExplorerError, match=r"2 of 5 entries are unusable \(first: lap.csv:5: bad spread '0' .*; lap.csv:6: no spread"):
        D.validate(ds)
    D.validate(ds, skip_bad=True)
    spreads = ds.spreads(ds.samples)
    assert spreads.tolist() == [3.5, 2.0, 4.25] and ds.spreads().dtype == np.float64
    ages = [ds.ranks.values[s.label] for s in ds.samples]
    assert epsilon_error(ages, ages, spreads) == 0.0
    # path,label plus an optional spread column; without one there are no spreads
    (tmp_path / "p.csv").write_text("path,label,spread\n0.jpg,1,0.5\n1.jpg,2,1.5\n")
    assert D.open_dataset(f"csv:{tmp_path / 'p.csv'}").spreads().tolist() == [0.5, 1.5]
    (tmp_path / "q.csv").write_text("path,label\n0.jpg,1\n1.jpg,2\n")
    q = D.open_dataset(f"csv:{tmp_path / 'q.csv'}")
    assert q.samples[0].spread is None and q.spreads() is None
