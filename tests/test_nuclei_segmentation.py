"""Nuclei segmentation study, models side (notebook 05b): models, losses, metrics, study steps and planted-signal training."""
import numpy as np
import pytest
from sklearn import metrics as skm

from imgsci.core import atomic_path, binary_metrics, set_seed
from imgsci.nuclei.data import synthetic_nuclei, synthetic_nuclei_set, make_dataset
from imgsci.nuclei.segmentation import (DICE_LOSS, MODEL_NAMES, RECIPES, bce_dice_loss, bootstrap_ci, build_multiresunet,
                                        build_unet, compile_segmenter, dsb_scores, evaluate_probabilities, instance_iou,
                                        recipe_callbacks, tile_scores,
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
    trained = train_models(names, data.new_train_ds, data.val_ds, 2, 1, tmp_path, seed=0, batch_size=2,
                           jit_compile=False, base_filters=4, recipe="report")
    assert list(trained) == list(names)
    for t in trained.values():                         # the report's step and loss reached the compiled models
        assert float(t.model.optimizer.learning_rate) == pytest.approx(1e-4)
        assert t.model.loss == "binary_crossentropy"
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("*.keras")) == ["multiresunet_seed.keras", "unet.keras"]
    for t in trained.values():
        assert len(t.log) == 2 and t.train_rate > 0 and t.seconds > 0
        assert predict_probability(t.model, data.val_images).shape == data.val_images.shape


# ---------------------------------------------------------------- training (planted signal)

def _tiny_training(tmp_path, images, labels, name):
    set_seed(0)
    # a narrow model and a larger step than the paper's 1e-4, so that 80 steps suffice on a CPU
    model = compile_segmenter(build_multiresunet((None, None, 3), "seed", base_filters=8, bn_momentum=0.8),
                              learning_rate=3e-3, jit_compile=False)
    train = make_dataset(images[:48], labels[:48], 8, training=True, seed=0)
    val = make_dataset(images[48:56], labels[48:56], 8)
    log = train_segmenter(model, train, val, epochs=4, steps_per_epoch=20, out_dir=tmp_path, name=name)
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
    assert train_throughput(log, 20, 8) > 0
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


# ---------------------------------------------------------------- recipes, DSB metric, bootstrap, data_dir end to end

def test_report_recipe_is_the_reports():
    import keras
    r = RECIPES["report"]
    assert (r.augment, r.normalize, r.loss, r.learning_rate, r.batch_size, r.epochs) == (False, "scale255", "bce", 1e-4, 8, 10)
    cbs = recipe_callbacks("report", "m.keras", "m.csv")
    kinds = {type(c).__name__ for c in cbs}
    assert {"ModelCheckpoint", "ReduceLROnPlateau", "EarlyStopping", "CSVLogger"} <= kinds
    lr = next(c for c in cbs if isinstance(c, keras.callbacks.ReduceLROnPlateau))
    stop = next(c for c in cbs if isinstance(c, keras.callbacks.EarlyStopping))
    assert (lr.factor, lr.patience, lr.min_lr) == (0.1, 5, 1e-7)
    assert (stop.patience, stop.restore_best_weights) == (20, False)
    ours = next(c for c in recipe_callbacks("ours", "m.keras", "m.csv") if isinstance(c, keras.callbacks.EarlyStopping))
    assert ours.restore_best_weights and RECIPES["ours"].augment
    with pytest.raises(ValueError, match="unknown recipe"):
        recipe_callbacks("paper", "m.keras", "m.csv")


