"""The reproduction runner end to end: CLI errors, isolation of failures, parameters, the report."""
import json
import sys

import nbformat
import pandas as pd
import pytest

from imgsci.reproduce import build_report, discover_studies

from conftest import REPO


def make_study(path, body, extra_params=""):
    "A fabricated study notebook: the standard parameters cell plus one code cell."
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(f'profile = "quick"\nseed = 0\nout_dir = "out"\n{extra_params}')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# toy"), params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = dict(name="python3", display_name="Python 3", language="python")
    nbformat.write(nb, str(path))


GOOD = """
import matplotlib; matplotlib.use("Agg")
import matplotlib.pyplot as plt
from imgsci.core import at_least, claim, prepare_out_dir, save_figure, save_table, write_claims
out = prepare_out_dir(out_dir)
if scale < 0:
    raise ValueError(f"scale must be non-negative, got {scale}")
fig, ax = plt.subplots(); ax.plot([0, 1], [0, scale]); ax.set_xlabel("x"); ax.set_ylabel("y")
save_figure(fig, "line", out)
save_table([dict(seed=seed, scale=scale, profile=profile)], "params", out)
write_claims([claim("seed arrives", seed, at_least(1), artifact="figures/line.png")], out)
"""


@pytest.fixture
def toy_nbs(tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    make_study(nbs / "01_alpha.ipynb", GOOD, "scale = 1.0")
    make_study(nbs / "02_broken.ipynb", "x = 1\nraise ZeroDivisionError('planted failure in the toy study')")
    make_study(nbs / "03_gamma.ipynb", GOOD, "scale = 2.0")
    nbformat.write(nbformat.v4.new_notebook(), str(nbs / "00_library.ipynb"))  # no parameters cell: not a study
    return nbs


def test_discovery_skips_notebooks_without_parameters(toy_nbs):
    assert list(discover_studies(toy_nbs)) == ["alpha", "broken", "gamma"]


def test_one_failure_is_reported_and_the_others_still_run(toy_nbs, tmp_path, reproduce):
    runs = tmp_path / "runs"
    r = reproduce("--nbs", toy_nbs, "--runs", runs, "--no-progress", "-p", "seed=5")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "broken (seed 5): FAILED in 02_broken.ipynb" in r.stdout and "ZeroDivisionError" in r.stdout
    assert "2 runs ok, 1 failed: broken" in r.stdout
    for name in ("alpha", "gamma"):
        params = pd.read_csv(runs / "quick" / name / "tables" / "params.csv")
        assert params.seed[0] == 5                                   # -p seed=5 reached the notebook
        assert (runs / "quick" / name / "figures" / "line.png").stat().st_size > 1000
        assert (runs / "quick" / name / f"0{'1' if name == 'alpha' else '3'}_{name}.ipynb").exists()
    rec = json.loads((runs / "quick" / "broken.failed" / "run.json").read_text())
    assert rec["error"]["ename"] == "ZeroDivisionError" and rec["error"]["cell"] is not None
    report = (runs / "quick" / "REPORT.md").read_text()
    assert "**FAILED**" in report and "planted failure in the toy study" in report
    assert "![line](alpha/figures/line.png)" in report and "seed arrives" in report
    # nothing executed goes back into the notebook folder
    assert sorted(p.name for p in toy_nbs.iterdir()) == ["00_library.ipynb", "01_alpha.ipynb", "02_broken.ipynb", "03_gamma.ipynb"]


def test_a_failed_rerun_keeps_the_last_good_results(toy_nbs, tmp_path, reproduce):
    runs = tmp_path / "runs"
    assert reproduce("--nbs", toy_nbs, "--runs", runs, "--only", "alpha", "--no-progress").returncode == 0
    good = (runs / "quick" / "alpha" / "figures" / "line.png").read_bytes()
    r = reproduce("--nbs", toy_nbs, "--runs", runs, "--only", "alpha", "--no-progress", "-p", "scale=-1.0")
    assert r.returncode == 1
    assert (runs / "quick" / "alpha" / "figures" / "line.png").read_bytes() == good
    assert (runs / "quick" / "alpha.failed" / "run.json").exists()
    assert "last good run" in (runs / "quick" / "REPORT.md").read_text()
    assert not any(p.name.startswith(".") for p in (runs / "quick").iterdir())   # no staging folder left


def test_only_profile_and_parameters(toy_nbs, tmp_path, reproduce):
    runs = tmp_path / "runs"
    r = reproduce("--nbs", toy_nbs, "--runs", runs, "--only", "gamma", "--profile", "full", "--no-progress",
                  "-p", "scale=3.5", "--seed", "11")
    assert r.returncode == 0, r.stdout + r.stderr
    params = pd.read_csv(runs / "full" / "gamma" / "tables" / "params.csv")
    assert (params.seed[0], params.scale[0], params.profile[0]) == (11, 3.5, "full")
    assert not (runs / "full" / "alpha").exists()


@pytest.mark.parametrize("args, expected", [
    (["--only", "nosuch"], "unknown study 'nosuch'; valid studies: alpha, broken, gamma"),
    (["--profile", "fast"], "invalid choice: 'fast' (choose from 'quick', 'full', 'smoke')"),
    (["--seeds", "0,x"], "bad --seeds '0,x'"),
    (["--seeds", "0"], "a count must be at least 1"),
    (["--seeds", "2", "-p", "seed=1"], "either --seeds or -p seed"),
    (["--workers", "0"], "--workers must be at least 1"),
    (["-p", "seed"], "malformed parameter 'seed': expected KEY=VALUE"),
    (["-p", "nosuch=1"], "unknown parameter 'nosuch' for the selected studies; they declare:"),
    (["-p", "out_dir=/tmp/x"], "is set by the runner"),
    (["-p", "seed=-2"], "seed must be a non-negative integer"),
])
def test_bad_cli_input_gets_one_line_error(toy_nbs, tmp_path, reproduce, args, expected):
    r = reproduce("--nbs", toy_nbs, "--runs", tmp_path / "runs", *args)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], r.stderr
    assert not (tmp_path / "runs").exists()


