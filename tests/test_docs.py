"""The documentation holds together: README.md stays a front door, every relative link in README.md,
docs/**/*.md and benchmarks/README.md reaches an existing file (and heading), and the code's "§N"
references say which document they mean."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README_MAX_LINES = 200


def _documents() -> list[Path]:
    docs = sorted((ROOT / "docs").rglob("*.md"))
    return [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *docs]


_FENCE = re.compile(r"^(```|~~~)")
_INLINE_CODE = re.compile(r"(`+)(.+?)\1")
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def _prose_lines(text: str):
    """(line number, line) outside fenced code blocks."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def slugify(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped, spaces to hyphens."""
    text = _INLINE_CODE.sub(lambda m: m.group(2), heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link in a heading keeps its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, with GitHub's -1, -2 ... for repeated headings."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    for _, line in _prose_lines(path.read_text(encoding="utf-8")):
        m = _HEADING.match(line)
        if not m:
            continue
        slug = slugify(m.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        out.add(slug if count == 0 else f"{slug}-{count}")
    return out


def links(path: Path):
    """(line number, target) of every Markdown link outside code."""
    for number, line in _prose_lines(path.read_text(encoding="utf-8")):
        for m in _LINK.finditer(_INLINE_CODE.sub("code", line)):
            yield number, m.group(1)


def test_slugs_follow_github():
    assert slugify("From `make run` to a real age: three clicks") == "from-make-run-to-a-real-age-three-clicks"
    assert slugify("2. Model (reference `RegCLIPSSR.forward`)") == "2-model-reference-regclipssrforward"
    assert slugify("8. Published results (for the README's comparison table; mean over seeds)") == (
        "8-published-results-for-the-readmes-comparison-table-mean-over-seeds")
    assert slugify("Performance (this 2-core CPU, no GPU)") == "performance-this-2-core-cpu-no-gpu"


def test_the_documents_exist():
    names = {p.relative_to(ROOT).as_posix() for p in _documents()}
    for name in ("docs/cli.md", "docs/training.md", "docs/numclip.md", "docs/checkpoint-format.md",
                 "docs/reference-import.md", "docs/deploy.md", "docs/writing-a-method.md", "docs/architecture.md",
                 "docs/methods/ordinalclip.md", "docs/methods/numclip.md", "benchmarks/README.md"):
        assert name in names


def test_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/"


@pytest.mark.parametrize("doc", _documents(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(doc):
    broken = []
    for number, target in links(doc):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto: ...
            continue
        file_part, _, anchor = target.partition("#")
        dest = (doc.parent / file_part).resolve() if file_part else doc
        where = f"{doc.relative_to(ROOT)}:{number}: {target}"
        if not dest.exists():
            broken.append(f"{where} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{where} (no heading #{anchor} in {dest.relative_to(ROOT)})")
    assert not broken, "\n".join(broken)


def _section_references():
    for folder in ("explorer", "app_pages"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            lines = path.read_text(encoding="utf-8").splitlines()
            for i, line in enumerate(lines):
                if "§" in line:
                    yield path, i + 1, (lines[i - 1] if i else "") + "\n" + line


def test_every_section_reference_names_its_document():
    vague = []
    for path, number, context in _section_references():
        named = re.findall(r"docs/[\w./-]+\.md", context)
        if not named or not all((ROOT / n).is_file() for n in named):
            vague.append(f"{path.relative_to(ROOT)}:{number}")
    assert not vague, "a § reference without a docs/ file on its line or the line before: " + ", ".join(vague)
