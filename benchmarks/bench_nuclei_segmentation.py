"""Nuclei segmentation: training throughput of our tf.data pipeline vs the report's tf.numpy_function pipeline.

Both pipelines feed the same seed MultiResUNet (same batch, same compiled train step) from the same folder of
DSB2018-like JPEG files (the report's processed layout; sizes drawn from DSB2018's stage1 mix, 256×256 up to
1024×1024). The report's pipeline, the baseline, is as the report wrote it: every image decoded with
`cv2.imread` and resized with `cv2.resize` in Python, inside `tf.numpy_function`, on every epoch (OpenCV:
`pip install -e .[bench]` or `pip install opencv-python-headless`; without it the baseline falls back to
scikit-image and says so in one line, and the ratio is then not the report's). Ours decodes with `tf.io` once,
caches, augments in the graph and prefetches. Both are timed in the same run; the RATIO line is ours / baseline.
Also printed: each pipeline alone (no model) and model inference throughput. `--record FILE` writes the
measurement as JSON (the study notebook reads data/nuclei_segmentation/pipeline_benchmark.json).

    flock /tmp/imgsci-heavy.lock .venv/bin/python benchmarks/bench_nuclei_segmentation.py            # 256² (paper)
    flock /tmp/imgsci-heavy.lock .venv/bin/python benchmarks/bench_nuclei_segmentation.py --size 64  # quick profile
"""
import argparse
import json
import os
import platform
import sys
import time
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from imgsci.core import Stopwatch

# (height, width, share) of the DSB2018 stage1_train images
DSB_SIZES = [((256, 256), 0.50), ((256, 320), 0.17), ((520, 696), 0.14), ((360, 360), 0.06),
             ((512, 640), 0.02), ((1024, 1024), 0.02), ((260, 347), 0.01), ((603, 1272), 0.01), ((256, 256), 0.07)]


def write_dsb_like_folder(root: Path, n: int, seed: int = 0) -> Path:
    "A processed-layout folder (images/*.jpg, masks/*.jpg) of `n` synthetic images with DSB2018-like sizes."
    from PIL import Image
    from imgsci.nuclei.data import synthetic_nuclei
    rng = np.random.default_rng(seed)
    shapes, shares = zip(*DSB_SIZES)
    shares = np.asarray(shares) / np.sum(shares)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        shape = shapes[rng.choice(len(shapes), p=shares)]
        img, lab = synthetic_nuclei(shape, seed=np.random.SeedSequence([seed, i]))
        Image.fromarray(np.dstack([img] * 3)).save(root / "images" / f"{i:04d}.jpg", quality=95)
        Image.fromarray(((lab > 0) * 255).astype(np.uint8)).save(root / "masks" / f"{i:04d}.jpg", quality=95)
    return root


def pipeline_rate(ds, batches: int, batch_size: int, warmup: int = 1) -> float:
    "Images per second of iterating `batches` batches of `ds` after `warmup` batches."
    it = iter(ds)
    for _ in range(warmup):
        next(it)
    with Stopwatch() as sw:
        for _ in range(batches):
            next(it)
    return batches * batch_size / sw.wall


