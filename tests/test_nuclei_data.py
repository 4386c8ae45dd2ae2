"""Nuclei segmentation study, data side (notebook 05a): generator, real image, loaders, split and pipelines."""
import numpy as np
import pytest

from imgsci.core import binary_metrics
from imgsci.nuclei.data import (list_dsb, load_real_dsb_image, make_dataset, normalize_image, numpy_function_dataset,
                                report_split, split_tiles, synthetic_nuclei, synthetic_nuclei_set, write_fabricated_dsb)
from imgsci.nuclei.segmentation import otsu_mask


# ---------------------------------------------------------------- data

def test_synthetic_generator_plants_what_it_labels():
    images, labels = synthetic_nuclei_set(6, (96, 96), seed=4)
    for img, lab in zip(images, labels):
        assert lab.max() >= 1 and set(np.unique(lab)) == set(range(lab.max() + 1))
        assert img[lab > 0].mean() > img[lab == 0].mean()
    # overlaps: with max_overlap=0 no nucleus hides part of another, so every id is one blob of its full size
    img, lab = synthetic_nuclei((128, 128), seed=2, max_overlap=0.0, coverage_range=(0.3, 0.3))
    assert lab.max() > 5
    np.testing.assert_array_equal(synthetic_nuclei((64, 64), seed=9)[1], synthetic_nuclei((64, 64), seed=9)[1])


def test_real_image_and_otsu_floor():
    image, labels = load_real_dsb_image()
    assert image.shape == labels.shape == (512, 512) and labels.max() == 125
    jac = binary_metrics(labels > 0, otsu_mask(image))["jaccard"]
    assert abs(jac - 0.70) < 0.03, jac                 # the study's classical floor: Otsu pixel Jaccard ≈ 0.70
    np.testing.assert_array_equal(split_tiles(labels)[1], labels[:256, 256:])


@pytest.mark.parametrize("layout", ["official", "processed"])
def test_loaders_and_pipeline_read_back_the_planted_masks(tmp_path, layout):
    root = write_fabricated_dsb(tmp_path / layout, layout, n=4, shape=(64, 64), seed=1)
    listing = list_dsb(root)
    assert len(listing) == 4 and (listing.height == 64).all()
    _, labels = synthetic_nuclei_set(4, (64, 64), seed=1)
    _, y = next(iter(make_dataset(list(listing.image), list(listing["mask"]), batch_size=4)))
    agree = (y.numpy()[..., 0] > 0) == (labels > 0)
    assert agree.mean() > (0.999 if layout == "official" else 0.98)   # JPEG edges may flip a few pixels
    if layout == "official":
        assert sum(len(f) for f in listing.mask_files) == sum(l.max() for l in labels)


def test_bad_folders_fail_naming_the_file(tmp_path):
    root = write_fabricated_dsb(tmp_path / "p", "processed", n=3)
    (root / "masks" / next((root / "masks").iterdir()).name).rename(root / "masks" / "zzz.jpg")
    with pytest.raises(ValueError, match="images without a mask of the same name"):
        list_dsb(root)
    root = write_fabricated_dsb(tmp_path / "o", "official", n=2)
    (next(root.iterdir()) / "masks" / "readme.txt").write_text("?")
    with pytest.raises(ValueError, match="readme.txt is not an image file"):
        list_dsb(root)
    (tmp_path / "e" / "images").mkdir(parents=True)
    (tmp_path / "e" / "masks").mkdir()
    with pytest.raises(ValueError, match="is empty"):
        list_dsb(tmp_path / "e")
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        list_dsb(tmp_path / "missing")


def test_report_split_is_the_reports_membership():
    """The report's four calls on sorted file lists: images and masks split alike, validation held out first."""
    from sklearn.model_selection import train_test_split
    ids = [f"{i:04x}" for i in range(670)]
    images, masks = [f"{i}/images/{i}.png" for i in ids], [f"{i}/masks.png" for i in ids]
    x_rest, x_val = train_test_split(images, test_size=134, random_state=42)
    y_rest, y_val = train_test_split(masks, test_size=134, random_state=42)
    x_train, x_test = train_test_split(x_rest, test_size=134, random_state=42)
    y_train, y_test = train_test_split(y_rest, test_size=134, random_state=42)
    sid = lambda files: [f.split("/")[0] for f in files]
    assert [sid(x) for x in (y_train, y_val, y_test)] == [sid(x) for x in (x_train, x_val, x_test)]
    rng = np.random.default_rng(0)
    train, val, test = report_split(list(rng.permutation(ids)))        # any input order: sorted inside
    assert (train, val, test) == (sid(x_train), sid(x_val), sid(x_test))
    assert [len(s) for s in (train, val, test)] == [402, 134, 134]


def test_instance_labels_from_official_masks(tmp_path):
    from imgsci.nuclei.data import instance_labels
    listing = list_dsb(write_fabricated_dsb(tmp_path / "o", "official", n=2, shape=(64, 48), seed=6))
    _, truth = synthetic_nuclei_set(2, (64, 48), seed=6)
    for files, lab in zip(listing.mask_files, truth):
        np.testing.assert_array_equal(instance_labels(files), lab)
        small = instance_labels(files, size=32)
        assert small.shape == (32, 32) and set(np.unique(small)) <= set(np.unique(lab))


