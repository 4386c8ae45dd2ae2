"""The published results a reader sees without running anything (results/quick, made by `make publish`)."""
import re

import pytest

from conftest import REPO

PUBLISHED = REPO / "results" / "quick"


def _links(md_path):
    return [l for l in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", md_path.read_text(encoding="utf-8"))
            if not l.startswith(("http://", "https://", "mailto:"))]


def test_a_quick_run_is_published():
    assert (PUBLISHED / "REPORT.md").exists() and (PUBLISHED / "RUN.md").exists(), "run `make reproduce && make publish`"


@pytest.mark.parametrize("doc", ["results/quick/REPORT.md", "README.md"])
def test_every_link_resolves(doc):
    path = REPO / doc
    missing = [l for l in _links(path) if not (path.parent / l.replace("%20", " ")).exists()]
    assert not missing, f"{doc} links to missing files: {missing[:10]}"


def test_published_results_stay_small():
    size = sum(p.stat().st_size for p in PUBLISHED.rglob("*") if p.is_file())
    assert size < 15 * 2**20, f"results/quick is {size / 2**20:.1f} MB"
    assert not list(PUBLISHED.rglob("*.ipynb")), "executed notebooks are not published"


def test_link_check_can_fail(tmp_path):
    (tmp_path / "R.md").write_text("![a](figs/a.png) [b](b.md) [web](https://example.org)")
    (tmp_path / "b.md").write_text("x")
    assert [l for l in _links(tmp_path / "R.md") if not (tmp_path / l).exists()] == ["figs/a.png"]
