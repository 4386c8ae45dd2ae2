"""The repository's shape: one package per study hanging off `imgsci.core`, none importing another; study
notebooks keep their library in exported cells."""
import ast
from pathlib import Path

import nbformat
import pytest

from conftest import REPO

PKG = REPO / "imgsci"
STUDY_PACKAGES = sorted(p.name for p in PKG.iterdir() if (p / "__init__.py").exists())


def imported_modules(path: Path, package: str) -> set:
    "Absolute names of the imgsci modules a file imports (relative imports resolved against `package`)."
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in out if m == "imgsci" or m.startswith("imgsci.")}


def cross_study_imports(pkg_dir: Path, packages=None) -> list:
    "Imports in the study package `pkg_dir` that reach into another study package (of `packages`)."
    others = [p for p in (packages or STUDY_PACKAGES) if p != pkg_dir.name]
    bad = []
    for f in sorted(pkg_dir.rglob("*.py")):
        for m in imported_modules(f, f"imgsci.{pkg_dir.name}"):
            if any(m == f"imgsci.{o}" or m.startswith(f"imgsci.{o}.") for o in others):
                bad.append(f"{f.parent.name}/{f.name} imports {m}")
    return bad


def test_there_is_one_package_per_study():
    assert {"tme", "radiative_transfer", "neural_rendering", "nuclei"} <= set(STUDY_PACKAGES), STUDY_PACKAGES
    flat = sorted(p.name for p in PKG.glob("*.py") if p.name not in ("__init__.py", "_modidx.py", "core.py", "reproduce.py"))
    assert not flat, f"study modules must live in their study package, found {flat} at the top"


@pytest.mark.parametrize("package", STUDY_PACKAGES)
def test_no_study_package_imports_another(package):
    assert not cross_study_imports(PKG / package)


def test_the_import_check_can_fail(tmp_path):
    (tmp_path / "tme").mkdir()
    (tmp_path / "tme" / "x.py").write_text("from ..nuclei.data import f\nimport imgsci.core\n")
    (tmp_path / "tme" / "y.py").write_text("from imgsci.radiative_transfer import solver\n")
    bad = cross_study_imports(tmp_path / "tme", ["tme", "nuclei", "radiative_transfer"])
    assert any("imgsci.nuclei.data" in b for b in bad) and any("imgsci.radiative_transfer" in b for b in bad)
    assert not any(b.endswith("imgsci.core") for b in bad)


def _stray_definitions(nb_path: Path) -> list:
    "Functions/classes a notebook defines in cells that are neither exported nor test cells (cells with assertions)."
    out = []
    for cell in nbformat.read(str(nb_path), as_version=4).cells:
        src = cell.source
        if cell.cell_type != "code" or src.lstrip().startswith("#| export") or "#| exporti" in src:
            continue
        try:
            tree = ast.parse("\n".join(l for l in src.splitlines() if not l.startswith(("%", "!"))))
        except SyntaxError:
            continue
        is_test = any(isinstance(n, ast.Assert) or (isinstance(n, ast.Call) and getattr(n.func, "id", "").startswith("test_"))
                      for n in ast.walk(tree))
        defs = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        if defs and not is_test:
            out += defs
    return out


STUDY_NOTEBOOKS = sorted(p for p in (REPO / "nbs").glob("0[2-9]*.ipynb"))


@pytest.mark.parametrize("notebook", STUDY_NOTEBOOKS, ids=lambda p: p.stem)
def test_study_notebooks_keep_their_library_in_exported_cells(notebook):
    assert not _stray_definitions(notebook), f"{notebook.name} defines {_stray_definitions(notebook)} outside exported cells"


def test_the_stray_definition_check_can_fail(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("#| export\ndef lib(): pass"),
                nbformat.v4.new_code_cell("def glue(x):\n    return x"),
                nbformat.v4.new_code_cell("def fixture(): return 1\nassert fixture() == 1")]
    nbformat.write(nb, str(tmp_path / "t.ipynb"))
    assert _stray_definitions(tmp_path / "t.ipynb") == ["glue"]


def test_nothing_cites_an_issue_tracker():
    "The repository speaks for itself: cite the paper, the notebook or the measurement."
    hits = []
    for f in [*REPO.glob("nbs/*.ipynb"), *REPO.glob("imgsci/**/*.py"), *REPO.glob("tests/*.py"), REPO / "README.md"]:
        text = f.read_text(encoding="utf-8").lower()
        for phrase in ("the issue", "issue #", "this issue", "the issue's"):
            if phrase in text and f.name != "test_layout.py":
                hits.append(f"{f.relative_to(REPO)}: '{phrase}'")
    assert not hits, hits
