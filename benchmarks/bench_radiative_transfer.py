"""Throughput of the split-step P1 solver (imgsci.radiative_transfer.solver) against the original C++ program and a non-XLA baseline.

Cell-updates per second (B·64·64·383 / time) of one density and of batches, per wall second and per CPU
second, for the XLA-compiled loop and, measured in the same run, the same TensorFlow code without XLA
(graph mode). The original C++ solver did 7.4e4 cell-updates/s on one thread (64², 383 steps in 21 s).
Targets checked on a 2-core machine (as in notebook 03a's throughput claims): ≥ 300× the original in wall
time (batched), and the full dataset (2883 samples × 4 simulations = 1.8e10 cell-updates) in under 15 minutes.

    flock /tmp/imgsci-heavy.lock .venv/bin/python benchmarks/bench_radiative_transfer.py [--batches 1 16 64] [--repeats 3]
"""
import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from imgsci.core import atomic_path, data_path  # noqa: E402
from imgsci.radiative_transfer.solver import (MOCO_DATASET_SAMPLES, ORIGINAL_CELL_UPDATES_PER_S,  # noqa: E402
                                              measure_throughput)

DATASET_CELL_UPDATES = MOCO_DATASET_SAMPLES * 4 * 64 * 64 * 383


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--scheme", default="original", choices=["original", "consistent"])
    ap.add_argument("--baseline-batches", type=int, nargs="*", default=[1, 16],
                    help="batch sizes also timed without XLA (the in-run baseline)")
    ap.add_argument("--gradient", action="store_true", help="also time forward+backward of one sample (B = 4)")
    ap.add_argument("--csv", type=Path, default=None, help="write the table to this CSV file (atomically)")
    args = ap.parse_args(argv)
    if min(args.batches) < 1 or args.repeats < 1:
        ap.error("batch sizes and repeats must be positive")
    rho = np.load(data_path("radiative_transfer", "p1_reference_3000_top.npz"))["density_rowTop"]
    rows = []
    for batch in args.batches:
        for jit in ([True, False] if batch in args.baseline_batches else [True]):
            sw, cu = measure_throughput(rho, batch, args.repeats, args.scheme, jit)
            rows.append(dict(mode="XLA loop" if jit else "graph, no XLA", batch=batch, wall_s=sw.wall, cpu_s=sw.cpu,
                             cu_per_s=cu / sw.wall, cu_per_cpu_s=cu / sw.cpu))
            print(f"{rows[-1]['mode']:>14}  B={batch:<4d} wall {sw.wall:7.3f} s  cpu {sw.cpu:7.3f} s  "
                  f"{cu / sw.wall:9.3g} cell-updates/s ({cu / sw.wall / ORIGINAL_CELL_UPDATES_PER_S:5.0f}× original)  "
                  f"{cu / sw.cpu:9.3g} per CPU-s ({cu / sw.cpu / ORIGINAL_CELL_UPDATES_PER_S:5.0f}×)", flush=True)
    if args.gradient:
        sw, cu = measure_throughput(rho, 4, max(1, args.repeats // 2), args.scheme, True, differentiable=True)
        rows.append(dict(mode="XLA fwd+grad", batch=4, wall_s=sw.wall, cpu_s=sw.cpu, cu_per_s=cu / sw.wall,
                         cu_per_cpu_s=cu / sw.cpu))
        print(f"  XLA fwd+grad  B=4    wall {sw.wall:7.3f} s  cpu {sw.cpu:7.3f} s  (one sample's gradient)", flush=True)
    xla = [r for r in rows if r["mode"] == "XLA loop"]
    best = max(xla, key=lambda r: r["cu_per_s"])
    print()
    for r in rows:
        base = [b for b in rows if b["batch"] == r["batch"] and b["mode"] == "graph, no XLA"]
        if r["mode"] == "XLA loop" and base:
            print(f"B={r['batch']}: XLA / no-XLA (same run) = {r['cu_per_s'] / base[0]['cu_per_s']:.1f}× wall, "
                  f"{r['cu_per_cpu_s'] / base[0]['cu_per_cpu_s']:.1f}× per CPU-s")
    ratio = best["cu_per_s"] / ORIGINAL_CELL_UPDATES_PER_S
    minutes = DATASET_CELL_UPDATES / best["cu_per_s"] / 60
    print(f"best batched wall throughput: {best['cu_per_s']:.3g} cell-updates/s at B={best['batch']} = {ratio:.0f}× the "
          f"original (goal ≥ 300×: {'met' if ratio >= 300 else 'NOT met'})")
    print(f"full dataset (1.8e10 cell-updates) at that rate: {minutes:.1f} min (goal < 15 min: "
          f"{'met' if minutes < 15 else 'NOT met'}); the original needed 68 CPU-hours")
    if args.csv:
        import pandas as pd
        with atomic_path(args.csv) as tmp:
            pd.DataFrame(rows).to_csv(tmp, index=False)
    return rows


if __name__ == "__main__":
    main()