def test_evaluation_image_copies_are_found_by_content(tmp_path):
    from PIL import Image
    from imgsci.nuclei.data import content_match, find_duplicates
    ref, _ = load_real_dsb_image()
    root = write_fabricated_dsb(tmp_path / "o", "official", n=2, seed=3)
    for sid, img in (("renamed_copy", ref), ("cropped", ref[40:400, 100:500]), ("brighter", np.clip(ref * 1.3, 0, 255).astype(np.uint8))):
        (root / sid / "images").mkdir(parents=True)
        (root / sid / "masks").mkdir()
        Image.fromarray(img).save(root / sid / "images" / f"{sid}.png")
        Image.fromarray(np.full(img.shape, 255, np.uint8)).save(root / sid / "masks" / "m.png")
    found = find_duplicates(list_dsb(root), ref)
    assert sorted(found.id) == ["brighter", "cropped", "renamed_copy"]
    assert content_match(ref[::-1], ref) < 0.5                          # a different image of the same field is no copy


def test_fresh_pipelines_give_identical_batches_and_one_object_reshuffles():
    images, labels = synthetic_nuclei_set(6, (32, 32), seed=0)
    batches = lambda ds: [x.numpy() for x, _ in ds.take(3)]
    new = lambda: make_dataset(images, labels, 2, training=True, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(batches(new()), batches(new())))
    shared = new()
    assert not all(np.array_equal(a, b) for a, b in zip(batches(shared), batches(shared)))
    x, y = next(iter(make_dataset(images, labels, 6, training=True, seed=4, augment=False)))
    planted = {(l > 0).astype(np.float32).tobytes() for l in labels}
    assert {m.tobytes() for m in y.numpy()[..., 0]} == planted         # no augmentation: the stored masks, unflipped


def test_cv2_reader_as_the_report_wrote_it(tmp_path):
    pytest.importorskip("cv2")
    root = write_fabricated_dsb(tmp_path / "p", "processed", n=2, shape=(96, 64))
    listing = list_dsb(root)
    files = list(listing.image), list(listing["mask"])
    x1, y1 = next(iter(numpy_function_dataset(*files, size=64, batch_size=2, shuffle=False, reader="cv2")))
    x2, y2 = next(iter(numpy_function_dataset(*files, size=64, batch_size=2, shuffle=False, reader="skimage")))
    assert x1.shape == x2.shape == (2, 64, 64, 3) and float(x1.numpy().max()) <= 1.0
    assert np.abs(x1.numpy() - x2.numpy()).mean() < 0.03 and (y1.numpy() == y2.numpy()).mean() > 0.95


def test_tfdata_and_numpy_function_pipelines_agree(tmp_path):
    from PIL import Image
    root = write_fabricated_dsb(tmp_path / "p", "processed", n=3, shape=(64, 64))
    for jpg in root.glob("*/*.jpg"):             # PNG: both decoders must then give identical pixels
        Image.open(jpg).save(jpg.with_suffix(".png"))
        jpg.unlink()
    listing = list_dsb(root)
    files = list(listing.image), list(listing["mask"])
    x1, y1 = next(iter(make_dataset(*files, batch_size=3, normalize="scale255")))
    x2, y2 = next(iter(numpy_function_dataset(*files, size=64, batch_size=3, shuffle=False)))
    np.testing.assert_allclose(x1.numpy(), x2.numpy(), atol=1e-6)
    np.testing.assert_array_equal(y1.numpy(), y2.numpy())


def test_augmentation_is_joint_and_seeded():
    images, labels = synthetic_nuclei_set(4, (64, 64), seed=0)
    batches = lambda s: [b for b in make_dataset(images, labels, 4, training=True, patch_size=48, seed=s).take(3)]
    a, b, c = batches(1), batches(1), batches(2)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa.numpy(), xb.numpy())
    assert any(not np.array_equal(xa.numpy(), xc.numpy()) for (xa, _), (xc, _) in zip(a, c))
    for x, y in a:                                       # masks still sit on the bright nuclei
        x, y = x.numpy()[..., 0], y.numpy()[..., 0] > 0
        assert x[y].mean() > x[~y].mean() + 0.1


def test_normalisation_matches_numpy_percentiles():
    x = np.random.default_rng(1).gamma(2.0, 20.0, (50, 60)).astype(np.uint8)
    lo, hi = np.percentile(x, [1, 99.8], method="nearest")
    np.testing.assert_allclose(normalize_image(x).numpy(), (x.astype(float) - lo) / (hi - lo), atol=1e-5)


def test_synthetic_images_are_unchanged():
    "Fingerprints of the generator's output (taken before it moved to imgsci.core.smooth_field and skimage)."
    import hashlib
    fingerprint = lambda *arrays: hashlib.sha256(b"".join(a.tobytes() for a in arrays)).hexdigest()[:16]
    assert fingerprint(*synthetic_nuclei((64, 64), seed=0)) == "4b81ed5952beab1d"
    assert fingerprint(*synthetic_nuclei((128, 96), seed=3)) == "fc81d1a9c625fa50"
    assert fingerprint(*synthetic_nuclei_set(4, (128, 128), seed=0)) == "845e881a001fb54a"


def test_split_tiles_keeps_channels_and_order():
    x = np.arange(4 * 6 * 2).reshape(4, 6, 2)
    tiles = split_tiles(x, 2)
    assert tiles.shape == (6, 2, 2, 2)
    np.testing.assert_array_equal(tiles[4], x[2:4, 2:4])
    with pytest.raises(ValueError, match="does not split"):
        split_tiles(x, 4)

