"""Tests of the split-step P1 solver (imgsci.radiative_transfer.solver): the original scheme against the C++
program's output, all four source edges, batching, gradients, bad input, and the verification suite."""
from pathlib import Path

import numpy as np
import pytest

from imgsci.core import data_path
from imgsci.radiative_transfer.solver import (CFL_MAX, E_INIT, SCHEMES, NonFiniteError, Source, check_cfl,
                                              convergence_order, diffusion_ratio, edge_symmetry_errors, energy_balance,
                                              equilibrium_drift, fourier_mode_error, gradient_check, n_time_steps,
                                              reference_match, self_convergence, split_step_p1, step1_cell_reference,
                                              time_step, uniform_flux_decay_error)
from imgsci.radiative_transfer.solver import _Static, _step1, MAX_ITER, SOURCE_AMPLITUDE, T_INIT, TOL

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "p1"
SHIPPED = data_path("radiative_transfer", "p1_reference_3000_top.npz")


def _reference():
    "The complete reference (../shared, all 25 snapshots) when present, else the shipped subset."
    full = SHARED / "run_3000_src_u.npz"
    ref = dict(np.load(full if full.exists() else SHIPPED))
    ref.setdefault("density_rowTop", np.flipud(ref["rho_mesh"]))
    return ref


@pytest.fixture(scope="module")
def ref():
    return _reference()


@pytest.fixture(scope="module")
def rho3000(ref):
    return ref["density_rowTop"]


@pytest.mark.slow
def test_original_matches_cpp_reference(ref):
    """Every final field, signal and snapshot within 1e-6·max|ref| (we reach ~1e-12)."""
    res = split_step_p1(ref["density_rowTop"], "top", "original", snapshot_steps=ref["snap_steps"])
    assert res.n_steps == 383 and abs(res.t_end - float(ref["t_final"])) < 1e-15
    np.testing.assert_allclose(res.times, ref["t_signals"], rtol=0, atol=1e-15)
    match = reference_match(res, ref)
    assert len(match) == 4 + 12 + 4
    assert (match.relative <= 1e-6).all(), match[match.relative > 1e-6]
    assert res.max_passes >= 2   # the fixed point really iterated somewhere (and its exit rule mattered)
    consistent = reference_match(split_step_p1(ref["density_rowTop"], "top", "consistent"), {
        k: v for k, v in ref.items() if not k.startswith("snap")})
    assert consistent.relative.max() > 1e-3      # the other scheme does not match: the comparison can fail


def test_shipped_reference_is_a_faithful_subset(ref):
    if not (SHARED / "run_3000_src_u.npz").exists():
        pytest.skip("../shared/reference/p1 is not available")
    shipped = np.load(SHIPPED)
    idx = np.searchsorted(ref["snap_steps"], shipped["snap_steps"])
    np.testing.assert_array_equal(ref["snap_steps"][idx], shipped["snap_steps"])
    np.testing.assert_array_equal(ref["snap_E"][idx], shipped["snap_E"])
    np.testing.assert_array_equal(ref["E_final"], shipped["E_final"])
    np.testing.assert_array_equal(np.load(SHARED / "density_3000_input_npy_rowTop.npy"), shipped["density_rowTop"])


@pytest.mark.parametrize("scheme", SCHEMES)
def test_all_four_source_edges_by_symmetry(rho3000, scheme):
    """Bottom/left/right sources on the mirrored/transposed/rotated density give the transformed top run,
    all four in one batch, at the full 64² and 383 steps of the reference configuration."""
    errors = edge_symmetry_errors(rho3000, scheme)
    assert sorted(errors) == ["bottom", "left", "right"]
    assert max(errors.values()) <= 1e-10, errors


@pytest.mark.slow
def test_batch_equals_single_runs_and_segments():
    rng = np.random.default_rng(3)
    rho = 1 + 3 * rng.random((3, 16, 16))
    tf_ = 50 * time_step(16)
    batch = split_step_p1(rho, ["top", Source("left", 0.2, 0.6), "right"], "consistent", tf_)
    for b, src in enumerate(["top", Source("left", 0.2, 0.6), "right"]):
        one = split_step_p1(rho[b], src, "consistent", tf_, snapshot_steps=[10, 50], progress=True)
        np.testing.assert_allclose(one.E, batch.E[b], rtol=0, atol=1e-12)
        np.testing.assert_allclose(one.signals["left"]["F"], batch.signals["left"]["F"][b], rtol=0, atol=1e-12)
        np.testing.assert_array_equal(one.snapshots["T"][-1], one.T)
    # a segment source only lights up its own cells: the rows outside 0.2–0.6 of the left edge keep E0 early on
    seg = split_step_p1(rho[1], Source("left", 0.2, 0.6), "original", 3 * time_step(16))
    y_frac = (16 - 0.5 - np.arange(16)) / 16
    inside = (y_frac >= 0.2) & (y_frac < 0.6)
    moved = np.abs(seg.E[:, 0] - E_INIT) > 1e-9
    assert moved[inside].all() and not moved[np.abs(y_frac - 0.4) > 0.35].any()


