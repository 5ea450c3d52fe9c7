"""The HTML report (`ordinal-explorer report`): the numbers embedded in it are `eval --json`'s for each
checkpoint and `compare --json`'s matrix, every table shows those numbers, the file needs nothing from
any server, the same inputs give the same file, and bad input is one sentence. (The browser test that
opens it offline is in test_browser_decide.py.)"""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from explorer import cli
from explorer.analysis.report import DATA_ID

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["ordinalclip-linear", "numclip"]
PATHS = [str(ROOT / "checkpoints" / f"{n}.safetensors") for n in NAMES]
DATASET = "dots:20:4"  # 84 images, 4 per rank
OPTIONS = ["--split", "all", "--by", "band", "--cut", "8", "--cut", "12.5"]

pytestmark = pytest.mark.slow


def _cli(*args: str) -> subprocess.CompletedProcess:
    """``ordinal-explorer ARGS`` in this process, its output captured."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(args))
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("report")
    out = _cli("report", *PATHS, "--on", DATASET, *OPTIONS, "--cache-dir", str(folder / "cache"), "--out", str(folder / "r.html"), "--quiet")
    assert out.returncode == 0, out.stderr
    assert "self-contained" in out.stdout and out.stderr == ""
    return folder, (folder / "r.html").read_text(encoding="utf-8")


def _data(text: str) -> dict:
    found = re.search(rf'<script type="application/json" id="{DATA_ID}">(.*?)</script>', text, re.S)
    return json.loads(found.group(1).replace("<\\/", "</"))


class _Tables(HTMLParser):
    """Every ``<table data-table=KEY>``: its header and rows of (text, data-value or None) cells."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, dict] = {}
        self.current = self.cell = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.current = self.tables.setdefault(attrs["data-table"], {"header": [], "rows": []})
        elif tag == "tr" and self.current is not None:
            self.current["rows"].append([])
        elif tag in ("td", "th") and self.current is not None:
            self.cell = [tag, "", attrs.get("data-value")]

    def handle_data(self, data):
        if self.cell is not None:
            self.cell[1] += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None:
            kind, text, value = self.cell
            (self.current["header"] if kind == "th" else self.current["rows"][-1]).append(text if kind == "th" else (text, value))
            self.cell = None
        elif tag == "table":
            self.current["rows"] = [r for r in self.current["rows"] if r]
            self.current = None


def _tables(text: str) -> dict[str, dict]:
    parser = _Tables()
    parser.feed(text)
    return parser.tables


def _shown(cell, expected) -> None:
    """A table cell shows ``expected``: its full value exactly, its text rounded (– for none)."""
    text, value = cell
    if expected is None:
        assert text == "–" and value is None
    elif isinstance(expected, str):
        assert text == expected
    else:
        assert float(value) == expected and text == (f"{expected:.4f}" if isinstance(expected, float) else str(expected))


def test_the_numbers_are_evals_and_compares(report):
    folder, text = report
    data = _data(text)
    for name, path in zip(NAMES, PATHS):
        out = _cli("eval", path, DATASET, *OPTIONS, "--cache-dir", str(folder / "cache"), "--json")
        assert out.returncode == 0, out.stderr
        assert data["evaluations"][name] == json.loads(out.stdout)
    out = _cli("compare", *PATHS, "--on", DATASET, *OPTIONS, "--cache-dir", str(folder / "cache"), "--json", "--quiet")
    assert data["matrix"] == json.loads(out.stdout)["matrix"] and data["by"] == "band" and data["split"] == "all"


def test_every_table_shows_those_numbers(report):
    _, text = report
    data, tables = _data(text), _tables(text)
    evaluations = data["evaluations"]
    metrics = tables["metrics"]
    assert metrics["header"] == ["metric", *NAMES]
    for row in metrics["rows"]:
        for name, cell in zip(NAMES, row[1:]):
            _shown(cell, evaluations[name]["metrics"][row[0][0]])
    slices = tables["slices"]
    assert len(slices["rows"]) == sum(len(ev["slices"]["band"]) for ev in evaluations.values())
    for row in slices["rows"]:
        m = evaluations[row[0][0]]["slices"]["band"][row[1][0]]
        for cell, expected in zip(row[2:], (m["n"], m["mae_value"], *m["ci95"], m["acc_max"])):
            _shown(cell, expected)
    matrix = tables["matrix"]
    for row in matrix["rows"]:
        for value, cell in zip(matrix["header"][1:], row[1:]):
            _shown(cell, data["matrix"][row[0][0]][value]["mae_value"])
    for key in ("8", "12.5"):
        rows = tables[f"cut-{key}"]["rows"]
        assert len(rows) == 2 * len(NAMES)
        for row in rows:
            c = evaluations[row[0][0]]["cuts"][key]
            point = c["default"] if row[1][0] == "P ≥ 0.5" else c["target_recall"]
            expected = [point["threshold"], point["below_called_above"], *point["ci95"]["below_called_above"],
                        point["above_called_below"], *point["ci95"]["above_called_below"], c["auc"], c["average_precision"],
                        c["below"], c["at_or_above"]]
            for cell, value in zip(row[2:], expected):
                _shown(cell, value)
        assert len(tables[f"cut-{key}-band"]["rows"]) == sum(len(ev["cuts"][key]["slices"]["band"]) for ev in evaluations.values())


def test_the_file_is_self_contained_and_the_same_for_the_same_inputs(report):
    folder, text = report
    assert text.count("<script") == 1 + 7 + 1  # plotly.js, the 7 figures, the data
    assert text.count('class="plotly-graph-div"') == 7  # calibration, slices, matrix, 2 cuts, 2 heatmaps
    from plotly.offline import get_plotlyjs

    assert text.count(get_plotlyjs()) == 1  # inlined once; outside it nothing points anywhere
    rest = text.replace(get_plotlyjs(), "")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", rest) and "<link" not in rest and "@import" not in rest
    assert not list(folder.glob(".r.html.*"))  # written atomically: no temporary left
    again = _cli("report", *PATHS, "--on", DATASET, *OPTIONS, "--cache-dir", str(folder / "cache"), "--out", str(folder / "r2.html"),
                 "--quiet")
    assert again.returncode == 0 and (folder / "r2.html").read_text(encoding="utf-8") == text


@pytest.mark.parametrize("args, sentence", [
    (["--cut", "30"], "must lie strictly inside the ranks (0 to 20"),
    (["--target-recall", "0"], "target recall must lie between 0 and 1"),
])
def test_bad_input_is_one_sentence_and_writes_nothing(tmp_path, args, sentence):
    out = _cli("report", *PATHS, "--on", DATASET, "--split", "all", *args, "--out", str(tmp_path / "r.html"), "--quiet")
    assert out.returncode == 2 and sentence in out.stderr and out.stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_the_report_must_be_an_html_file(tmp_path):
    out = _cli("report", PATHS[0], "--on", DATASET, "--out", str(tmp_path / "r.pdf"), "--quiet")
    assert out.returncode == 2 and "name ending in .html" in out.stderr and list(tmp_path.iterdir()) == []
