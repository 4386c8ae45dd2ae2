"""Loaders (on fabricated files), the shipped Mitsuba scenes, and Mitsuba's conventions (when installed)."""
import importlib.util
import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgsci.neural_rendering.scenes import (SCENES, camera_rays, check_c2w, load_blender, load_scene, load_tiny_nerf,
                                            look_at, mitsuba_to_nerf_c2w, nearest_view_baseline, require_masks,
                                            scene_rays)
from imgsci.neural_rendering.shading import latlong_directions, sphere_intersect


def write_blender(root, n=3, size=(6, 8), mode="RGBA", poses=None, meta_extra=None, sizes=None):
    (root / "train").mkdir(parents=True, exist_ok=True)
    frames = []
    for k in range(n):
        h, w = sizes[k] if sizes else size
        arr = np.random.default_rng(k).integers(0, 256, (h, w, len(mode)), dtype=np.uint8)
        Image.fromarray(arr, mode).save(root / "train" / f"r_{k}.png")
        pose = look_at([np.sin(k), 1.0, 4 * np.cos(k)]) if poses is None else poses[k]
        frames.append({"file_path": f"./train/r_{k}", "rotation": 0.0, "transform_matrix": np.asarray(pose).tolist()})
    meta = {"camera_angle_x": 0.6911, "frames": frames, **(meta_extra or {})}
    (root / "transforms_train.json").write_text(json.dumps(meta))
    return root


def test_blender_loader_reads_images_cameras_and_focal(tmp_path):
    data = load_blender(write_blender(tmp_path))
    assert data["images"].shape == (3, 6, 8, 4) and data["images"].dtype == np.float32
    assert 0 <= data["images"].min() and data["images"].max() <= 1
    np.testing.assert_allclose(data["focal"], 4 / np.tan(0.6911 / 2), rtol=1e-6)
    np.testing.assert_allclose(data["c2w"][1], look_at([np.sin(1), 1.0, 4 * np.cos(1)]), atol=1e-6)
    first = np.asarray(Image.open(tmp_path / "train" / "r_0.png"), np.float32) / 255
    np.testing.assert_allclose(data["images"][0], first)


@pytest.mark.parametrize("text, message", [
    ("{\"camera_angle_x\": 0.5, \"frames\": [", "malformed JSON"),
    ("{\"frames\": []}", "camera_angle_x"),
    ("{\"camera_angle_x\": 0.5, \"frames\": [{\"file_path\": \"./train/r_0\"}]}", "transform_matrix"),
    ("{\"camera_angle_x\": 0.5, \"frames\": [{\"file_path\": \"./nope\", \"transform_matrix\": [[1,0,0,0],[0,1,0,0],[0,0,1,0],[0,0,0,1]]}]}",
     "does not exist"),
    ("{\"camera_angle_x\": 0.5, \"frames\": [{\"file_path\": \"./train/r_0\", \"transform_matrix\": [[1,0,0],[0,1,0]]}]}",
     "must be 4×4"),
])
def test_blender_loader_rejects_malformed_transforms(tmp_path, text, message):
    write_blender(tmp_path, n=1)
    (tmp_path / "transforms_train.json").write_text(text)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        load_blender(tmp_path)


def test_blender_loader_rejects_mixed_sizes_and_non_rigid_cameras(tmp_path):
    with pytest.raises(ValueError, match="same size"):
        load_blender(write_blender(tmp_path / "a", sizes=[(6, 8), (6, 8), (7, 8)]))
    sheared = look_at([0, 1, 4]); sheared[0, 1] += 0.3
    with pytest.raises(ValueError, match="camera 1 is not rigid"):
        load_blender(write_blender(tmp_path / "b", n=2, poses=[look_at([0, 1, 4]), sheared]))
    with pytest.raises(FileNotFoundError, match="transforms_train.json"):
        load_blender(tmp_path / "missing")


