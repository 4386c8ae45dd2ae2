"""Tumour counterfactual study (Wang & Thomson): the stability-selected read-out must recover a chemokine mechanism
planted in the simulator (a set never used while developing the read-out), a cohort whose classifier never predicts
T cells must end in "no therapy" with a reason, and the batched counterfactual search must follow alibi's
CounterfactualProto algorithm. Reduced cohorts (30 patients, one 160 µm core each), the MLP, a short search."""
import numpy as np
import pytest

from imgsci.tme.counterfactuals import counterfactual_proto, discover_therapy, kappa_for, recover_mechanism
from imgsci.tme.imc import SimConfig, fit_once, make_patches, marker_thresholds, simulate_cohort

HELD_OUT = "CCL4+,CCL18-,CXCL8+"  # never run while the read-out was developed (dev sets: the paper's and CCL2+,CXCL13+,CCL22-)
SEEDS = range(1, 6)
SIM = dict(n_patients=30, cores_per_patient=(1, 1), size=160)
FIT = dict(epochs=25, patience=25, learning_rate=1e-2)
CF = dict(c_steps=3, max_iterations=150)


def rows(planted, seeds=SEEDS, **sim):
    return [recover_mechanism(planted, s, {**SIM, **sim}, FIT, CF, n_retrains=2, n_boot=30) for s in seeds]


@pytest.fixture(scope="module")
def held_out():
    return rows(HELD_OUT)


@pytest.mark.slow
def test_held_out_mechanism_is_recalled_in_four_of_five_seeds(held_out):
    recalled = [r["recall"] >= 0.8 for r in held_out]
    assert sum(recalled) >= 4, [(r["seed"], r["targets"]) for r in held_out]


@pytest.mark.slow
def test_recall_half_fails_when_the_mechanism_is_switched_off():
    "The same planted names with gain 0 (no chemokine acts): the recall check above must not pass."
    off = rows(HELD_OUT, seeds=range(1, 4), gain=0.0)
    assert sum(r["recall"] >= 0.8 for r in off) <= 1, [(r["seed"], r["targets"]) for r in off]


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="measured: the median-counterfactual read-out names 1-7 false targets in most "
                   "seeds (the classifier learns chemokine differences between compartments, which T cells follow "
                   "without any mechanism); strict, so it reports when this is fixed")
def test_held_out_mechanism_has_no_false_target_in_four_of_five_seeds(held_out):
    assert sum(r["false"] == 0 for r in held_out) >= 4, [(r["seed"], r["targets"]) for r in held_out]


@pytest.fixture(scope="module")
def empty():
    return rows("")


@pytest.mark.slow
def test_empty_planted_set_names_no_target_in_four_of_five_seeds(empty):
    assert sum(r["targets"] == "none" for r in empty) >= 4, [(r["seed"], r["targets"]) for r in empty]


@pytest.mark.slow
def test_no_target_half_fails_when_a_mechanism_is_planted():
    "The same seeds with a development mechanism planted: the no-target check above must not pass."
    planted = rows("CCL2+,CXCL13+,CCL22-", seeds=range(1, 4))
    assert sum(r["targets"] == "none" for r in planted) <= 1, [(r["seed"], r["targets"]) for r in planted]


@pytest.mark.slow
def test_study_notebook_completes_with_nothing_planted(tmp_path, reproduce):
    "A new user's `-p planted=''`: the study runs to the end (smoke profile) and reports no therapy, with the reason."
    import pandas as pd
    r = reproduce("--profile", "smoke", "--only", "tme_counterfactuals", "-p", "planted=''", "--runs", tmp_path,
                  "--no-progress", timeout=1200)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    claims = pd.read_csv(tmp_path / "smoke" / "tme_counterfactuals" / "tables" / "claims.csv")
    row = claims[claims.claim.str.contains("with no mechanism planted, the read-out names no target")]
    assert len(row) == 1, claims.claim.tolist()


