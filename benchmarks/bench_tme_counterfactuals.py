"""Benchmark: batched prototype-guided counterfactuals (imgsci.tme.counterfactuals) against alibi's CounterfactualProto.

Same trained MLP (the paper's architecture, trained on a simulated cohort), same instances (patches of immune-excluded
patients predicted without T cells), the paper's settings (p = 0.8 ⇔ κ = 0.6, β = 0.1, θ = 100, c = 100, c_steps = 10,
1000 iterations, only chemokines may move, feature range = training range). Ours optimises all instances in one TF
graph; alibi explains one instance at a time. alibi runs in its own virtual environment (alibi 0.9.6 needs legacy
Keras and graph mode), which this script builds on first use under ~/.cache/imgsci/alibi-venv; if that fails
(no network, no disk), the alibi half is skipped and only our throughput is printed.

    .venv/bin/python benchmarks/bench_tme_counterfactuals.py [--alibi-instances 8] [--no-alibi]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np

ALIBI_VENV = Path(os.environ.get("IMGSCI_ALIBI_VENV", Path.home() / ".cache" / "imgsci" / "alibi-venv"))
ALIBI_PKGS = ["alibi==0.9.6", "tensorflow==2.21.0", "tf-keras==2.21.0", "click"]
PAPER = dict(kappa=0.6, beta=0.1, theta=100.0, c_init=100.0, c_steps=10, max_iterations=1000,
             learning_rate_init=1e-2, clip=(-1000.0, 1000.0))

ALIBI_SCRIPT = textwrap.dedent('''
    import json, os, sys, time
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np
    import tensorflow as tf
    tf.compat.v1.disable_eager_execution()
    import tf_keras
    from alibi.explainers import CounterfactualProto
    d = np.load(sys.argv[1], allow_pickle=True)
    cfg = json.loads(str(d["cfg"]))
    out = []
    for i in range(len(d["x0"])):
        tf.compat.v1.reset_default_graph()
        sess = tf.compat.v1.Session()
        tf.compat.v1.keras.backend.set_session(sess)
        model = tf_keras.Sequential([tf_keras.layers.Input((d["x0"].shape[1],)),
                                     tf_keras.layers.Dense(30, activation="relu"),
                                     tf_keras.layers.Dense(10, activation="relu"),
                                     tf_keras.layers.Dense(2, activation="softmax")])
        model.set_weights([d[f"w{k}"] for k in range(6)])
        lo, hi = d["lo"][i][None], d["hi"][i][None]   # immutable features: range collapsed onto x0
        cf = CounterfactualProto(model, shape=(1, d["x0"].shape[1]), kappa=cfg["kappa"], beta=cfg["beta"],
                                 theta=cfg["theta"], c_init=cfg["c_init"], c_steps=cfg["c_steps"],
                                 max_iterations=cfg["max_iterations"], learning_rate_init=cfg["learning_rate_init"],
                                 clip=tuple(cfg["clip"]), feature_range=(lo, hi), use_kdtree=True, sess=sess)
        cf.fit(d["x_train"], update_feature_range=False)
        t0, c0 = time.perf_counter(), time.process_time()
        exp = cf.explain(d["x0"][i:i + 1], k=1)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        x = None if exp.cf is None else np.asarray(exp.cf["X"]).ravel().tolist()
        out.append(dict(wall=wall, cpu=cpu, x_cf=x))
        sess.close()
    json.dump(out, open(sys.argv[2], "w"))
''')


def build_alibi_venv() -> Path | None:
    "Create (once) the virtual environment alibi needs; None if that is impossible here."
    py = ALIBI_VENV / "bin" / "python"
    probe = [str(py), "-c", "import alibi, tf_keras, tensorflow"]
    if py.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return py
    try:
        ALIBI_VENV.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", str(ALIBI_VENV)], check=True, capture_output=True)
        print(f"building {ALIBI_VENV} ({' '.join(ALIBI_PKGS)}) …", flush=True)
        subprocess.run([str(py), "-m", "pip", "install", "--quiet", *ALIBI_PKGS], check=True, timeout=1800)
        subprocess.run(probe, check=True, capture_output=True)
        return py
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
        print(f"alibi environment unavailable ({type(e).__name__}: {e}); skipping the alibi comparison")
        return None


def l1(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).sum())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alibi-instances", type=int, default=8, help="instances explained by alibi (each takes seconds)")
    ap.add_argument("--no-alibi", action="store_true", help="measure only the batched implementation")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--c-steps", type=int, default=PAPER["c_steps"])
    ap.add_argument("--iterations", type=int, default=PAPER["max_iterations"])
    args = ap.parse_args()
    PAPER.update(c_steps=args.c_steps, max_iterations=args.iterations)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from imgsci.core import Stopwatch
    from imgsci.tme.counterfactuals import class_trees, counterfactual_proto
    from imgsci.tme.imc import CHEMOKINES, SimConfig, fit_once, make_patches, marker_thresholds, simulate_cohort

    co = simulate_cohort(SimConfig(n_patients=40, cores_per_patient=(1, 2), size=160, seed=args.seed))
    patches = make_patches(co, marker_thresholds(co))
    fit = fit_once(patches, "mlp", seed=args.seed, epochs=100, patience=40)
    model, xs, train = fit.model, fit.x, fit.split["train"]
    excluded = co.meta.excluded.to_numpy()[patches.image]
    idx = np.nonzero(excluded & (fit.proba < 0.5))[0]
    x0 = xs[idx]
    mutable = np.isin(patches.channels, CHEMOKINES)
    lo, hi = xs[train].min(0), xs[train].max(0)
    trees = class_trees(model, xs[train])
    counterfactual_proto(model, x0[:2], trees=trees, mutable=mutable, feature_range=(lo, hi),
                         **{**PAPER, "c_steps": 1, "max_iterations": 2})  # trace the graph outside the timing
    with Stopwatch() as sw:
        ours = counterfactual_proto(model, x0, trees=trees, mutable=mutable, feature_range=(lo, hi), **PAPER)
    ours_l1 = np.abs(ours.x_cf - x0).sum(1)
    print(f"ours (batched, {len(x0)} instances, c_steps {PAPER['c_steps']} × {PAPER['max_iterations']} iterations): "
          f"{sw.wall:.2f} s wall, {sw.cpu:.2f} CPU-s → {len(x0) / sw.wall:.1f} instances/s, "
          f"{1e3 * sw.cpu / len(x0):.2f} CPU-ms per instance; success {ours.found.mean():.1%}, "
          f"mean L1(δ) {ours_l1[ours.found].mean():.3f}")
    result = dict(n=len(x0), ours_wall=sw.wall, ours_cpu=sw.cpu, ours_success=float(ours.found.mean()))
    if args.no_alibi:
        print(json.dumps(result)); return
    py = build_alibi_venv()
    if py is None:
        print(json.dumps(result)); return
    k = min(args.alibi_instances, len(x0))
    pick = np.random.default_rng(args.seed).choice(len(x0), k, replace=False)
    with tempfile.TemporaryDirectory() as tmp:
        weights = {f"w{i}": w for i, w in enumerate(model.get_weights())}
        np.savez(Path(tmp) / "in.npz", x0=x0[pick], x_train=xs[train], lo=np.where(mutable, lo, x0[pick]),
                 hi=np.where(mutable, hi, x0[pick]), cfg=json.dumps({**PAPER, "clip": list(PAPER["clip"])}), **weights)
        env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "PYTHONPATH": ""}
        r = subprocess.run([str(py), "-c", ALIBI_SCRIPT, str(Path(tmp) / "in.npz"), str(Path(tmp) / "out.json")],
                           env=env, capture_output=True, text=True)
        if r.returncode != 0:
            print("alibi run failed; skipping the comparison:\n" + r.stderr[-3000:])
            print(json.dumps(result)); return
        ali = json.load(open(Path(tmp) / "out.json"))
    a_found = np.array([a["x_cf"] is not None for a in ali])
    a_cpu = np.mean([a["cpu"] for a in ali]); a_wall = np.mean([a["wall"] for a in ali])
    a_l1 = [l1(a["x_cf"], x0[pick][j]) for j, a in enumerate(ali) if a["x_cf"] is not None]
    o_found = ours.found[pick]
    o_l1 = ours_l1[pick][o_found]
    agree = [l1(a["x_cf"], ours.x_cf[pick][j]) for j, a in enumerate(ali) if a["x_cf"] is not None and o_found[j]]
    ratio_wall = a_wall / (sw.wall / len(x0))
    ratio_cpu = a_cpu / (sw.cpu / len(x0))
    print(f"alibi 0.9.6 ({k} instances, one at a time): {a_wall:.2f} s wall, {a_cpu:.2f} CPU-s per instance; "
          f"success {a_found.mean():.1%}, mean L1(δ) {np.mean(a_l1) if a_l1 else float('nan'):.3f}")
    print("per instance L1(δ), alibi vs ours: " + ", ".join(
        f"{l1(a['x_cf'], x0[pick][j]) if a['x_cf'] is not None else float('nan'):.2f}/{ours_l1[pick][j]:.2f}" for j, a in enumerate(ali)))
    print(f"ours on the same {k} instances: success {o_found.mean():.1%}, mean L1(δ) {o_l1.mean() if len(o_l1) else float('nan'):.3f}; "
          f"mean L1 distance between the two counterfactuals {np.mean(agree) if agree else float('nan'):.3f}")
    print(f"speed-up (per instance): ×{ratio_wall:.0f} wall time, ×{ratio_cpu:.0f} CPU time (goal ≥ ×1000)")
    result.update(alibi_n=k, alibi_wall_per_instance=a_wall, alibi_cpu_per_instance=a_cpu,
                  alibi_success=float(a_found.mean()), ratio_wall=ratio_wall, ratio_cpu=ratio_cpu)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