def test_tiny_nerf_loader(tmp_path):
    poses = np.stack([look_at([0, 0, 4]), look_at([4, 0, 0])])
    np.savez(tmp_path / "tiny.npz", images=np.random.default_rng(0).uniform(size=(2, 5, 7, 3)).astype(np.float32),
             poses=poses, focal=np.array(9.5))
    data = load_tiny_nerf(tmp_path / "tiny.npz")
    assert data["images"].shape == (2, 5, 7, 3) and data["height"] == 5 and data["width"] == 7
    assert data["focal"] == 9.5
    np.savez(tmp_path / "bad.npz", images=np.zeros((2, 5, 7, 3)), poses=poses)
    with pytest.raises(ValueError, match=r"lacks the arrays \['focal'\]"):
        load_tiny_nerf(tmp_path / "bad.npz")
    np.savez(tmp_path / "bad2.npz", images=np.zeros((3, 5, 7, 3)), poses=poses, focal=1.0)
    with pytest.raises(ValueError, match="one pose each"):
        load_tiny_nerf(tmp_path / "bad2.npz")


def test_missing_masks_are_reported_for_the_method_that_needs_them():
    with pytest.raises(ValueError, match="NeRD needs foreground masks for the 'train' views"):
        require_masks({"rgb_train": np.zeros((1, 2, 2, 3))}, "train", "NeRD")


@pytest.mark.parametrize("name", SCENES)
def test_shipped_scene_is_complete_and_consistent(name):
    s = load_scene(name)
    assert s["rgb_train"].shape == (100, 64, 64, 3) and s["rgb_test"].shape == s["rgb_test_b"].shape == (10, 64, 64, 3)
    assert s["meta"]["renderer"].startswith("Mitsuba 3")
    check_c2w(s["c2w_train"]); check_c2w(s["c2w_test"])
    # every camera looks at the origin from the upper hemisphere
    for c2w in np.concatenate([s["c2w_train"], s["c2w_test"]]):
        forward = -c2w[:3, 2]
        assert c2w[1, 3] > 0 and forward @ (-c2w[:3, 3]) / np.linalg.norm(c2w[:3, 3]) > 0.999
    inside = s["mask_test"] > 0.99
    assert 0.1 < inside.mean() < 0.6
    # the background is black (the environment is hidden from camera rays) and the object is lit
    assert s["rgb_test"][s["mask_test"] == 0].max() == 0 and s["rgb_test"][inside].mean() > 0.2
    np.testing.assert_allclose(np.linalg.norm(s["normal_test"][inside], axis=-1), 1, atol=1e-5)
    assert s["envmap_a"].shape == (64, 128, 3) and not np.allclose(s["envmap_a"], s["envmap_b"])
    # relighting changes the images: A and B views differ clearly
    assert np.abs(s["rgb_test"] - s["rgb_test_b"])[inside].mean() > 0.05
    rays = scene_rays(s, "train")
    assert rays["origins"].shape == (100 * 64 * 64, 3) and "mask" in rays
    assert nearest_view_baseline(s).shape == s["rgb_test"].shape


def test_sphere_scene_depth_and_normals_match_the_analytic_sphere():
    """Mitsuba's depth AOV is a distance along the ray, and our pixel-centre rays are Mitsuba's rays:
    inside the silhouette the stored depth equals the analytic ray–sphere distance of our rays (less the
    near-clip offset)."""
    s = load_scene("sphere")
    depth = s["depth_test"]
    for k in range(3):
        o, d = camera_rays(64, 64, s["focal"], s["c2w_test"][k])
        t, _, hit = sphere_intersect(o.reshape(-1, 3), d.reshape(-1, 3), 1.0)
        inside = (s["mask_test"][k] > 0.99).ravel() & hit.numpy()
        # away from the silhouette, where the depth varies slowly across a pixel
        interior = inside & (t.numpy() < np.quantile(t.numpy()[inside], 0.5))
        # Mitsuba starts camera rays on the near-clip plane (near_clip = 0.01 by default), so its depth is
        # the distance from there: t − 0.01/cos(angle to the optical axis). Float16 storage (±0.002) and the
        # 16-sample average over each pixel's footprint (where the depth varies) add a little noise.
        cos_axis = d.reshape(-1, 3) @ -s["c2w_test"][k][:3, 2]
        err = depth[k].ravel()[interior] + 0.01 / cos_axis[interior] - t.numpy()[interior]
        assert np.abs(err).max() < 1e-2 and abs(err.mean()) < 1e-3, (np.abs(err).max(), err.mean())
        assert np.abs(depth[k].ravel()[interior] - t.numpy()[interior]).mean() > 8e-3   # the offset is real
        x = o.reshape(-1, 3) + t.numpy()[:, None] * d.reshape(-1, 3)
        cos = np.sum(s["normal_test"][k].reshape(-1, 3)[interior] * x[interior], -1)
        assert np.degrees(np.arccos(np.clip(cos, -1, 1))).mean() < 2.0


