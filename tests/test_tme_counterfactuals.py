"""Tumour counterfactual study (Wang & Thomson): the pipeline must recover a chemokine mechanism planted in the
simulator (one it was never tuned on), the oracle must confirm the predicted effect, nothing may be found when
nothing is planted, and the batched counterfactual search must follow alibi's CounterfactualProto algorithm."""
import numpy as np
import pytest

from imgsci.tme.counterfactuals import (counterfactual_proto, discover_therapy, infiltration, kappa_for,
                                        oracle_infiltration, recovery, therapy_dict, therapy_string)
from imgsci.tme.imc import (PAPER_PLANTED, parse_planted, SimConfig, fit_once, make_patches, marker_thresholds,
                            simulate_cohort, tcell_patches)

UNTUNED = "CCL2+,CXCL13+,CCL22-"  # the simulator and pipeline settings were chosen on the paper's mechanism only


def run_pipeline(planted, seed=1, n_patients=60, size=160):
    "Simulate → patches → MLP → counterfactuals of the excluded patients' negative patches → therapy."
    co = simulate_cohort(SimConfig(n_patients=n_patients, cores_per_patient=(1, 2), size=size, planted=planted, seed=seed))
    patches = make_patches(co, marker_thresholds(co))
    fit = fit_once(patches, "mlp", seed=seed, epochs=150, patience=50)
    excluded = co.meta.excluded.to_numpy()[patches.image]
    instances = np.nonzero(excluded & (fit.proba < 0.5))[0]
    found = discover_therapy(fit, patches, instances, c_steps=3, max_iterations=300)
    return dict(cohort=co, patches=patches, fit=fit, excluded=excluded, result=found.result, table=found.table)


@pytest.fixture(scope="module")
def untuned():
    return run_pipeline(UNTUNED)


@pytest.fixture(scope="module")
def paper():
    return run_pipeline(PAPER_PLANTED, seed=2)


def ranked_by_agreement(table, k):
    "The k chemokines whose counterfactual changes agree most in sign, in planted notation."
    top = table.sort_values("agreement", ascending=False).head(k)
    return {r.chemokine: (1.0 if r.median_rel_change > 0 else -1.0) for r in top.itertuples()}


def check_recovery(run, planted):
    "The planted chemokines are the most consistently moved ones, in the planted directions; no target is false."
    truth = {k: np.sign(v) for k, v in parse_planted(planted).items()}
    assert ranked_by_agreement(run["table"], len(truth)) == truth, run["table"]
    rec = recovery(run["table"], planted)
    assert not rec.false and rec.hits, (therapy_string(run["table"]), rec)
    assert run["result"].found.mean() > 0.95


@pytest.mark.slow
def test_recovers_a_planted_mechanism_it_was_never_tuned_on(untuned):
    check_recovery(untuned, UNTUNED)


@pytest.mark.slow
def test_discovered_therapy_follows_the_planted_mechanism(untuned, paper):
    check_recovery(paper, PAPER_PLANTED)
    a, b = set(therapy_dict(untuned["table"])), set(therapy_dict(paper["table"]))
    assert a.isdisjoint(b), (a, b)  # the two planted sets share no chemokine, and neither do the therapies


@pytest.mark.slow
def test_oracle_confirms_the_predicted_infiltration_change(untuned):
    co, patches, fit = untuned["cohort"], untuned["patches"], untuned["fit"]
    therapy = therapy_dict(untuned["table"])
    images = np.nonzero(co.meta.excluded.to_numpy())[0]
    sel = np.isin(patches.image, images)
    pred0, pred1 = infiltration(fit, patches, sel).mean(), infiltration(fit, patches, sel, therapy).mean()
    true0, true1 = oracle_infiltration(co, images).mean(), oracle_infiltration(co, images, therapy).mean()
    assert pred1 / pred0 > 1.5 and true1 / true0 > 1.5, (pred0, pred1, true0, true1)
    assert 0.5 < (pred1 / pred0) / (true1 / true0) < 2.0  # the model's promise holds within a factor of two
    opposite = {k: -0.5 * np.sign(v) for k, v in therapy.items()}
    assert oracle_infiltration(co, images, opposite).mean() < true0


@pytest.mark.slow
def test_labels_from_markers_match_the_true_t_cells(untuned):
    co, patches = untuned["cohort"], untuned["patches"]
    truth = np.concatenate([tcell_patches(m).ravel() for m in co.truth["tcell_mask"]])
    assert (truth == patches.label).mean() > 0.97


@pytest.mark.slow
def test_without_a_mechanism_the_classifier_fails_and_the_oracle_exposes_the_therapy(untuned):
    """With no chemokine acting, T cells follow tissue only: the classifier is near chance, and whatever therapy the
    counterfactuals still suggest (the prototype term always points somewhere) changes nothing in the oracle."""
    run = run_pipeline("none", seed=3)
    assert run["fit"].metrics[0.5]["auc"] < 0.7 < untuned["fit"].metrics[0.5]["auc"]
    co, therapy = run["cohort"], therapy_dict(run["table"], targets_only=False)
    images = np.nonzero(co.meta.excluded.to_numpy())[0]
    assert abs(oracle_infiltration(co, images, therapy).mean() / oracle_infiltration(co, images).mean() - 1) < 0.05


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