def test_a_classifier_that_never_predicts_t_cells_gives_no_therapy_and_says_why():
    co = simulate_cohort(SimConfig(n_patients=6, cores_per_patient=(1, 1), size=80, planted="", seed=13))
    patches = make_patches(co, marker_thresholds(co))
    fit = fit_once(patches, "mlp", seed=13, epochs=1, patience=1)
    w, b = fit.model.layers[-1].get_weights()
    fit.model.layers[-1].set_weights([0 * w, np.array([5.0, -5.0], np.float32)])  # p(T cells) ≈ 0 everywhere
    d = discover_therapy(fit, patches, np.arange(len(patches)), c_steps=1, max_iterations=5)
    assert "no T-cell prototype" in d.reason and not d.table.target.any() and len(d.rel) == 0


# --- the counterfactual search against a plain NumPy transcription of alibi's algorithm ---------------------

def _reference_cfproto(W, b, x0, proto, lo, hi, kappa, beta, theta, c_init, c_steps, iters, lr0, clip):
    "Sequential, single-instance alibi CounterfactualProto for a linear softmax model (analytic gradients)."
    def proba(x):
        z = x @ W + b
        e = np.exp(z - z.max())
        return e / e.sum()
    orig = int(np.argmax(proba(x0)))
    other = 1 - orig
    const, c_lo, c_hi = c_init, 0.0, 1e10
    best_d, best_x = np.inf, x0.copy()
    for _ in range(c_steps):
        adv, adv_s, found = x0.copy(), x0.copy(), False
        for it in range(iters):
            p = proba(adv_s)
            g = 2 * (adv_s - x0) + 2 * theta * (adv_s - proto)
            if p[orig] - p[other] + kappa > 0:
                g = g + const * 2 * p[orig] * (1 - p[orig]) * (W[:, orig] - W[:, other])
            y = adv_s - lr0 * np.sqrt(1 - it / iters) * np.clip(g, *clip)
            d = y - x0
            new = np.where(d > beta, np.minimum(y - beta, hi), np.where(d < -beta, np.maximum(y + beta, lo), x0))
            adv_s = np.clip(new + (it + 1) / (it + 4) * (new - adv), lo, hi)
            adv = new
            q = proba(adv)
            q[orig] += kappa
            dist = np.sum((adv - x0) ** 2) + beta * np.sum(np.abs(adv - x0))
            if np.argmax(q) != orig:
                found = True
                if dist < best_d:
                    best_d, best_x = dist, adv.copy()
        if found:
            c_hi = min(c_hi, const)
        else:
            c_lo = max(c_lo, const)
        const = (c_lo + c_hi) / 2 if c_hi < 1e9 else const * 10
    return best_x, best_d


def test_batched_search_matches_a_sequential_reference():
    import keras
    rng = np.random.default_rng(0)
    W = rng.normal(size=(4, 2)).astype(np.float32)
    b = np.array([0.5, -0.5], np.float32)
    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Dense(2, activation="softmax")(inp))
    model.layers[-1].set_weights([W, b])
    x_train = rng.normal(size=(300, 4)).astype(np.float32)
    z = x_train @ W + b
    x0 = x_train[np.argsort(z[:, 1] - z[:, 0])[:5]]  # five instances firmly in class 0
    lo, hi = x_train.min(0), x_train.max(0)
    kw = dict(kappa=kappa_for(0.8), beta=0.1, theta=2.0, c_init=10.0, c_steps=3, max_iterations=200,
              learning_rate_init=1e-2, clip=(-1000.0, 1000.0))
    ours = counterfactual_proto(model, x0, x_train, feature_range=(lo, hi), **kw)
    for i in range(len(x0)):
        ref_x, ref_d = _reference_cfproto(W.astype(np.float64), b.astype(np.float64), x0[i].astype(np.float64),
                                          ours.proto[i].astype(np.float64), lo, hi, kw["kappa"], kw["beta"],
                                          kw["theta"], kw["c_init"], kw["c_steps"], kw["max_iterations"],
                                          kw["learning_rate_init"], kw["clip"])
        assert np.isfinite(ref_d) == ours.found[i]
        np.testing.assert_allclose(ours.x_cf[i], ref_x, atol=2e-3)
        np.testing.assert_allclose(ours.dist[i], ref_d, rtol=1e-2, atol=1e-3)
