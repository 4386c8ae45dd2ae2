"""Benchmark: wall time of one MLP fit (imgsci.tme.imc.train_classifier) on the recovery table's reduced cohort.

`train_classifier` feeds Keras one repeated, reshuffled `tf.data` dataset for the whole fit; the baseline, measured in
the same run on the same cohort, split, initial weights and schedule, is `model.fit` on the arrays (Keras builds a new
tf.data iterator every epoch). Each side is timed `--repeats` times after one warm-up fit; the medians give the ratio.

    .venv/bin/python benchmarks/bench_tme_training.py [--epochs 25] [--repeats 3]
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from imgsci.core import set_seed  # noqa: E402
from imgsci.tme.imc import (SimConfig, build_mlp, make_patches, marker_thresholds, mlp_inputs,  # noqa: E402
                            patient_split, simulate_cohort, train_classifier, validation_mcc)


def array_fit(x_train, y_train, x_val, y_val, epochs, lr):
    "The baseline: Keras `fit` on the arrays, same optimiser, loss and early stopping as `train_classifier`."
    model = build_mlp(x_train.shape[1])
    model.compile(optimizer=keras.optimizers.SGD(lr, momentum=0.9, nesterov=True), loss="sparse_categorical_crossentropy")
    stop = keras.callbacks.EarlyStopping(monitor="val_mcc", mode="max", patience=epochs, restore_best_weights=True)
    model.fit(x_train, y_train.astype(int), epochs=epochs, batch_size=32, verbose=0, shuffle=True,
              callbacks=[validation_mcc(model, x_val, y_val), stop])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=25, help="epochs per fit (quick recovery profile: 25)")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    co = simulate_cohort(SimConfig(n_patients=24, cores_per_patient=(1, 1), size=160, planted="CCL2+,CXCL9-", seed=1))
    p = make_patches(co, marker_thresholds(co))
    split = patient_split(p.patient, p.label, seed=0)
    x, _ = mlp_inputs(p, split["train"], "arcsinh")
    xt, yt, xv, yv = x[split["train"]], p.label[split["train"]], x[split["val"]], p.label[split["val"]]
    ours = lambda: train_classifier(build_mlp(x.shape[1]), xt, yt, xv, yv, epochs=a.epochs, patience=a.epochs,
                                    learning_rate=1e-2, seed=0)
    base = lambda: array_fit(xt, yt, xv, yv, a.epochs, 1e-2)
    times = {}
    for name, fn in (("arrays (Keras default)", base), ("train_classifier", ours)):
        set_seed(0); fn()  # warm-up: first tracing of the step
        ts = []
        for _ in range(a.repeats):
            set_seed(0)
            t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
        times[name] = float(np.median(ts))
    print(f"cohort: {len(p.label)} patches, {len(xt)} training; {a.epochs} epochs, batch 32, median of {a.repeats}\n")
    print("| fit | seconds |\n|:--|--:|")
    for k, v in times.items():
        print(f"| {k} | {v:.2f} |")
    print(f"\nspeed-up (arrays ÷ train_classifier): {times['arrays (Keras default)'] / times['train_classifier']:.2f}×")


if __name__ == "__main__":
    main()
