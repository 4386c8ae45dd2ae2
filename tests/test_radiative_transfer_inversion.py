"""Tests of imgsci.radiative_transfer.inversion: the V-Net, scaling, splits and scores, gradient inversion through the
solver, M1 baselines."""
import numpy as np
import pytest
import tensorflow as tf
from sklearn.metrics import r2_score

from imgsci.core import set_seed
from imgsci.radiative_transfer.data import simulate_samples
from imgsci.radiative_transfer.inversion import (InputScaler, M1_SEGMENTS, M1ClassificationScores, build_m1_cnn,
                                                 build_vnet, crenel_density, density_to_target, imprint_fraction,
                                                 invert_by_gradient, linear_interpolation_matrix, keras_r2_per_sample,
                                                 float32_ulps, common_to_sample_ratio, M1_BACKGROUND, InputJacobian,
                                                 linear_mmse, randomized_svd,
                                                 m1_classification_scores, m1_dataset, m1_inputs, m1_regression_scores,
                                                 r2_by_family, r2_per_sample, segments_in_front, simulate_input_tf,
                                                 stratified_split, target_to_density, train_model)


def test_vnet_original_variant_has_the_original_size():
    model = build_vnet(variant="original")
    assert model.count_params() == 2_272_721            # the original's "24 channels, D = 10, 2.27 M params"
    names = [l.__class__.__name__ for l in model.layers]
    # one BatchNorm per level (5 encoder + 4 decoder), 4 skip adds + 9 within-level residual adds
    assert names.count("BatchNormalization") == 9 and names.count("Add") == 13
    assert model.input_shape == (None, 64, 64, 24) and model.output_shape == (None, 64, 64, 1)
    with pytest.raises(ValueError, match="unknown V-Net variant"):
        build_vnet(variant="vnet2")


def test_vnet_ours_has_batchnorm_after_every_convolution():
    model = build_vnet()
    assert model.count_params() == 2_274_561            # + 460 BatchNorm channels × 4 = 1,840 more than the original
    assert model.input_shape == (None, 64, 64, 24) and model.output_shape == (None, 64, 64, 1)
    names = [l.__class__.__name__ for l in model.layers]
    assert names.count("Add") == 4 and names.count("Conv2DTranspose") == 4 and names.count("BatchNormalization") == 18
    assert model.layers[-1].activation.__name__ == "sigmoid"
    with pytest.raises(ValueError, match="divisible"):
        build_vnet((40, 40, 24))
    with pytest.raises(ValueError, match="positive integers"):
        build_vnet(depth=0)


@pytest.mark.slow
def test_vnet_learns_a_planted_signal_and_not_noise():
    set_seed(1)
    rng = np.random.default_rng(1)
    rho = 1 + 4 * (rng.random((96, 16, 16)) > 0.7) * rng.random((96, 1, 1))
    X = (rho[..., None] * rng.normal(size=(1, 1, 1, 6)) + 0.1 * rng.normal(size=(96, 16, 16, 6))).astype(np.float32)
    y = density_to_target(rho)
    r2 = {}
    for name, inputs in (("signal", X), ("noise", rng.normal(size=X.shape).astype(np.float32))):
        m = build_vnet((16, 16, 6), levels=2, depth=4, kernel_size=3, bn_momentum=0.8)
        train_model(m, inputs[:64], y[:64], inputs[64:80], y[64:80], epochs=40, batch_size=16, learning_rate=3e-3)
        r2[name] = r2_score(rho[80:].ravel(), target_to_density(m.predict(inputs[80:], verbose=0)).ravel())
    assert r2["signal"] > 0.5 and r2["noise"] < 0.1, r2


def test_scores_and_splits():
    rng = np.random.default_rng(0)
    a, b = rng.random((6, 5, 5)), rng.random((6, 5, 5))
    pooled = lambda t, p: 1 - ((t - p) ** 2).sum() / ((t - t.mean()) ** 2).sum()   # R² over all pixels together
    fam = np.array(["x", "y"] * 3)
    tab = r2_by_family(a, b, fam)
    assert list(tab.family) == ["x", "y", "all"]
    assert np.isclose(tab.r2.iloc[0], pooled(a[::2], b[::2])) and np.isclose(tab.r2.iloc[-1], pooled(a, b))
    assert not np.isclose(tab.r2.iloc[-1], r2_score(a.reshape(6, -1), b.reshape(6, -1)))   # not a mean per pixel
    np.testing.assert_allclose(r2_per_sample(a, b), [pooled(x, y) for x, y in zip(a, b)])
    fams = np.repeat(["a", "b", "c"], [40, 20, 10])
    tr, va, te = stratified_split(fams, seed=3)
    assert len(set(tr) | set(va) | set(te)) == 70 and not (set(tr) & set(te))
    for f in "abc":
        assert (fams[te] == f).any() and (fams[va] == f).any()
    with pytest.raises(ValueError, match="sum"):
        stratified_split(fams, (0.5, 0.2, 0.2))
    np.testing.assert_allclose(target_to_density(density_to_target(np.array([1.0, 2.5, 5.0]))), [1.0, 2.5, 5.0])


