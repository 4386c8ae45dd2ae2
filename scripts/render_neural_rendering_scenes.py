"""Render the neural-rendering study's ground-truth scenes with Mitsuba 3 (an independent renderer).

    python scripts/render_neural_rendering_scenes.py [--res 64] [--spp 128] [--out data/neural_rendering]

Writes `<out>/<scene>.npz` for the scenes `sphere` (a glossy, striped sphere) and `torus` (a glossy,
checkered, tilted torus: non-convex, self-occluding): ~100 training views and held-out test views on the
upper hemisphere lit by environment map A, the same test views under environment map B (relighting
ground truth), the test views' albedo, shading normal and depth AOVs, and the test views under A and B
rendered with direct light only (`rgba_test_direct`, `rgba_test_b_direct`: path tracer with max_depth 2, so
no interreflection; shadows stay, Mitsuba has no switch for them). Images are 8-bit sRGB with an alpha
channel (coverage; the environment is hidden from camera rays so the background is black).

    python scripts/render_neural_rendering_scenes.py --direct-only   # add only the direct-light views to
                                                                     # the existing files (seconds per scene)

Mitsuba is an optional extra (`pip install mitsuba`): the default study run reads the committed npz files
and needs no renderer. The default variant `scalar_rgb` runs on any CPU; `--variant llvm_ad_rgb` is much
faster but needs a system LLVM recent enough for Dr.Jit (LLVM 15 fails to compile its kernels).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from imgsci.core import Stopwatch, atomic_path  # noqa: E402
from imgsci.neural_rendering.scenes import (focal_from_fov, hemisphere_cameras, mitsuba_to_nerf_c2w,  # noqa: E402
                                            srgb_encode)
from imgsci.neural_rendering.shading import latlong_directions  # noqa: E402

FOV_DEG, RADIUS, NEAR, FAR = 40.0, 4.0, 2.5, 5.5


def _blob(dirs, direction, width_deg, colour):
    "A smooth light source: a Gaussian in angle around `direction`."
    d = np.asarray(direction, float) / np.linalg.norm(direction)
    ang = np.arccos(np.clip(dirs @ d, -1, 1))
    return np.exp(-0.5 * (ang / math.radians(width_deg)) ** 2)[..., None] * np.asarray(colour, np.float32)


def make_envmap(kind: str, height: int = 64) -> np.ndarray:
    "HDR lat-long environment maps: 'a' (sky, warm key light upper right) and 'b' (a different, cooler light rig)."
    dirs = latlong_directions(height, 2 * height).astype(np.float64)
    y = dirs[..., 1:2]
    if kind == "a":
        sky = np.where(y > 0, 0.10 + 0.15 * y * np.array([0.6, 0.8, 1.0]), 0.05 * np.array([0.9, 0.7, 0.5]))
        return (sky + _blob(dirs, [0.6, 0.6, 0.5], 7, [24, 20, 14]) + _blob(dirs, [-0.7, 0.2, -0.4], 20, [0.25, 0.35, 0.8])
                ).astype(np.float32)
    if kind == "b":
        sky = np.where(y > 0, 0.06 + 0.08 * y * np.array([1.0, 0.7, 0.6]), 0.03 * np.array([0.5, 0.6, 0.9]))
        return (sky + _blob(dirs, [-0.5, 0.5, 0.7], 6, [12, 16, 30]) + _blob(dirs, [0.8, 0.1, -0.3], 15, [1.2, 0.35, 0.15])
                ).astype(np.float32)
    raise ValueError(f"unknown environment {kind!r}; use 'a' or 'b'")


def stripes_texture(n: int = 8, size: int = 256) -> np.ndarray:
    "Base colour of the sphere: `n` stripes along the azimuth (texture u)."
    u = (np.arange(size) + 0.5) / size
    band = (np.floor(u * n) % 2).astype(bool)
    row = np.where(band[:, None], [0.80, 0.30, 0.20], [0.20, 0.50, 0.80])
    return np.broadcast_to(row[None], (size, size, 3)).astype(np.float32).copy()


def checker_texture(nu: int = 8, nv: int = 4, size: int = 256) -> np.ndarray:
    "Base colour of the torus: an `nu`×`nv` checkerboard in texture space."
    u = (np.arange(size) + 0.5) / size
    cu, cv = np.floor(u * nu)[None, :], np.floor(u * nv)[:, None]
    odd = ((cu + cv) % 2).astype(bool)
    return np.where(odd[..., None], [0.85, 0.75, 0.20], [0.25, 0.65, 0.30]).astype(np.float32)


def torus_obj(path: Path, major=0.75, minor=0.3, tilt_deg=30.0, nu=96, nv=48) -> None:
    "Write a tilted torus with UVs and smooth normals as a Wavefront OBJ."
    u = np.linspace(0, 2 * np.pi, nu + 1)
    v = np.linspace(0, 2 * np.pi, nv + 1)
    U, V = np.meshgrid(u, v, indexing="ij")
    pos = np.stack([(major + minor * np.cos(V)) * np.cos(U), minor * np.sin(V), (major + minor * np.cos(V)) * np.sin(U)], -1)
    nrm = np.stack([np.cos(V) * np.cos(U), np.sin(V), np.cos(V) * np.sin(U)], -1)
    c, s = math.cos(math.radians(tilt_deg)), math.sin(math.radians(tilt_deg))
    rot = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    pos, nrm = pos @ rot.T, nrm @ rot.T
    uv = np.stack([U / (2 * np.pi), V / (2 * np.pi)], -1)
    idx = lambda i, j: i * (nv + 1) + j + 1
    lines = [f"v {p[0]:.6f} {p[1]:.6f} {p[2]:.6f}" for p in pos.reshape(-1, 3)]
    lines += [f"vt {t[0]:.6f} {t[1]:.6f}" for t in uv.reshape(-1, 2)]
    lines += [f"vn {n[0]:.6f} {n[1]:.6f} {n[2]:.6f}" for n in nrm.reshape(-1, 3)]
    for i in range(nu):
        for j in range(nv):
            a, b, cc, d = idx(i, j), idx(i + 1, j), idx(i + 1, j + 1), idx(i, j + 1)
            lines += [f"f {a}/{a}/{a} {d}/{d}/{d} {cc}/{cc}/{cc}", f"f {a}/{a}/{a} {cc}/{cc}/{cc} {b}/{b}/{b}"]
    path.write_text("\n".join(lines) + "\n")


def pick_variant(mi, wanted: str = "scalar_rgb") -> str:
    "Switch Mitsuba to the variant `wanted`, with an error that lists the available ones."
    if wanted not in mi.variants():
        raise ValueError(f"Mitsuba variant {wanted!r} is not available; choose one of {mi.variants()}")
    mi.set_variant(wanted)
    return wanted


def shape_dict(mi, name: str, workdir: Path) -> dict:
    if name == "sphere":
        tex, rough, shape = stripes_texture(), 0.3, {"type": "sphere", "radius": 1.0}
    elif name == "torus":
        torus_obj(workdir / "torus.obj")
        tex, rough, shape = checker_texture(), 0.25, {"type": "obj", "filename": str(workdir / "torus.obj"),
                                                      "face_normals": False}
    else:
        raise ValueError(f"unknown object {name!r}")
    shape["bsdf"] = {"type": "principled", "base_color": {"type": "bitmap", "bitmap": mi.Bitmap(tex), "raw": True},
                     "roughness": rough, "metallic": 0.0, "specular": 0.5}
    return shape


def sensor(mi, c2w_nerf, res: int, spp: int):
    c2w_mi = mitsuba_to_nerf_c2w(c2w_nerf)          # diag(−1, 1, −1, 1) is its own inverse
    return mi.load_dict({"type": "perspective", "fov": FOV_DEG, "fov_axis": "x",
                         "to_world": mi.ScalarTransform4f(c2w_mi.astype(np.float64).tolist()),
                         "film": {"type": "hdrfilm", "width": res, "height": res, "pixel_format": "rgba",
                                  "rfilter": {"type": "box"}},
                         "sampler": {"type": "independent", "sample_count": spp}})


def render_views(mi, scene, cams, res, spp, integrator=None, seed=0):
    out = []
    for k, c in enumerate(cams):
        img = mi.render(scene, sensor=sensor(mi, c, res, spp), integrator=integrator, seed=seed + k)
        out.append(np.array(img, dtype=np.float32))
    return np.stack(out)


def to_srgb8(rgba_linear):
    rgb = np.asarray(srgb_encode(rgba_linear[..., :3]))
    alpha = np.clip(rgba_linear[..., 3:4], 0, 1)
    return np.round(np.concatenate([rgb, alpha], -1) * 255).astype(np.uint8)


def load_scenes(mi, name: str, env_res: int, workdir: Path, max_depth: int = 8) -> dict:
    "The Mitsuba scenes of object `name` under environments A and B, path traced up to `max_depth`."
    shape = shape_dict(mi, name, workdir)
    return {k: mi.load_dict({"type": "scene", "integrator": {"type": "path", "max_depth": max_depth, "hide_emitters": True},
                             "emitter": {"type": "envmap", "bitmap": mi.Bitmap(make_envmap(k, env_res))}, "object": shape})
            for k in ("a", "b")}


def render_direct(name: str, res: int, spp: int, n_test: int, variant: str, env_res: int) -> tuple[dict, float]:
    "The test views under A and B with direct light only (max_depth 2: no interreflection), and the seconds taken."
    import mitsuba as mi
    pick_variant(mi, variant)
    test_cams = hemisphere_cameras(n_test, RADIUS, 10, 70, seed=1234)
    with tempfile.TemporaryDirectory() as tmp, Stopwatch() as sw:
        scenes = load_scenes(mi, name, env_res, Path(tmp), max_depth=2)
        out = dict(rgba_test_direct=to_srgb8(render_views(mi, scenes["a"], test_cams, res, spp, seed=40_000)),
                   rgba_test_b_direct=to_srgb8(render_views(mi, scenes["b"], test_cams, res, spp, seed=50_000)))
    return out, sw.wall


def render_scene(name: str, res: int, spp: int, n_train: int, n_test: int, variant: str, env_res: int) -> dict:
    import mitsuba as mi
    variant = pick_variant(mi, variant)
    env_a, env_b = make_envmap("a", env_res), make_envmap("b", env_res)
    train_cams = hemisphere_cameras(n_train, RADIUS, 5, 80)
    test_cams = hemisphere_cameras(n_test, RADIUS, 10, 70, seed=1234)
    with tempfile.TemporaryDirectory() as tmp:
        scenes = load_scenes(mi, name, env_res, Path(tmp))
        aov = mi.load_dict({"type": "aov", "aovs": "albedo:albedo,nn:sh_normal,dd:depth"})
        with Stopwatch() as sw:
            rgba_train = render_views(mi, scenes["a"], train_cams, res, spp)
            rgba_test = render_views(mi, scenes["a"], test_cams, res, spp, seed=10_000)
            rgba_test_b = render_views(mi, scenes["b"], test_cams, res, spp, seed=20_000)
            aovs = render_views(mi, scenes["a"], test_cams, res, 16, integrator=aov, seed=30_000)
        seconds = sw.wall
    # aov channels: R, G, B, A of the (empty) inner integrator, then albedo (3), normal (3), depth (1)
    albedo, normal, depth = aovs[..., -7:-4], aovs[..., -4:-1], aovs[..., -1]
    cover = np.clip(rgba_test[..., 3:4], 1e-6, None)
    meta = dict(renderer=f"Mitsuba {mi.__version__}", variant=variant, spp=spp, resolution=res, fov_x_deg=FOV_DEG,
                camera_radius=RADIUS, object=name, seconds=round(seconds, 1), integrator="path, max_depth 8",
                depth_aov="distance along the ray from the near-clip plane (0.01), pixel-averaged "
                          "(0 where the ray misses)",
                albedo_aov="diffuse reflectance of the principled BSDF (linear), coverage-weighted at edges",
                normal_aov="shading normal, world space, stored as (n + 1) / 2",
                licence="CC0: rendered by this repository's script from procedural scenes")
    direct, direct_seconds = render_direct(name, res, spp, n_test, variant, env_res)
    meta.update(seconds=round(seconds + direct_seconds, 1), direct="rgba_test_direct, rgba_test_b_direct: path, max_depth 2")
    return dict(rgba_train=to_srgb8(rgba_train), rgba_test=to_srgb8(rgba_test), rgba_test_b=to_srgb8(rgba_test_b), **direct,
                albedo_test=np.round(np.clip(albedo / cover, 0, 1) * 255).astype(np.uint8),
                normal_test=np.round(np.clip((normal / np.maximum(np.linalg.norm(normal, axis=-1, keepdims=True), 1e-6)
                                              + 1) / 2, 0, 1) * 255).astype(np.uint8),
                depth_test=depth.astype(np.float16), c2w_train=train_cams, c2w_test=test_cams,
                envmap_a=env_a.astype(np.float16), envmap_b=env_b.astype(np.float16),
                focal=np.float32(focal_from_fov(res, FOV_DEG)), near=np.float32(NEAR), far=np.float32(FAR),
                meta=np.array(json.dumps(meta)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "data" / "neural_rendering"))
    p.add_argument("--scenes", nargs="+", default=["sphere", "torus"])
    p.add_argument("--res", type=int, default=64)
    p.add_argument("--spp", type=int, default=128)
    p.add_argument("--n-train", type=int, default=100)
    p.add_argument("--n-test", type=int, default=10)
    p.add_argument("--env-res", type=int, default=64, help="height of the lat-long environment maps (width = 2×)")
    p.add_argument("--variant", default="scalar_rgb")
    p.add_argument("--direct-only", action="store_true",
                   help="add only the direct-light test views to the existing <out>/<scene>.npz (its resolution and spp)")
    a = p.parse_args(argv)
    try:
        import mitsuba  # noqa: F401
    except ImportError:
        p.error("Mitsuba 3 is not installed: `pip install mitsuba` (only needed to re-render; the data ships)")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in a.scenes:
        if a.direct_only:
            path = out / f"{name}.npz"
            if not path.exists():
                p.error(f"--direct-only adds to an existing file, and {path} does not exist: render it first without the flag")
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            meta = json.loads(str(arrays["meta"]))
            direct, seconds = render_direct(name, meta["resolution"], meta["spp"], len(arrays["c2w_test"]), a.variant,
                                            arrays["envmap_a"].shape[0])
            arrays.update(direct)
            meta["direct"] = f"rgba_test_direct, rgba_test_b_direct: path, max_depth 2, {round(seconds, 1)} s"
            arrays["meta"] = np.array(json.dumps(meta))
            with atomic_path(path) as tmp:
                np.savez_compressed(tmp, **arrays)
            print(f"{name}: direct-light views in {seconds:.1f} s -> {path}")
            continue
        arrays = render_scene(name, a.res, a.spp, a.n_train, a.n_test, a.variant, a.env_res)
        with atomic_path(out / f"{name}.npz") as tmp:
            np.savez_compressed(tmp, **arrays)
        print(f"{name}: {json.loads(str(arrays['meta']))['seconds']} s -> {out / (name + '.npz')} "
              f"({(out / (name + '.npz')).stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
