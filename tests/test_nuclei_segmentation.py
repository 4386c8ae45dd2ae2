"""Nuclei segmentation study, models side (notebook 05b): models, losses, metrics, study steps and planted-signal training."""
import numpy as np
import pytest
from sklearn import metrics as skm

from imgsci.core import atomic_path, binary_metrics, set_seed
from imgsci.nuclei.data import synthetic_nuclei, synthetic_nuclei_set, make_dataset
from imgsci.nuclei.segmentation import (DICE_LOSS, MODEL_NAMES, bce_dice_loss, build_multiresunet, build_unet,
                                        compile_segmenter, evaluate_probabilities, instance_iou,
                                        instances_from_probability, match_instances, otsu_mask, pixel_metrics,
                                        predict_probability, segmentation_metrics, study_data, train_models,
                                        train_segmenter, train_throughput)


# ---------------------------------------------------------------- models

@pytest.mark.parametrize("variant, params", [("seed", 7_269_294), ("original", 7_262_750)])
def test_multiresunet_parameter_counts(variant, params):
    assert build_multiresunet((256, 256, 3), variant).count_params() == params


def test_variants_differ_where_specified():
    import keras
    seed, orig = build_multiresunet((64, 64, 3), "seed"), build_multiresunet((64, 64, 3), "original")
    bn = lambda m: [l for l in m.layers if isinstance(l, keras.layers.BatchNormalization)]
    # original: every BN that follows a conv has no scale; seed: all BNs scale
    assert all(l.scale for l in bn(seed))
    assert sum(not l.scale for l in bn(orig)) > 0
    assert seed.layers[-1].__class__.__name__ == "Conv2D" and seed.layers[-1].use_bias
    assert orig.layers[-1].__class__.__name__ == "Activation"


def test_unet_parameter_count_from_layer_shapes():
    conv = lambda c, f: 9 * c * f + 4 * f          # 3×3 conv without bias + BN (γ, β, mean, var)
    total, c = 0, 3
    for level in range(5):
        f = 32 * 2 ** level
        total, c = total + conv(c, f) + conv(f, f), f
    for level in reversed(range(4)):
        f = 32 * 2 ** level
        total, c = total + 4 * c * f + f + conv(2 * f, f) + conv(f, f), f
    assert build_unet((256, 256, 3)).count_params() == total + c + 1


@pytest.mark.parametrize("shape", [(250, 256, 3), (256, 8, 3), (256, 256)])
def test_bad_input_shapes_name_the_fix(shape):
    with pytest.raises(ValueError, match="divisible by 16|height, width, channels"):
        build_multiresunet(shape)
    with pytest.raises(ValueError, match="divisible by 16|height, width, channels"):
        build_unet(shape)


# ---------------------------------------------------------------- metrics

def test_keras_metrics_match_scikit_learn():
    rng = np.random.default_rng(3)
    t = (rng.random((3, 20, 20, 1)) > 0.7).astype("float32")
    p = np.clip(0.6 * t + 0.7 * rng.random(t.shape), 0, 1).astype("float32")
    y, s = t.ravel().astype(bool), p.ravel() >= 0.5
    ref = dict(accuracy=skm.accuracy_score(y, s), dice=skm.f1_score(y, s), iou=skm.jaccard_score(y, s),
               precision=skm.precision_score(y, s), recall=skm.recall_score(y, s))
    for m in segmentation_metrics():
        m.update_state(t, p)
        assert float(m.result()) == pytest.approx(ref[m.name], abs=1e-5), m.name


def test_pixel_metrics_are_per_image_means():
    rng = np.random.default_rng(0)
    t = rng.random((4, 16, 16)) > 0.6
    p = rng.random((4, 16, 16))
    per_image = pixel_metrics(t, p)
    for i in range(4):
        assert per_image.jaccard[i] == pytest.approx(skm.jaccard_score(t[i].ravel(), p[i].ravel() >= 0.5))
    assert per_image.f1.mean() == pytest.approx(np.mean([skm.f1_score(a.ravel(), b.ravel() >= 0.5) for a, b in zip(t, p)]))


def test_instance_iou_matches_a_direct_count():
    _, gt = synthetic_nuclei((64, 64), seed=3)
    _, pred = synthetic_nuclei((64, 64), seed=4)
    iou = instance_iou(gt, pred)
    for i in range(1, gt.max() + 1):
        for j in range(1, pred.max() + 1):
            a, b = gt == i, pred == j
            assert iou[i - 1, j - 1] == pytest.approx((a & b).sum() / (a | b).sum())


def test_instance_matching_counts_and_ap():
    _, gt = synthetic_nuclei((128, 128), seed=7, max_overlap=0.0)
    n = gt.max()
    r = match_instances(gt, gt)
    assert (r["tp"], r["fp"], r["fn"], r["ap50"]) == (n, 0, 0, 1.0)
    from scipy import ndimage as ndi
    y, x = np.argwhere(ndi.binary_erosion(gt == 0, iterations=2))[0]
    pred = gt.copy()
    pred[pred == 1] = 0                                   # one nucleus missed
    pred[y - 1:y + 2, x - 1:x + 2] = n + 5                # one spurious detection on background
    r = match_instances(gt, pred)
    assert (r["tp"], r["fp"], r["fn"]) == (n - 1, 1, 1)
    assert r["ap50"] == pytest.approx((n - 1) / (n + 1))


