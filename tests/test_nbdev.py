"""The notebooks are the source: the library must be exactly their export, they must be clean, and the test cells
of the library notebooks (everything not flagged `#| slow`) must pass under nbdev_test. Study notebooks (those with
a papermill parameters cell) run whole, test cells included, in tests/test_smoke.py."""
import filecmp
import shutil
import sys
from pathlib import Path

import pytest

from imgsci.reproduce import discover_studies

from conftest import REPO, run

BIN = Path(sys.executable).parent
NOTEBOOKS = sorted(p.name for p in (REPO / "nbs").glob("*.ipynb"))
STUDY_NOTEBOOKS = {p.name for p in discover_studies(REPO / "nbs").values()}
LIBRARY_NOTEBOOKS = [nb for nb in NOTEBOOKS if nb not in STUDY_NOTEBOOKS]
FAST = {"00_core.ipynb", "01_reproduce.ipynb"}   # the rest import TensorFlow and train small things


def _copy_project(dst):
    shutil.copy(REPO / "settings.ini", dst / "settings.ini")
    shutil.copytree(REPO / "nbs", dst / "nbs", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    shutil.copytree(REPO / "imgsci", dst / "imgsci", ignore=shutil.ignore_patterns("__pycache__"))


def test_export_leaves_the_library_unchanged(tmp_path):
    _copy_project(tmp_path)
    r = run([str(BIN / "nbdev_export")], cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    cmp = filecmp.dircmp(REPO / "imgsci", tmp_path / "imgsci", ignore=["__pycache__"])
    def diffs(c, prefix=""):
        out = [prefix + f for f in c.diff_files + c.left_only + c.right_only]
        for name, sub in c.subdirs.items():
            out += diffs(sub, prefix + name + "/")
        return out
    changed = diffs(cmp)
    assert not changed, f"nbdev_export changes {changed}: run nbdev_export and commit the library"


def test_clean_leaves_the_notebooks_unchanged(tmp_path):
    _copy_project(tmp_path)
    r = run([str(BIN / "nbdev_clean")], cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    changed = [nb for nb in NOTEBOOKS if (REPO / "nbs" / nb).read_bytes() != (tmp_path / "nbs" / nb).read_bytes()]
    assert not changed, f"nbdev_clean changes {changed}: run nbdev_clean and commit"


@pytest.mark.parametrize("notebook", [nb if nb in FAST else pytest.param(nb, marks=pytest.mark.slow)
                                      for nb in LIBRARY_NOTEBOOKS])
def test_library_notebook_cells_pass(notebook, tmp_path):
    runs = REPO / "_runs"
    before = sorted(runs.rglob("*")) if runs.exists() else []
    r = run([str(BIN / "nbdev_test"), "--path", f"nbs/{notebook}"], timeout=900)
    assert r.returncode == 0, (r.stdout + r.stderr)[-6000:]
    after = sorted(runs.rglob("*")) if runs.exists() else []
    assert after == before, f"nbdev_test of {notebook} wrote into _runs/: {sorted(set(after) - set(before))[:5]}"
