"""Training throughput (rays/s) of NeRF, NeRD and PhySG at the quick-profile sizes.

    flock /tmp/imgsci-cpu.lock .venv/bin/python benchmarks/bench_neural_rendering.py [--steps 20] [--scene sphere]

For each method the compiled training step (`tf.function`, graph mode) is timed against the same step run
eagerly (`tf.config.run_functions_eagerly(True)`): the baseline is measured in the same run, on the same
rays, so the ratio is the speed-up that compiling the step buys. Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from imgsci.core import Stopwatch, profile_config, set_seed  # noqa: E402
from imgsci.neural_rendering.nerd import NERD_PROFILES, NeRD, make_nerd_step  # noqa: E402
from imgsci.neural_rendering.nerf import NERF_PROFILES, NeRF, make_nerf_step  # noqa: E402
from imgsci.neural_rendering.physg import PHYSG_PROFILES, PhySG, make_physg_step  # noqa: E402
from imgsci.neural_rendering.scenes import load_scene, ray_tensors, scene_rays  # noqa: E402


def make_steps(scene, profile):
    "Training steps of the three methods at the profile's sizes, each with its batch size."
    rays = ray_tensors(scene_rays(scene, "train"))
    c = profile_config(profile, **NERF_PROFILES)
    nerf = NeRF(**c["model"], near=scene["near"], far=scene["far"])
    nerf_rays = {k: rays[k] for k in ("origins", "dirs", "rgb")}
    steps = {"NeRF": (make_nerf_step(nerf, keras.optimizers.Adam(c["train"]["lr"]), nerf_rays, c["train"]["batch"]),
                      c["train"]["batch"])}
    c = profile_config(profile, **NERD_PROFILES)
    nerd = NeRD(n_images=len(scene["c2w_train"]), near=scene["near"], far=scene["far"], **c["model"])
    steps["NeRD"] = (make_nerd_step(nerd, rays, c["train"]["batch"], c["train"]["lr"]), c["train"]["batch"])
    c = profile_config(profile, **PHYSG_PROFILES)
    physg = PhySG(**c["model"])
    physg_rays = {k: rays[k] for k in ("origins", "dirs", "rgb", "mask")}
    steps["PhySG"] = (make_physg_step(physg, physg_rays, c["train"]["batch"], c["train"]["lr"], c["train"]["env_lr"],
                                      tf.Variable(50.0)), c["train"]["batch"])
    return steps


def time_steps(step, n):
    for v in step().values():      # warm-up: tracing and the first (slow) execution are not timed
        np.asarray(v)
    with Stopwatch() as sw:
        for _ in range(n):
            out = step()
        np.asarray(out["loss"])
    return sw.wall / n


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20, help="timed steps per method and mode")
    p.add_argument("--eager-steps", type=int, default=3, help="timed steps of the (slow) eager baseline")
    p.add_argument("--scene", default="sphere")
    p.add_argument("--profile", default="quick")
    a = p.parse_args(argv)
    set_seed(0)
    scene = load_scene(a.scene)
    print(f"TensorFlow {tf.__version__}, {tf.config.threading.get_intra_op_parallelism_threads() or 'default'} threads, "
          f"devices: {[d.device_type for d in tf.config.list_logical_devices()]}, profile {a.profile}\n")
    print("| method | batch (rays) | compiled step (s) | rays/s compiled | eager step (s) | rays/s eager | speed-up |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, (step, batch) in make_steps(scene, a.profile).items():
        compiled = time_steps(step, a.steps)
        tf.config.run_functions_eagerly(True)
        try:
            eager = time_steps(step, a.eager_steps)
        finally:
            tf.config.run_functions_eagerly(False)
        print(f"| {name} | {batch} | {compiled:.4f} | {batch / compiled:,.0f} | {eager:.4f} | {batch / eager:,.0f} | "
              f"{eager / compiled:.2f}× |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