def test_watershed_recovers_touching_nuclei_better_than_components():
    images, labels = synthetic_nuclei_set(3, (128, 128), seed=11, coverage_range=(0.35, 0.4), blur_range=(0.5, 0.5))
    truth = (labels > 0).astype(float)
    ws = evaluate_probabilities(labels, truth, method="watershed")
    cc = evaluate_probabilities(labels, truth, method="components")
    assert ws["jaccard"] == 1.0
    assert ws["inst_tp"] > cc["inst_tp"]


def test_dice_loss_is_keras_dice_per_image():
    rng = np.random.default_rng(5)
    t = (rng.random((3, 16, 16, 1)) > 0.5).astype("float32")
    p = rng.random(t.shape).astype("float32")
    inter, total = (t * p).sum((1, 2, 3)), t.sum((1, 2, 3)) + p.sum((1, 2, 3))
    assert float(DICE_LOSS(t, p)) == pytest.approx(np.mean(1 - 2 * inter / total), abs=1e-6)
    bce = -np.mean(t * np.log(np.clip(p, 1e-7, 1)) + (1 - t) * np.log(np.clip(1 - p, 1e-7, 1)))
    assert float(bce_dice_loss(t, p)) == pytest.approx(bce + np.mean(1 - 2 * inter / total), abs=1e-4)


def test_instances_drop_specks_below_min_size():
    prob = np.zeros((20, 20))
    prob[2:5, 2:5] = 1                     # 9 px: kept at min_size 9, dropped at 10
    prob[10:18, 10:18] = 1
    assert instances_from_probability(prob, method="components", min_size=9).max() == 2
    labels = instances_from_probability(prob, method="components", min_size=10)
    assert labels.max() == 1 and labels[12, 12] == 1 and labels[3, 3] == 0


@pytest.mark.slow
def test_study_steps_train_each_named_model(tmp_path):
    data = study_data(n_train=4, n_val=2, image_size=32, batch_size=2, seed=1)
    names = (MODEL_NAMES[0], MODEL_NAMES[2])
    trained = train_models(names, data.train_ds, data.val_ds, 2, 1, tmp_path, seed=0, batch_size=2,
                           jit_compile=False, base_filters=4)
    assert list(trained) == list(names)
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("*.keras")) == ["multiresunet_seed.keras", "unet.keras"]
    for t in trained.values():
        assert len(t.log) == 2 and t.train_rate > 0 and t.seconds > 0
        assert predict_probability(t.model, data.val_images).shape == data.val_images.shape


# ---------------------------------------------------------------- training (planted signal)

def _tiny_training(tmp_path, images, labels, name):
    set_seed(0)
    # a narrow model and a larger step than the paper's 1e-4, so that 150 steps suffice on a CPU
    model = compile_segmenter(build_multiresunet((None, None, 3), "seed", base_filters=8, bn_momentum=0.8),
                              learning_rate=3e-3, jit_compile=False)
    train = make_dataset(images[:48], labels[:48], 8, training=True, seed=0)
    val = make_dataset(images[48:56], labels[48:56], 8)
    log = train_segmenter(model, train, val, epochs=6, steps_per_epoch=25, out_dir=tmp_path, name=name)
    return model, log


def _auc(labels, probs):
    return skm.roc_auc_score((labels > 0).ravel(), probs.ravel())


@pytest.fixture(scope="module")
def small_nuclei():
    return synthetic_nuclei_set(72, (32, 32), seed=21, radius_range=(3.0, 6.0), zoom_range=(0.8, 1.2))


@pytest.mark.slow
def test_model_learns_planted_nuclei(tmp_path, small_nuclei):
    images, labels = small_nuclei
    model, log = _tiny_training(tmp_path, images, labels, "signal")
    assert (tmp_path / "checkpoints" / "signal.keras").exists()
    assert {"loss", "val_loss", "dice", "val_iou", "train_seconds"} <= set(log.columns)
    assert train_throughput(log, 25, 8) > 0
    probs = predict_probability(model, images[56:])
    otsu = np.mean([binary_metrics(l > 0, otsu_mask(i))["jaccard"] for i, l in zip(images[56:], labels[56:])])
    assert _auc(labels[56:], probs) > 0.9
    assert pixel_metrics(labels[56:], probs).jaccard.mean() > otsu      # learned more than a global threshold


@pytest.mark.slow
def test_model_fails_on_noise_labels(tmp_path, small_nuclei):
    images, labels = small_nuclei
    noise = np.roll(labels, 1, axis=0)          # image i gets the masks of image i-1: real-looking, independent
    model, _ = _tiny_training(tmp_path, images, noise, "noise")
    probs = predict_probability(model, images[56:])
    assert abs(_auc(noise[56:], probs) - 0.5) < 0.1        # chance on held-out noise labels
    assert pixel_metrics(noise[56:], probs).jaccard.mean() < 0.1


def test_saved_model_round_trips(tmp_path):
    import keras
    model = compile_segmenter(build_unet((None, None, 3), base_filters=4), loss="bce_dice", jit_compile=False)
    x = np.random.default_rng(0).integers(0, 255, (2, 32, 32), dtype=np.uint8)
    with atomic_path(tmp_path / "m.keras") as tmp:
        model.save(tmp)
    again = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(predict_probability(again, x), predict_probability(model, x), atol=1e-6)