def test_input_scaling_modes():
    rng = np.random.default_rng(2)
    X = 8.5 + 3 * np.sin(np.arange(64))[None, :, None, None] + 1e-3 * rng.normal(size=(50, 64, 4, 48))
    for mode in ("per_feature", "per_quantity", "global_max"):
        sc = InputScaler(mode).fit(X[:40])
        Z = sc.transform(X[40:])
        assert Z.dtype == np.float32 and np.isfinite(Z).all()
    Zf = InputScaler("per_feature").fit(X).transform(X)
    np.testing.assert_allclose(Zf.std(axis=0), 1.0, atol=1e-3)        # the 1e-3 sample-to-sample part, unit scale
    Zq = InputScaler("per_quantity").fit(X).transform(X)
    assert Zq.std(axis=0).mean() < 1e-2                                 # drowned by the common swing
    np.testing.assert_allclose(imprint_fraction(X), 1e-3 / X[..., 0::3].std(), rtol=0.05)
    with pytest.raises(RuntimeError, match="before fit"):
        InputScaler().transform(X)
    with pytest.raises(ValueError, match="unknown scaling mode"):
        InputScaler("robust")


@pytest.mark.slow
def test_differentiable_input_equals_the_numpy_builder():
    rho = 1 + 2 * np.random.default_rng(4).random((12, 12))
    tf_ = 80 * 0.5 / 12 / 299
    x_tf = simulate_input_tf(tf.constant(rho), 48, 64, t_final=tf_).numpy()
    x_np = simulate_samples(rho, t_final=tf_)[0]
    np.testing.assert_allclose(x_tf, x_np, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_gradient_inversion_recovers_a_planted_block():
    N = 16
    truth = np.ones((N, N))
    truth[3:8, 9:14] = 3.5
    tf_ = 60 * 0.5 / N / 299
    x = simulate_input_tf(tf.constant(truth), 24, 16, t_final=tf_).numpy()
    inv = invert_by_gradient(x, InputScaler("per_quantity").fit(x[None]), n_iter=8, coarse=8, smooth=1e-3, rho_init=1.3, t_final=tf_)
    assert inv.misfit[-1] < 0.2 * inv.misfit[0]
    est = inv.rho
    assert est[3:8, 9:14].mean() > est[10:, :6].mean() + 0.3
    assert inv.evaluations <= 16 and inv.seconds > 0
    np.testing.assert_allclose(linear_interpolation_matrix(3, 6).sum(axis=1), 1.0)
    with pytest.raises(ValueError, match="rho_init"):
        invert_by_gradient(x, InputScaler("per_quantity").fit(x[None]), rho_init=6.0)


def test_m1_geometry_labels_and_inputs():
    c = crenel_density(0.5 + 0.5 / 32, 0.5 - 0.5 / 32, 8.0)
    r, col = np.unravel_index(c.argmax(), c.shape)
    assert (r, col) == (16, 16) and np.isclose(c.min(), 1.0)
    bits = segments_in_front(np.array([lo + 0.01 for lo, _ in M1_SEGMENTS]))
    assert bits.sum(axis=1).tolist() == [1, 2, 2, 2]                   # near a boundary the disc overlaps two bands
    rho, par, bits = m1_dataset(3, seed=1)
    assert rho.shape == (3, 32, 32) and par.shape == (3, 3) and bits.shape == (3, 4)
    X = m1_inputs(rho[:2])
    assert X.shape == (2, 32, 32, 48) and np.isfinite(X).all()
    # the four segment sources light the left edge in different places: their left-edge E signals differ
    assert np.abs(X[0, :, :, 6] - X[0, :, :, 12 + 6]).max() > 1.0
    assert build_m1_cnn((32, 32, 48), 4, "sigmoid").output_shape == (None, 4)


def test_m1_scores():
    true = np.array([[0.5, 0.5, 3.0], [0.2, 0.3, 5.0], [0.7, 0.6, 9.0]])
    pred = true + np.array([[0.05, 0.0, 0.5], [0.0, 0.2, 0.0], [0.0, 0.0, -1.5]])
    s = m1_regression_scores(true, pred)
    assert np.isclose(s.custom_score, 1 / 3)
    assert np.isclose(s.r2, np.mean([s.r2_x, s.r2_y, s.r2_h]))
    assert np.isclose(s.r2_h, 1 - (0.25 + 2.25) / ((true[:, 2] - true[:, 2].mean()) ** 2).sum())
    c = m1_classification_scores([[1, 0, 0, 0], [0, 1, 1, 0]], [[0.9, 0.1, 0.2, 0.1], [0.1, 0.7, 0.3, 0.2]])
    assert c == M1ClassificationScores(binary_accuracy=7 / 8, strict_score=0.5)


def test_keras_r2_is_per_sample_and_reads_higher_than_sklearn():
    rng = np.random.default_rng(5)
    true = np.column_stack([rng.uniform(0.2, 0.8, 200), rng.uniform(0.2, 0.8, 200), rng.uniform(2, 10, 200)])
    pred = true + rng.normal(size=true.shape) * [0.05, 0.05, 0.6]
    by_hand = np.mean([1 - ((t - p) ** 2).sum() / (((t - t.mean()) ** 2).sum() + 1e-7) for t, p in zip(true, pred)])
    assert np.isclose(keras_r2_per_sample(true, pred), by_hand)
    s = m1_regression_scores(true, pred)
    assert s.r2_keras == keras_r2_per_sample(true, pred) and s.r2_keras > s.r2 + 0.02     # same errors, higher number
    assert M1_BACKGROUND == 0.1 and np.isclose(m1_dataset(2, seed=0)[0].min(), 0.1)


def test_imprint_measures():
    assert float32_ulps(np.spacing(np.float32(8.5)) * 4, 8.5) == 4.0
    rng = np.random.default_rng(3)
    common = 10 * np.sin(np.arange(32))[None, :, None, None] * np.ones((1, 1, 8, 3))
    X = common + rng.normal(size=(400, 32, 8, 3))
    assert np.isclose(common_to_sample_ratio(X)[0], common.var(), rtol=0.1)


@pytest.mark.slow
def test_jacobian_products_are_adjoint_and_the_svd_finds_the_leading_direction():
    N, tf_ = 8, 24 * 0.5 / 8 / 299
    jac = InputJacobian(1 + np.outer(np.hanning(N), np.hanning(N)), np.ones(48), t_final=tf_, n_rows=16)
    v = np.random.default_rng(0).normal(size=(2, N, N))
    u = np.random.default_rng(1).normal(size=(2,) + jac.x0.shape)
    lhs, rhs = (u * jac.jvp(v)).sum(axis=(1, 2, 3)), (jac.vjp(u) * v).sum(axis=(1, 2))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-6)                  # forward (differences) and reverse mode agree
    U, s, Vt, _ = randomized_svd(jac, 3)
    assert (np.diff(s) <= 0).all()
    gain = np.linalg.norm(jac.jvp(Vt[:1].reshape(1, N, N)))
    # s are singular values of QᵀJ, lower bounds of J's; the leading right vector is amplified at least by s₁
    assert s[0] * (1 - 1e-6) <= gain < 2 * s[0]
    A, L = np.random.default_rng(2).normal(size=(3, 5)), np.random.default_rng(3).normal(size=(3, 7))
    c = np.random.default_rng(4).normal(size=(2, 3))
    np.testing.assert_allclose(linear_mmse(A, L, c @ A, 1e-12), c @ L, atol=1e-6)


