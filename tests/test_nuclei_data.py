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


def test_report_split_sizes_and_determinism():
    a = report_split([f"id{i}" for i in range(670)])
    assert [len(s) for s in a] == [402, 134, 134]
    assert a == report_split([f"id{i}" for i in range(670)])
    assert not set(a[0]) & set(a[2]) and not set(a[1]) & set(a[2])


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