MITSUBA_CHECK = textwrap.dedent("""
    import json, numpy as np, mitsuba as mi
    mi.set_variant('scalar_rgb')
    T = mi.ScalarTransform4f
    out = {}
    # camera convention: look_at from (3, 0, 0) to the origin
    s = mi.load_dict({'type': 'perspective', 'fov': 40, 'fov_axis': 'x', 'to_world': T().look_at(origin=[3, 0, 0],
                      target=[0, 0, 0], up=[0, 1, 0]), 'film': {'type': 'hdrfilm', 'width': 4, 'height': 4}})
    out['c2w'] = np.array(s.world_transform().matrix).tolist()
    ray, _ = s.sample_ray(0.0, 0.5, mi.ScalarPoint2f(0.125, 0.125), mi.ScalarPoint2f(0.5, 0.5))
    out['ray_corner'] = list(ray.d)
    # environment-map convention: the colour seen along 4 horizon directions and straight up
    H, W = 16, 32
    env = np.zeros((H, W, 3), np.float32)
    env[..., 0] = (np.arange(W) + 0.5) / W
    env[..., 1] = ((np.arange(H) + 0.5) / H)[:, None]
    scene = mi.load_dict({'type': 'scene', 'integrator': {'type': 'path'},
                          'emitter': {'type': 'envmap', 'bitmap': mi.Bitmap(env)}})
    seen = {}
    for name, d in {'+X': [1, 0, 0], '+Z': [0, 0, 1], '-X': [-1, 0, 0], 'up45': [0, 1, 1]}.items():
        up = [0, 1, 0] if name != 'up45' else [0, 0, 1]
        cam = mi.load_dict({'type': 'perspective', 'fov': 0.5, 'to_world': T().look_at(origin=[0, 0, 0], target=d, up=up),
                            'film': {'type': 'hdrfilm', 'width': 1, 'height': 1, 'rfilter': {'type': 'box'}}})
        seen[name] = np.array(mi.render(scene, sensor=cam, spp=4))[0, 0, :2].tolist()
    out['env'] = seen
    print(json.dumps(out))
""")


FIXTURE = Path(__file__).resolve().parents[1] / "data" / "neural_rendering" / "mitsuba_conventions.json"


def check_conventions(out):
    "Our camera and lat-long conventions against what Mitsuba 3 (scalar_rgb) reported for the same set-up."
    # NeRF c2w = Mitsuba c2w @ diag(−1, 1, −1, 1)
    np.testing.assert_allclose(mitsuba_to_nerf_c2w(np.array(out["c2w"])), look_at([3, 0, 0]), atol=1e-6)
    # Mitsuba's ray through the centre of pixel (0, 0) is ours
    _, dirs = camera_rays(4, 4, 2 / np.tan(np.radians(20)), look_at([3, 0, 0]))
    np.testing.assert_allclose(out["ray_corner"], dirs[0, 0], atol=1e-5)
    # lat-long: the env colour encodes (u, v) of the pixel seen; u = ¼ at +X, ½ at +Z, ¾ at −X, row = acos(y)/π
    for name, d in {"+X": [1, 0, 0], "+Z": [0, 0, 1], "-X": [-1, 0, 0], "up45": [0, 0.7071, 0.7071]}.items():
        u, v = out["env"][name]
        grid = latlong_directions(16, 32)
        r, c = np.unravel_index(np.argmax(grid @ np.array(d)), grid.shape[:2])
        assert abs(u - (c + 0.5) / 32) < 1.5 / 32 and abs(v - (r + 0.5) / 16) < 1.5 / 16, (name, u, v, r, c)


