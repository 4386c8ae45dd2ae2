"""Tumour counterfactual study, data side (imgsci.tme.imc): inputs fail with clear messages, the split is patient-level
and stratified, and the refactored building blocks (tiling, dilation disk, early stopping on validation MCC) behave
exactly like the code they replaced."""
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from skimage.morphology import disk

from imgsci.core import smooth_field
from imgsci.tme.imc import (Cohort, SimConfig, build_cnn, build_mlp, marker_thresholds, patch_tiles, patient_split,
                            shuffled_batches, tcell_patches, tile_sums, train_classifier)


def test_bad_inputs_fail_with_clear_messages():
    meta = pd.DataFrame(dict(image_id=["a"], patient=["p"]))
    with pytest.raises(ValueError, match="NaN or infinite"):
        Cohort([np.full((50, 50, 2), np.nan)], ("CD3", "CD8"), meta)
    with pytest.raises(ValueError, match="3 planes but 2 channel names"):
        Cohort([np.zeros((50, 50, 3))], ("CD3", "CD8"), meta)
    co = Cohort([np.zeros((50, 50, 2))], ("CD3", "CXCL9"), meta)
    with pytest.raises(ValueError, match="'CD8' is missing; available channels: CD3, CXCL9"):
        marker_thresholds(co, ("CD3", "CD8"))
    with pytest.raises(ValueError, match="unknown chemokine 'CXCL99'"):
        SimConfig(planted="CXCL99+")
    with pytest.raises(ValueError, match="smaller than the kernel"):
        build_cnn((7, 7, 3))


def test_split_is_patient_level_and_stratified():
    rng = np.random.default_rng(1)
    patients = np.repeat(np.arange(40), rng.integers(5, 30, 40))
    labels = rng.uniform(size=len(patients)) < np.repeat(rng.uniform(0.05, 0.6, 40), np.bincount(patients))
    s = patient_split(patients, labels, seed=0)
    groups = [set(patients[s[k]]) for k in ("train", "val", "test")]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    sizes = np.array([len(s[k]) for k in ("train", "val", "test")]) / len(patients)
    np.testing.assert_allclose(sizes, [0.65, 0.15, 0.2], atol=0.04)
    for k in s:
        assert abs(labels[s[k]].mean() - labels.mean()) < 0.03


def test_tiles_match_the_reshape_they_replaced():
    "`patch_tiles` (skimage `view_as_blocks` after cropping) gives the tiles of the old hand-written reshape."
    a = np.random.default_rng(0).normal(size=(130, 95, 3))
    p = 40
    h, w = a.shape[0] // p, a.shape[1] // p
    old = a[:h * p, :w * p].reshape(h, p, w, p, 3).swapaxes(1, 2)
    np.testing.assert_array_equal(patch_tiles(a, p), old)
    m = np.random.default_rng(1).uniform(size=(130, 95)) < 0.01
    np.testing.assert_array_equal(tile_sums(m.astype(np.int32), p), m[:h * p, :w * p].reshape(h, p, w, p).sum((1, 3)))
    np.testing.assert_array_equal(tcell_patches(m, p, 12), m[:h * p, :w * p].reshape(h, p, w, p).sum((1, 3)) >= 12)


def test_dilation_disk_and_smooth_field_match_the_old_hand_written_ones():
    for r in range(0, 9):
        yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
        np.testing.assert_array_equal(disk(r).astype(bool), yy ** 2 + xx ** 2 <= r * r)
    for seed in range(3):  # the simulator's old private field: same random stream, same numbers
        f = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal((50, 50)), 7.5, mode="wrap")
        np.testing.assert_allclose(smooth_field(np.random.default_rng(seed), (50, 50), 7.5),
                                   (f - f.mean()) / (f.std() + 1e-12), rtol=0, atol=1e-12)


def _old_best_mcc_training(model, x_train, y_train, x_val, y_val, epochs, patience):
    "The hand-written callback that `EarlyStopping(monitor='val_mcc')` replaced: best weights kept, stop after `patience`."
    import keras
    from sklearn.metrics import matthews_corrcoef
    state = dict(best=-np.inf, epoch=-1, wait=0, weights=None)

    class Old(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            mcc = float(matthews_corrcoef(y_val, np.asarray(self.model(x_val, training=False))[:, 1] >= 0.5))
            if mcc > state["best"]:
                state.update(best=mcc, epoch=epoch, wait=0, weights=self.model.get_weights())
            else:
                state["wait"] += 1
                if state["wait"] >= patience:
                    self.model.stop_training = True

        def on_train_end(self, logs=None):
            self.model.set_weights(state["weights"])
    model.compile(optimizer=keras.optimizers.SGD(1e-3, momentum=0.9, nesterov=True), loss="sparse_categorical_crossentropy")
    # the same batches as `train_classifier` (seed 0): this compares stopping and weight keeping, not data pipelines
    data, steps = shuffled_batches(x_train, y_train, 16, seed=0)
    model.fit(data, epochs=epochs, steps_per_epoch=steps, verbose=0, shuffle=False, callbacks=[Old()])
    return state


@pytest.mark.parametrize("epochs,patience", [(25, 3), (12, 50)])   # stops early / runs out of epochs
def test_early_stopping_on_validation_mcc_keeps_the_old_best_epoch_and_weights(epochs, patience):
    from imgsci.core import set_seed
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 5)).astype(np.float32)
    y = (x[:, 0] + 0.8 * rng.standard_normal(300)) > 0.5
    set_seed(1); old_model = build_mlp(5)
    old = _old_best_mcc_training(old_model, x[:200], y[:200], x[200:], y[200:].astype(int), epochs, patience)
    set_seed(1); new_model = build_mlp(5)
    hist = train_classifier(new_model, x[:200], y[:200], x[200:], y[200:], epochs=epochs, batch_size=16, patience=patience)
    assert (hist.best_epoch, hist.best_val_mcc) == (old["epoch"], old["best"])
    for a, b in zip(new_model.get_weights(), old_model.get_weights()):
        np.testing.assert_array_equal(a, b)
