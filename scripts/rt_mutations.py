"""Mutation check of the radiative-transfer solver's tests: break the scheme in a copy of the package, run the tests
that should notice, and print which of them fail (each mutation must be caught by at least one).

    flock /tmp/imgsci-heavy.lock .venv/bin/python scripts/rt_mutations.py [--tests K_EXPR]

Mutations (text replacements in imgsci/radiative_transfer/solver.py, applied to a temporary copy only):
  upwind_E_halved    the upwind (E_k − E_j)/2 term of the face flux G, H halved
  upwind_F_halved    the upwind (F_k − F_j)/2 term of the face energy P, Q halved
  ap_factor_removed  the asymptotic-preserving factor M = 2/(2 + Δx σ) replaced by 1
  sigma_a_frozen     step 1 of the original evaluates σa at Tⁿ in every pass instead of T^q
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTATIONS = {
    "upwind_E_halved": [("G = dx * Mx * ((FL + FR) / 2 - (ER - EL) / 2)", "G = dx * Mx * ((FL + FR) / 2 - (ER - EL) / 4)"),
                        ("H = dx * My * ((FD + FU) / 2 - (EU - ED) / 2)", "H = dx * My * ((FD + FU) / 2 - (EU - ED) / 4)")],
    "upwind_F_halved": [("P = dx * Mx * ((EL + ER) / 2 - (FR - FL) / 2)", "P = dx * Mx * ((EL + ER) / 2 - (FR - FL) / 4)"),
                        ("Q = dx * My * ((ED + EU) / 2 - (FU - FD) / 2)", "Q = dx * My * ((ED + EU) / 2 - (FU - FD) / 4)")],
    "ap_factor_removed": [("Mx = 2.0 / (2.0 + dx * sfx)", "Mx = 1.0 + 0.0 * sfx"),
                          ("My = 2.0 / (2.0 + dx * sfy)", "My = 1.0 + 0.0 * sfy")],
    "sigma_a_frozen": [("csa = c * k.sigma_a_scale * _opacity(rho, Tq, k.t_power)",
                        "csa = c * k.sigma_a_scale * _opacity(rho, Tn, k.t_power)")],
}
# the solver tests that do not need ../shared; the C++ comparison uses the shipped reference subset
DEFAULT_TESTS = ("test_original_matches_cpp_reference or telegraph or diffusion_limit or uniform_flux or "
                 "self_convergence or reevaluates_sigma or equilibrium")


def run(name: str, edits, k_expr: str) -> tuple[int, str]:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shutil.copytree(ROOT / "imgsci", tmp / "imgsci", ignore=shutil.ignore_patterns("__pycache__"))
        solver = tmp / "imgsci" / "radiative_transfer" / "solver.py"
        text = solver.read_text()
        for old, new in edits:
            if text.count(old) != 1:
                raise SystemExit(f"{name}: {old!r} found {text.count(old)} times in solver.py; update the mutation")
            text = text.replace(old, new)
        solver.write_text(text)
        env = dict(os.environ, PYTHONPATH=str(tmp), IMGSCI_DATA=str(ROOT / "data"), TF_CPP_MIN_LOG_LEVEL="3")
        cmd = [sys.executable, "-m", "pytest", str(ROOT / "tests" / "test_radiative_transfer_solver.py"), "-q",
               "-p", "no:cacheprovider", "-k", k_expr, "-m", "slow or not slow"]
        out = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
        failed = [l.split("::")[-1].split(" ")[0] for l in out.stdout.splitlines() if l.startswith("FAILED")]
        check = subprocess.run([sys.executable, "-c", "import imgsci.radiative_transfer.solver as s; print(s.__file__)"],
                               cwd=tmp, env=env, capture_output=True, text=True).stdout.strip()
        assert check.startswith(str(tmp)), f"the mutated copy was not imported ({check})"
        return len(failed), ", ".join(failed) or out.stdout.strip().splitlines()[-1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tests", default=DEFAULT_TESTS, help="pytest -k expression of the tests to run per mutation")
    ap.add_argument("--only", nargs="*", default=list(MUTATIONS), help="mutations to apply")
    args = ap.parse_args()
    missed = []
    for name in args.only:
        n, which = run(name, MUTATIONS[name], args.tests)
        print(f"{name:18s} caught by {n} test(s): {which}", flush=True)
        if n == 0:
            missed.append(name)
    if missed:
        raise SystemExit(f"mutations not caught: {', '.join(missed)}")


if __name__ == "__main__":
    main()