def test_mitsuba_conventions_against_the_committed_fixture():
    # data/neural_rendering/mitsuba_conventions.json is MITSUBA_CHECK's output with Mitsuba 3.9.1, scalar_rgb:
    # `make test` needs no Mitsuba, and the relighting's envmap convention is still checked in CI
    check_conventions(json.loads(FIXTURE.read_text()))


def test_a_flipped_convention_fails_the_check():
    out = json.loads(FIXTURE.read_text())
    out["env"]["+X"], out["env"]["-X"] = out["env"]["-X"], out["env"]["+X"]      # east and west swapped
    with pytest.raises(AssertionError):
        check_conventions(out)


def test_mitsuba_conventions():
    if importlib.util.find_spec("mitsuba") is None:     # not importorskip: see below
        pytest.skip("Mitsuba 3 is not installed (optional: pip install mitsuba); the fixture test covers CI")
    # run in a separate interpreter: Mitsuba and TensorFlow in one process clash at exit
    res = subprocess.run([sys.executable, "-c", MITSUBA_CHECK], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    check_conventions(out)
    fixture = json.loads(FIXTURE.read_text())      # the committed fixture is what this Mitsuba says
    np.testing.assert_allclose(out["c2w"], fixture["c2w"], atol=1e-6)
    for name in fixture["env"]:
        np.testing.assert_allclose(out["env"][name], fixture["env"][name], atol=2e-3)


def test_masked_psnr_and_albedo_alignment_against_independent_computations():
    from imgsci.neural_rendering.scenes import align_albedo, masked_ssim, psnr
    rng = np.random.default_rng(3)
    truth = rng.uniform(0.1, 0.9, (2, 12, 12, 3))
    pred = np.clip(truth + rng.normal(0, 0.05, truth.shape), 0, 1)
    mask = np.zeros((2, 12, 12), bool); mask[:, 3:9, 2:10] = True
    pred_bg = np.where(mask[..., None], pred, 0.0)                     # the background is black: ignored when masked
    mse = np.mean([(pred[i, r, c, k] - truth[i, r, c, k]) ** 2 for i, r, c in zip(*np.nonzero(mask)) for k in range(3)])
    assert abs(psnr(pred_bg, truth, mask) - 10 * math.log10(1 / mse)) < 1e-9
    assert psnr(pred_bg, truth) < psnr(pred_bg, truth, mask) - 5
    assert abs(masked_ssim(truth, truth, mask) - 1) < 1e-9 and masked_ssim(pred_bg, truth, mask) < 0.99
    # alignment: per-channel median of truth/pred over the mask, by hand; outliers outside the mask do not count
    scale = np.array([0.5, 2.0, 1.3])
    dark = truth / scale
    dark[~mask] = 1e-3
    ratios = [sorted((truth[..., k] / dark[..., k])[mask]) for k in range(3)]
    by_hand = np.array([(r[len(r) // 2 - 1] + r[len(r) // 2]) / 2 for r in ratios])   # even count: mean of the middle two
    np.testing.assert_allclose(by_hand, scale, rtol=1e-9)
    np.testing.assert_allclose(align_albedo(dark, truth, mask)[mask], np.clip(truth, 0, 1)[mask], atol=1e-6)


def test_direct_light_views_lack_interreflection_on_the_torus_only():
    # scripts/render_neural_rendering_scenes.py --direct-only: max_depth 2. Light cannot bounce between the
    # surfaces of a convex sphere, so direct light is all of it (up to noise); the torus's inner side receives
    # light from the torus itself, so its direct-light views are darker than the path-traced ones
    ratio = {}
    for name in ("sphere", "torus"):
        s = load_scene(name)
        assert "rgb_test_direct" in s and "rgb_test_b_direct" in s, "re-render with --direct-only"
        obj = s["mask_test"] > 0.5
        np.testing.assert_allclose(s["mask_test_direct"], s["mask_test"], atol=0.2)   # same views, same coverage
        ratio[name] = [s[f"rgb_test{k}_direct"][obj].mean() / s[f"rgb_test{k}"][obj].mean() for k in ("", "_b")]
    assert all(abs(r - 1) < 0.003 for r in ratio["sphere"]), ratio
    assert all(r < 0.995 for r in ratio["torus"]), ratio