def test_dsb_mean_ap_over_iou_thresholds():
    yy, xx = np.mgrid[:96, :96]
    gt = np.zeros((96, 96), np.int32)
    for k, (cy, cx) in enumerate([(16, 16), (16, 50), (16, 80), (50, 20), (52, 55), (80, 30), (78, 78)], start=1):
        gt[(yy - cy) ** 2 + (xx - cx) ** 2 <= (6 + k) ** 2 / 4 + 30] = k      # separate discs of different sizes
    perfect = dsb_scores(gt[None], (gt[None] > 0).astype(float), method="components").iloc[0]
    assert perfect.dsb_map == pytest.approx(1.0) and perfect.ap50 == pytest.approx(1.0)
    from scipy import ndimage as ndi
    eroded = np.zeros(gt.shape)
    for k in range(1, gt.max() + 1):                  # every nucleus shrunk: IoU drops, the high thresholds miss
        eroded[ndi.binary_erosion(gt == k, iterations=2)] = 1
    worse = dsb_scores(gt[None], eroded[None], method="components").iloc[0]
    assert worse.dsb_map < worse.ap50 <= 1.0 and worse.dsb_map < 0.9


def test_bootstrap_interval_covers_the_mean_and_narrows_with_more_units():
    rng = np.random.default_rng(0)
    few, many = rng.normal(0.7, 0.1, 8), rng.normal(0.7, 0.1, 200)
    m, lo, hi = bootstrap_ci(few)
    assert lo < m < hi and m == pytest.approx(few.mean())
    _, lo2, hi2 = bootstrap_ci(many)
    assert hi2 - lo2 < hi - lo
    t = np.zeros((256, 256), int); t[:128] = 1
    assert list(tile_scores(t, (t > 0).astype(float), tile=128)) == [1.0, 1.0, 0.0, 0.0]   # empty tiles score 0 (sklearn)


@pytest.mark.slow
def test_notebook_data_dir_branch_excludes_the_evaluation_image(tmp_path):
    """The notebook's data_dir branch end to end (smoke profile, 64² images) on an official-layout folder holding a copy."""
    import pandas as pd
    from PIL import Image
    from imgsci.nuclei.data import list_dsb, load_real_dsb_image, report_split, write_fabricated_dsb
    from imgsci.reproduce import run_study
    from imgsci.core import PROJECT_ROOT
    root = write_fabricated_dsb(tmp_path / "stage1_train", "official", n=9, shape=(64, 64), seed=2)
    ref, ref_labels = load_real_dsb_image()
    ids = list(list_dsb(root).id)                           # the copy's name: the first that the split trains on
    sid = next(c for c in (f"{k:02d}copy" for k in range(100)) if c in report_split(ids + [c])[0])
    (root / sid / "images").mkdir(parents=True)
    (root / sid / "masks").mkdir()
    Image.fromarray(np.dstack([ref] * 3 + [np.full_like(ref, 255)]), "RGBA").save(root / sid / "images" / f"{sid}.png")
    for k in range(1, ref_labels.max() + 1):
        Image.fromarray(((ref_labels == k) * 255).astype(np.uint8)).save(root / sid / "masks" / f"m{k:03d}.png")
    train, val, test = report_split(list_dsb(root).id)
    assert sid in train and len(list_dsb(root)) == 10
    record = run_study("nuclei_segmentation", PROJECT_ROOT / "nbs" / "05b_nuclei_segmentation.ipynb", "smoke", 0,
                       tmp_path / "runs", overrides=dict(data_dir=str(tmp_path), image_size=64, compare_models=False),
                       progress=False)
    assert record["status"] == "ok", record["error"]
    out = tmp_path / "runs" / "smoke" / "nuclei_segmentation" / "tables"
    claims = pd.read_csv(out / "claims.csv")
    excl = claims[claims.claim.str.startswith("The shipped evaluation image")].iloc[0]
    assert excl.our_value == 0 and excl.verdict == "reproduced" and sid in excl.note
    split = claims[claims.claim.str.startswith("Report's split")].iloc[0]
    assert split.our_value == 0
    inst = pd.read_csv(out / "dsb_test_instances.csv")
    assert list(inst.id) == test and inst.dsb_map.between(0, 1).all() and (inst.n_true > 0).all()
    assert "ours_DSB2018_test" in pd.read_csv(out / "metrics_vs_report.csv").columns