def test_symmetric_scaler_commutes_with_the_augmentation_and_batches_move_targets():
    from imgsci.radiative_transfer.data import DIHEDRAL, dihedral_density, dihedral_input
    from imgsci.radiative_transfer.inversion import DihedralBatches
    X = np.random.default_rng(2).random((5, 6, 8, 24)) * np.arange(1, 25)
    sym, plain = InputScaler().fit(X, symmetric=True), InputScaler().fit(X)
    for g in DIHEDRAL:
        np.testing.assert_allclose(sym.transform(dihedral_input(X, g)), dihedral_input(sym.transform(X), g), atol=1e-4)
    g = (1, True)
    assert np.abs(plain.transform(dihedral_input(X, g)) - dihedral_input(plain.transform(X), g)).max() > 0.1
    y = np.random.default_rng(3).random((5, 8, 8, 1))
    b = DihedralBatches(X.astype(np.float32), y, batch_size=4, seed=1)
    xb, yb = b[0]
    for k, j in enumerate(b.order[:4]):     # input and target moved by the same symmetry
        hits = [g for g in DIHEDRAL if np.array_equal(yb[k, ..., 0], dihedral_density(y[j, ..., 0], g))]
        assert any(np.array_equal(xb[k], dihedral_input(X[j].astype(np.float32), g)) for g in hits)