def test_non_square_grid_and_orientation():
    rho = np.ones((8, 16))
    res = split_step_p1(rho, "bottom", "consistent", 6 * time_step(16))
    assert res.E.shape == (8, 16) and res.signals["left"]["E"].shape == (6, 8)
    assert res.signals["top"]["E"].shape == (6, 16)
    # the bottom source heats the bottom row (row M-1) first; F points up (Fy > 0) away from it
    assert res.E[-1].mean() > res.E[0].mean() + 0.1
    assert res.Fy[-1].mean() > 0 and abs(res.Fx).max() < 1e-10   # uniform in x: no horizontal flux


@pytest.mark.parametrize("bad, kwargs, message", [
    (np.ones(4), {}, "shape (M, N) or (B, M, N)"),
    (np.ones((2, 2, 2, 2)), {}, "shape (M, N) or (B, M, N)"),
    (np.full((4, 4), np.nan), {}, "NaN or infinite"),
    (np.full((4, 4), np.inf), {}, "NaN or infinite"),
    (np.zeros((4, 4)), {}, "positive everywhere"),
    (np.ones((4, 4)), dict(source="north"), "unknown source edge"),
    (np.ones((4, 4)), dict(scheme="fast"), "unknown scheme"),
    (np.ones((4, 4)), dict(cfl=0.55), "largest stable value for every medium is 0.5"),
    (np.ones((4, 4)), dict(t_final=-1.0), "t_final must be a positive"),
    (np.ones((4, 4)), dict(boundary="reflective"), "unknown boundary"),
    (np.ones((2, 4, 4)), dict(source=["top"]), "one per density"),
    (np.ones((4, 4)), dict(initial=dict(T=-1.0)), "finite and positive"),
    (np.ones((4, 4)), dict(initial=dict(rho=1.0)), "unknown"),
    (np.array([["a", "b"], ["c", "d"]]), {}, "real numeric"),
])
def test_bad_input_is_refused_before_running(bad, kwargs, message):
    with pytest.raises((ValueError, TypeError)) as err:
        split_step_p1(bad, **kwargs)
    assert message in str(err.value)


def test_cfl_bound_and_nan_report():
    assert check_cfl(CFL_MAX) == CFL_MAX
    with pytest.raises(ValueError, match="use cfl ≤ 0.5"):
        split_step_p1(np.ones((8, 8)), cfl=0.51)
    with pytest.raises(NonFiniteError, match=r"at step \d+ \(t = .*\), batch element 1, cell row \d+, col \d+") as err:
        split_step_p1(np.stack([np.full((12, 12), 50.0), np.ones((12, 12))]), ["top", "top"], cfl=0.7,
                      check_stability=False, t_final=0.03)
    assert err.value.batch == 1 and err.value.step > 0 and f"at step {err.value.step} " in str(err.value)
    assert isinstance(err.value, FloatingPointError)


def test_fixed_point_cap_is_an_error():
    with pytest.raises(RuntimeError, match="did not converge within max_iter"):
        split_step_p1(np.ones((8, 8)), "top", "consistent", 20 * time_step(8), max_iter=1)


def test_step_count_rule():
    assert n_time_steps(0.01, time_step(64)) == 383
    assert n_time_steps(1.0, 0.01) == 100   # t_f/Δt integral: no extra step (the original's N = 100 crash)
    res = split_step_p1(np.ones((4, 4)), t_final=10 * time_step(4))
    assert res.n_steps == 10 and res.signals["top"]["E"].shape[0] == 10


