"""The smoke profile of every study: the full profile's models, sizes and code paths with one or two steps each,
run end to end through the runner, so a shape error or a wrong key in a full-only path fails here, not hours
into a GPU run. One test per study family (the notebooks sharing a reading-order number run in order)."""
import json
import os

import pytest

from imgsci.reproduce import discover_studies, study_family

from conftest import REPO

STUDIES = discover_studies(REPO / "nbs")
FAMILIES = {}
for _name, _nb in STUDIES.items():
    FAMILIES.setdefault(study_family(_nb), []).append(_name)


@pytest.fixture(scope="session")
def smoke_runs(tmp_path_factory):
    "One runs folder for the session (IMGSCI_SMOKE_RUNS keeps it somewhere you can inspect)."
    keep = os.environ.get("IMGSCI_SMOKE_RUNS")
    return tmp_path_factory.mktemp("smoke") if not keep else __import__("pathlib").Path(keep)


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES), ids=[FAMILIES[f][0] for f in FAMILIES])
def test_smoke_profile_runs(family, smoke_runs, reproduce):
    names = FAMILIES[family]
    r = reproduce("--profile", "smoke", "--only", *names, "--runs", smoke_runs, "--no-progress", timeout=1500)
    times = {}
    for name in names:
        rec = smoke_runs / "smoke" / name / "run.json"
        if rec.exists():
            d = json.loads(rec.read_text())
            times[name] = (d["duration_s"], d.get("peak_rss_mb"))
    print(f"smoke times (s, peak MB): {times}")
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
    assert set(times) == set(names)