def test_missing_notebook_folder(tmp_path, reproduce):
    r = reproduce("--nbs", tmp_path / "nope", "--list")
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_list_shows_the_real_studies(reproduce):
    r = reproduce("--list")
    assert r.returncode == 0, r.stderr
    studies = discover_studies(REPO / "nbs")
    assert studies, "the repository must ship at least one study notebook"
    for name in studies:
        assert name in r.stdout


def test_every_real_study_declares_the_runner_parameters():
    from imgsci.reproduce import REQUIRED_PARAMETERS, notebook_parameters
    for name, nb in discover_studies(REPO / "nbs").items():
        params = notebook_parameters(nb)
        missing = [p for p in REQUIRED_PARAMETERS if p not in params]
        assert not missing, f"{nb.name} lacks parameters {missing}"
        assert params["profile"] == "quick", f"{nb.name}: the default profile must be quick"


def test_empty_profile_report(tmp_path):
    text = build_report(tmp_path / "quick").read_text()
    assert "No study has run" in text


def _tables(folder):
    return {p.name: p.read_bytes() for p in sorted((folder / "tables").glob("*.csv"))}


def test_dask_local_cluster_matches_the_sequential_run(toy_nbs, tmp_path, reproduce):
    seq, dsk = tmp_path / "seq", tmp_path / "dask"
    r1 = reproduce("--nbs", toy_nbs, "--runs", seq, "--no-progress")
    r2 = reproduce("--nbs", toy_nbs, "--runs", dsk, "--no-progress", "--workers", "2")
    assert r1.returncode == 1 and r2.returncode == 1, r2.stdout + r2.stderr
    assert "on a local Dask cluster of 2 workers" in r2.stdout
    for name in ("alpha", "gamma"):
        assert _tables(dsk / "quick" / name) == _tables(seq / "quick" / name)
    rec = json.loads((dsk / "quick" / "broken.failed" / "run.json").read_text())
    assert rec["error"]["ename"] == "ZeroDivisionError" and rec["error"]["cell"] is not None
    assert "**FAILED**" in (dsk / "quick" / "REPORT.md").read_text()
    good = _tables(dsk / "quick" / "alpha")           # a failed rerun on Dask keeps the last good results
    r3 = reproduce("--nbs", toy_nbs, "--runs", dsk, "--only", "alpha", "--no-progress", "--workers", "1", "-p", "scale=-1.0")
    assert r3.returncode == 1 and _tables(dsk / "quick" / "alpha") == good
    assert (dsk / "quick" / "alpha.failed" / "run.json").exists()


def test_seed_sweep_reports_mean_sd_and_counts(toy_nbs, tmp_path, reproduce):
    runs = tmp_path / "runs"
    r = reproduce("--nbs", toy_nbs, "--runs", runs, "--only", "alpha", "--no-progress", "--seeds", "0,1,2")
    assert r.returncode == 0, r.stdout + r.stderr
    for k in range(3):
        assert pd.read_csv(runs / "quick" / "alpha" / f"seed-{k}" / "tables" / "params.csv").seed[0] == k
    report = (runs / "quick" / "REPORT.md").read_text()
    # the claim is the seed itself, judged "≥ 1": seeds 1 and 2 meet it, seed 0 does not
    assert "1 ± 1 (0–2, n=3)" in report, report
    assert "2/3 reproduced, 1/3 not reproduced" in report and "| partly " in report
    assert "![line](alpha/seed-0/figures/line.png)" in report


def test_unreachable_scheduler_fails_fast_with_one_line(toy_nbs, tmp_path, reproduce):
    import time
    t0 = time.perf_counter()
    r = reproduce("--nbs", toy_nbs, "--runs", tmp_path / "runs", "--scheduler", "tcp://127.0.0.1:9", "--no-progress")
    assert r.returncode == 2 and time.perf_counter() - t0 < 60
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in lines[0], r.stderr


def test_kernel_stderr_stays_out_of_the_terminal(toy_nbs, tmp_path, reproduce):
    nbs = tmp_path / "loud"
    nbs.mkdir()
    make_study(nbs / "01_loud.ipynb", "import sys; print('PLANTED-STDERR-LINE', file=sys.__stderr__, flush=True)\n" + GOOD,
               "scale = 1.0")
    quiet = reproduce("--nbs", nbs, "--runs", tmp_path / "q", "--no-progress")
    loud = reproduce("--nbs", nbs, "--runs", tmp_path / "v", "--no-progress", "--verbose")
    assert quiet.returncode == 0 and loud.returncode == 0, quiet.stderr
    assert "PLANTED-STDERR-LINE" not in quiet.stdout + quiet.stderr
    assert "PLANTED-STDERR-LINE" in (tmp_path / "q" / "quick" / "loud" / "kernel.log").read_text()
    assert "PLANTED-STDERR-LINE" in loud.stdout + loud.stderr
