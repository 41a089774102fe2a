"""The documentation's links resolve: every relative link of README.md and docs/*.md names a file that
exists and, with an anchor, a heading of that file (GitHub's anchor rules). A link starting with "/"
names a file from the repository's root (as GitHub reads it); the docs link each other relative to the
linking file, the plain Markdown meaning that every reader resolves alike."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _anchor(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_every_relative_link_resolves():
    anchors = {p: {_anchor(line.lstrip("#")) for line in p.read_text().splitlines() if line.startswith("#")}
               for p in PAGES}  # fmt: skip
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)]+)\)", page.read_text()):
            if target.startswith(("http://", "https://")):
                continue
            path, _, anchor = target.partition("#")
            base = ROOT if path.startswith("/") else page.parent
            resolved = (base / path.lstrip("/")).resolve() if path else page
            if not resolved.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and resolved in anchors and anchor not in anchors[resolved]:
                broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, broken
    assert len(PAGES) >= 8  # README and the docs it links


def test_the_readme_is_a_users_page():
    readme = (ROOT / "README.md").read_text()
    assert readme.count("\n") <= 250  # the measurement tables and references live in docs/
    for page in ("library", "method", "toy", "window", "engines", "benchmarks", "testing", "architecture"):
        assert f"](docs/{page}.md)" in readme