def train_rate(model, ds, steps: int, batch_size: int) -> float:
    "Steady-state training images per second: `steps` steps timed between batch ends (fit set-up excluded)."
    import keras
    watch = Stopwatch()
    def clock(batch, logs=None):                     # from the end of the first step to the end of the last
        if batch == 0:
            watch.__enter__()
        elif batch == steps:
            watch.__exit__(None, None, None)
    model.fit(ds, epochs=1, steps_per_epoch=steps + 1, verbose=0,
              callbacks=[keras.callbacks.LambdaCallback(on_train_batch_end=clock)])
    return steps * batch_size / watch.wall


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=256, help="model input size (the report: 256)")
    ap.add_argument("--images", type=int, default=48, help="images in the fabricated folder")
    ap.add_argument("--steps", type=int, default=4, help="timed training steps per pipeline and round")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds (best of)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--record", type=Path, default=None, help="write the measurement to this JSON file")
    args = ap.parse_args()
    try:
        import cv2  # noqa: F401
        reader = "cv2"
    except ImportError:
        reader = "skimage"
        print("cv2 not installed (pip install opencv-python-headless): the baseline decodes with scikit-image, "
              "not as the report did, so the ratio is not the report's")

    import keras
    from imgsci.core import set_seed
    from imgsci.nuclei.data import list_dsb, make_dataset, numpy_function_dataset
    from imgsci.nuclei.segmentation import build_multiresunet, compile_segmenter, inference_throughput

    set_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        with Stopwatch() as sw:
            listing = list_dsb(write_dsb_like_folder(Path(tmp) / "dsb", args.images))
        print(f"fabricated {len(listing)} DSB-like JPEG pairs in {sw.wall:.1f} s "
              f"(sizes {sorted(set(zip(listing.height, listing.width)))})")
        files = list(listing.image), list(listing["mask"])
        ours = make_dataset(*files, args.batch, training=True, size=args.size, normalize="scale255")
        report = numpy_function_dataset(*files, size=args.size, batch_size=args.batch, reader=reader)
        # fill our cache first: the report's pipeline has none, ours pays decoding once per run
        with Stopwatch() as sw:
            for _ in make_dataset(*files, args.batch, size=args.size):
                pass
        print(f"one decode pass of ours (what its cache saves every later epoch): {sw.wall:.2f} s")
        n_batches = max(2, args.images // args.batch)
        # ours: the first epoch (n_batches) fills its cache, then steady state; the report's has no cache
        alone = dict(ours=pipeline_rate(ours, n_batches, args.batch, warmup=n_batches),
                     report=pipeline_rate(report, n_batches, args.batch))
        print(f"pipeline alone, img/s: ours {alone['ours']:.1f}, report ({reader} in numpy_function) {alone['report']:.1f} "
              f"-> {alone['ours'] / alone['report']:.1f}x: the training ratio's limit when the model step "
              "costs nothing next to the input (a fast GPU)")

        model = compile_segmenter(build_multiresunet((args.size, args.size, 3), "seed"), jit_compile=False)
        with Stopwatch() as sw:
            model.fit(ours, epochs=1, steps_per_epoch=1, verbose=0)
        print(f"trace + first step: {sw.wall:.1f} s")
        rates = {"ours (tf.data)": [], "report (tf.numpy_function)": []}
        for _ in range(args.rounds):
            rates["ours (tf.data)"].append(train_rate(model, ours, args.steps, args.batch))
            rates["report (tf.numpy_function)"].append(train_rate(model, report, args.steps, args.batch))
        best = {k: max(v) for k, v in rates.items()}
        for k, v in rates.items():
            print(f"training img/s at {args.size}², batch {args.batch}, {k}: best {best[k]:.2f} "
                  f"(rounds: {', '.join(f'{r:.2f}' for r in v)})")
        ratio = best["ours (tf.data)"] / best["report (tf.numpy_function)"]
        print(f"RATIO training throughput ours / report ({reader} baseline, same run) = {ratio:.2f}x (goal >= 1.5x: "
              f"{'met' if ratio >= 1.5 else 'not met'})")
        if args.record:
            args.record.parent.mkdir(parents=True, exist_ok=True)
            args.record.write_text(json.dumps(dict(
                ratio=round(ratio, 4), ours_img_s=best["ours (tf.data)"], report_img_s=best["report (tf.numpy_function)"],
                pipeline_alone_ratio=alone["ours"] / alone["report"], baseline_reader=reader, size=args.size,
                batch=args.batch, steps=args.steps, rounds=args.rounds, images=args.images,
                when=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (shared), no GPU",
                command="python benchmarks/bench_nuclei_segmentation.py " + " ".join(sys.argv[1:])), indent=1) + "\n")
            print(f"recorded in {args.record}")

        x = np.random.default_rng(0).integers(0, 256, (args.batch, args.size, args.size), dtype=np.uint8)
        rate = inference_throughput(model, x, repeats=3, batch_size=args.batch)
        print(f"inference img/s at {args.size}², batch {args.batch} (best of 3): {rate:.2f}")
    print(f"keras {keras.__version__}, backend {keras.backend.backend()}, cpus {os.cpu_count()}")


if __name__ == "__main__":
    main()