@pytest.mark.slow
@pytest.mark.parametrize("scheme", SCHEMES)
def test_gradient_matches_finite_differences(scheme):
    rho0 = 1 + 2 * np.random.default_rng(5).random((2, 10, 10))
    check = gradient_check(rho0, ["left", "bottom"], scheme, 40 * time_step(10),
                           indices=[(0, 0, 0), (0, 4, 9), (1, 9, 3), (1, 5, 5)])
    assert np.isfinite(check.full_gradient).all() and np.abs(check.full_gradient).max() > 0
    assert abs(check.loss - check.loss_untaped) < 1e-10
    np.testing.assert_allclose(check.gradient, check.finite_difference,
                               atol=1e-5 * max(1.0, np.abs(check.finite_difference).max()), rtol=0)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_uniform_flux_decays_by_the_exact_discrete_factor(scheme):
    assert uniform_flux_decay_error(scheme, 3.0, 6, 7, 0.7, -0.2) < 1e-12
    res = split_step_p1(np.full((6, 6), 3.0), None, scheme, 7 * time_step(6), boundary="periodic",
                        sigma_a_scale=0, opacity_t_power=0, initial=dict(Fx=0.7, Fy=-0.2))
    np.testing.assert_allclose(res.E, E_INIT, rtol=1e-14)


@pytest.mark.slow
def test_telegraph_mode_converges_at_first_order_consistent_only():
    sizes = (32, 64, 128)
    errs = [fourier_mode_error(n)["error"] for n in sizes]
    orders = convergence_order(errs, sizes)
    assert (orders > 0.85).all() and (orders < 1.2).all(), orders
    errs_o = [fourier_mode_error(n, "original")["error"] for n in sizes]
    assert min(errs_o) > 5 * errs[-1]   # W = 1: converges to a different equation


def test_diffusion_limit():
    cons = diffusion_ratio("consistent", 128.0)
    orig = diffusion_ratio("original", 128.0)
    assert 0.95 < cons["ratio"] < 1.05, cons
    assert orig["ratio"] < 0.85, orig


@pytest.mark.parametrize("scheme, limit", [("consistent", 1e-7), ("original", 1e-4)])
def test_equilibrium_and_energy_balance(scheme, limit):
    rho = 1 + 4 * np.random.default_rng(7).random((16, 16))
    assert equilibrium_drift(rho, scheme, 150 * time_step(16)) < 1e-13
    eb = energy_balance(rho, "right", scheme, 150 * time_step(16))
    assert abs(eb["residual"]) < limit, eb
    assert abs(eb["boundary_outflow"]) > 1.0     # the source really pumped energy in


def test_original_step1_reevaluates_sigma_a_at_every_iterate():
    """The C++ uses σa(T^q) in each fixed-point pass; a cell needing ≥ 3 passes tells it from σa frozen at Tⁿ."""
    import tensorflow as tf
    cells = [(E_INIT, T_INIT, 1.0), (40.0, 5.0, 3.0), (2.0, 5.0, 4.0), (9.5, 5.0, 2.0), (20.0, 4.0, 5.0)]
    dt = time_step(64)
    ref = [step1_cell_reference(*c, dt) for c in cells]
    frozen = [step1_cell_reference(*c, dt, freeze_sigma=True) for c in cells]
    assert max(r[2] for r in ref) >= 3
    assert max(abs(f[0] - r[0]) for f, r in zip(frozen, ref)) > 1e-6            # the case tells the two apart
    k = _Static(scheme="original", boundary="transmissive", dx=1 / 64, tol=TOL, max_iter=MAX_ITER, sigma_a_scale=1.0,
                t_power=1, src_amp=SOURCE_AMPLITUDE, chunk=8)
    args = [tf.constant([[[c[i] for c in cells]]], tf.float64) for i in range(3)]
    for unroll in (0, 8):                                                        # while loop and gradient path
        E, T, passes, _ = _step1(*args, dt, k if not unroll else _Static(**{**k.__dict__, "unroll": unroll}))
        np.testing.assert_allclose(E.numpy()[0, 0], [r[0] for r in ref], rtol=0, atol=1e-12)
        np.testing.assert_allclose(T.numpy()[0, 0], [r[1] for r in ref], rtol=0, atol=1e-12)


@pytest.mark.slow
def test_self_convergence_on_the_production_path():
    """Consistent scheme, heterogeneous ρ, σa = σc = ρT, source top, transmissive edges: first order."""
    tab = self_convergence((32, 64, 128, 256), "consistent", coarse_steps=16)
    assert (np.diff(tab.error) < 0).all(), tab
    assert 0.75 < tab.order.iloc[-2] < 1.3, tab
    with pytest.raises(ValueError, match="must double"):
        self_convergence((16, 48))


def test_diffusion_estimator_refuses_unrelaxed_runs():
    with pytest.raises(ValueError, match="relaxation times"):
        diffusion_ratio("consistent", 16.0)
    assert diffusion_ratio("consistent", 32.0)["relaxation_times"] >= 8
