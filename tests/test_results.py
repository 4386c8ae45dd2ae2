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


def test_every_published_figure_has_a_caption():
    from imgsci.core import figure_caption
    bare = [p.relative_to(PUBLISHED).as_posix() for p in sorted(PUBLISHED.rglob("figures/*.png")) if not figure_caption(p)]
    assert not bare, f"figures without a caption (pass caption= to save_figure): {bare}"


def test_caption_check_can_fail(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from imgsci.core import figure_caption, save_figure
    plain = save_figure(plt.figure(), "plain", tmp_path)
    told = save_figure(plt.figure(), "told", tmp_path, caption="A  blank\nfigure.")
    assert (figure_caption(plain), figure_caption(told)) == ("", "A blank figure.")


def _opening_links(nb_path):
    import json
    cells = json.loads(nb_path.read_text(encoding="utf-8"))["cells"]
    first = next(c for c in cells if c["cell_type"] == "markdown")
    return re.findall(r"\]\(\.\./results/quick/REPORT\.md#([^)\s]+)\)", "".join(first["source"]))


def test_each_study_notebook_opens_with_a_link_to_its_published_section():
    from imgsci.reproduce import discover_studies
    report = (PUBLISHED / "REPORT.md").read_text(encoding="utf-8")
    sections = set(re.findall(r"^## (\S+)\s*$", report, flags=re.M))
    wrong = {name: _opening_links(nb) for name, nb in discover_studies(REPO / "nbs").items()
             if name not in _opening_links(nb) or name not in sections}
    assert not wrong, f"study notebooks whose first Markdown cell lacks [results](../results/quick/REPORT.md#STUDY): {wrong}"
