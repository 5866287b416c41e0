"""The ROS-free 3D geometry (sa2va_ros.depth3d) on rendered depth with known ground truth.

Acceptance (issue 12): spheres and boxes at 0.5-3 m, 1 % depth noise, 5 % flying pixels
along silhouettes, holes, masks that bleed onto the background; centroid within 1 cm + 1 % of
the depth of the true visible-surface centroid, extent within 2 cm + 2 %; 16UC1 and 32FC1;
depth at half the colour resolution; a distorted (plumb_bob) camera.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from _depth_scene import Box, Intrinsics, Sphere, add_defects, bleed, cast, to_16uc1, truth

from sa2va_ros.depth3d import (
    CameraModel,
    CameraModelError,
    DepthImage,
    DepthImageError,
    GeometrySettings,
    StampPairer,
    measure,
    measure_all,
)

H, W = 480, 640
PLUMB_BOB = (-0.28, 0.09, 0.001, -0.0015, 0.0)  # a wide-angle webcam's barrel distortion
SCENES = {
    # name: (shapes, wall distance). Boxes are turned so two side faces show, and straddle the
    # camera height: a face seen at under ~15 degrees loses its far edge (see README, limits).
    "near": ([Sphere((-0.08, 0.0, 0.5), 0.05), Box((0.09, 0.02, 0.6), (0.05, 0.04, 0.04), 0.6)], 1.2),
    "mid": ([Sphere((0.6, 0.38, 1.5), 0.1), Box((-0.3, -0.05, 1.4), (0.12, 0.12, 0.08), -0.5)], 2.5),
    "far": ([Sphere((-0.4, 0.1, 3.0), 0.15), Box((1.1, 0.05, 2.9), (0.15, 0.15, 0.12), 0.8)], 4.0),
}


def _check(result, centroid, extent, what: str) -> None:
    z = float(centroid[2])
    assert result.valid, f"{what}: {result.reason}"
    err = float(np.linalg.norm(result.centroid - centroid))
    assert err <= 0.01 + 0.01 * z, f"{what}: centroid off by {err * 100:.2f} cm at {z:.2f} m"
    ext_err = np.abs(result.size - extent)
    assert np.all(ext_err <= 0.02 + 0.02 * z), (
        f"{what}: extent {result.size} vs true {extent} (error {ext_err} m) at {z:.2f} m"
    )
    assert result.point_count >= 20 and 0 < len(result.points) <= GeometrySettings().max_points


def _scene(name: str, cam: Intrinsics, seed: int, depth_scale: int = 1):
    shapes, wall = SCENES[name]
    depth, label = cast(shapes, wall, cam, H, W)
    rng = np.random.default_rng(seed)
    if depth_scale == 1:
        sensed = add_defects(depth, label, rng)
    else:  # the depth camera's own grid: a coarser registered image of the same scene
        dcam = cam.scaled(1.0 / depth_scale)
        d_small, l_small = cast(shapes, wall, dcam, H // depth_scale, W // depth_scale)
        sensed = add_defects(d_small, l_small, rng)
    return shapes, depth, label, sensed


@pytest.mark.parametrize("encoding", ["32FC1", "16UC1"])
@pytest.mark.parametrize("depth_scale", [1, 2])
@pytest.mark.parametrize("distorted", [False, True])
@pytest.mark.parametrize("name", list(SCENES))
def test_centroid_and_extent_within_tolerance(name, distorted, depth_scale, encoding):
    cam = Intrinsics(d=PLUMB_BOB if distorted else ())
    shapes, depth, label, sensed = _scene(
        name, cam, seed=len(name) + 7 * depth_scale, depth_scale=depth_scale
    )
    image = DepthImage(to_16uc1(sensed), 0.001) if encoding == "16UC1" else DepthImage.from_metres(sensed)
    model = CameraModel(cam.k, cam.d, "plumb_bob", W, H)
    for i in range(len(shapes)):
        mask = bleed(label == i + 1, 2)  # the segmentation spills 2 px onto the background
        centroid, extent = truth(depth, label, cam, i + 1)
        what = f"{name} {type(shapes[i]).__name__} {encoding} depth/{depth_scale} distorted={distorted}"
        _check(measure(mask, image, model), centroid, extent, what)


def test_rational_polynomial_camera():
    d = (0.1, -0.2, 0.0005, -0.001, 0.05, 0.02, -0.03, 0.01)
    cam = Intrinsics(d=d)
    shapes, depth, label, sensed = _scene("mid", cam, seed=3)
    model = CameraModel(cam.k, d, "rational_polynomial", W, H)
    for i in range(len(shapes)):
        centroid, extent = truth(depth, label, cam, i + 1)
        _check(
            measure(bleed(label == i + 1, 2), DepthImage.from_metres(sensed), model), centroid, extent, "rp"
        )


def test_ignoring_distortion_would_fail():
    """The distorted-camera tests can fail: an undistorted model misplaces the far sphere."""
    cam = Intrinsics(d=PLUMB_BOB)
    shapes, depth, label, sensed = _scene("mid", cam, seed=5)
    centroid, _ = truth(depth, label, cam, 1)  # the sphere near the image corner
    wrong = measure(bleed(label == 1, 2), DepthImage.from_metres(sensed), CameraModel(cam.k, (), "plumb_bob"))
    assert np.linalg.norm(wrong.centroid - centroid) > 0.01 + 0.01 * centroid[2]


def test_mask_mostly_background_still_finds_the_object():
    """A mask that covers more wall than object: the nearest dominant depth cluster is the object."""
    cam = Intrinsics()
    shapes, depth, label, sensed = _scene("mid", cam, seed=11)
    centroid, extent = truth(depth, label, cam, 1)
    mask = bleed(label == 1, 25)
    assert (label[mask] == 0).mean() > 0.5
    _check(measure(mask, DepthImage.from_metres(sensed), CameraModel(cam.k)), centroid, extent, "bleed 25 px")


def test_without_filters_flying_pixels_and_background_break_it():
    """The filters matter: with erosion, the edge filter and clustering off, the same input fails."""
    cam = Intrinsics()
    shapes, depth, label, sensed = _scene("mid", cam, seed=11)
    centroid, extent = truth(depth, label, cam, 1)
    raw = GeometrySettings(erode_px=0, jump_ratio=1e9, bin_ratio=100.0, trim=0.0)
    naive = measure(bleed(label == 1, 6), DepthImage.from_metres(sensed), CameraModel(cam.k), raw)
    assert np.abs(naive.size - extent).max() > 0.02 + 0.02 * centroid[2]


def test_too_few_points_gives_no_position_and_the_reason():
    cam = Intrinsics()
    shapes, depth, label, _ = _scene("mid", cam, seed=1)
    holes = np.where(label == 1, 0.0, depth)  # the sphere returns no depth (e.g. it is glass)
    r = measure(label == 1, DepthImage.from_metres(holes), CameraModel(cam.k))
    assert not r.valid and np.isnan(r.centroid).all() and "depth holes" in r.reason and r.point_count == 0
    out_of_range = measure(
        label == 1, DepthImage.from_metres(depth), CameraModel(cam.k), GeometrySettings(max_depth=1.0)
    )
    assert not out_of_range.valid and "[0.1, 1] m" in out_of_range.reason
    empty = measure(np.zeros((H, W), bool), DepthImage.from_metres(depth), CameraModel(cam.k))
    assert not empty.valid and "empty" in empty.reason
    results = measure_all([None, label == 2], DepthImage.from_metres(depth), CameraModel(cam.k))
    assert [r.valid for r in results] == [False, True]


def test_nan_inf_and_zero_are_not_points():
    cam = Intrinsics()
    shapes, depth, label, _ = _scene("near", cam, seed=2)
    centroid, extent = truth(depth, label, cam, 2)
    bad = depth.astype(np.float32).copy()
    rng = np.random.default_rng(0)
    pick = rng.random(bad.shape)
    bad[pick < 0.1] = np.nan
    bad[(pick >= 0.1) & (pick < 0.2)] = np.inf
    bad[(pick >= 0.2) & (pick < 0.3)] = 0.0
    bad[(pick >= 0.3) & (pick < 0.32)] = -1.0
    _check(
        measure(label == 2, DepthImage.from_metres(bad), CameraModel(cam.k)), centroid, extent, "nan/inf/0"
    )


def test_depth_at_twice_the_colour_resolution():
    cam = Intrinsics()
    shapes, wall = SCENES["mid"]
    depth, label = cast(shapes, wall, cam, H, W)
    big, big_label = cast(shapes, wall, cam.scaled(2.0), 2 * H, 2 * W)
    centroid, extent = truth(depth, label, cam, 2)
    sensed = add_defects(big, big_label, np.random.default_rng(4))
    _check(
        measure(bleed(label == 2, 2), DepthImage.from_metres(sensed), CameraModel(cam.k)),
        centroid,
        extent,
        "x2",
    )


# --------------------------------------------------------------------------- bad inputs


def test_depth_size_that_fits_no_scaling_is_a_clear_error():
    model = CameraModel(Intrinsics().k, (), "plumb_bob", W, H)
    mask = np.ones((H, W), bool)
    for shape in [(480, 600), (240, 400), (300, 400), (720, 1280)]:
        with pytest.raises(DepthImageError, match="integer"):
            measure(mask, DepthImage.from_metres(np.ones(shape, np.float32)), model)


def test_camera_info_size_that_fits_no_scaling_is_a_clear_error():
    model = CameraModel(Intrinsics().k, (), "plumb_bob", 1280, 720)
    with pytest.raises(DepthImageError, match="camera_info is 1280x720"):
        measure(np.ones((H, W), bool), DepthImage.from_metres(np.ones((H, W), np.float32)), model)


def test_unsupported_encoding_is_a_clear_error():
    data = np.zeros(4 * 4 * 3, np.uint8).tobytes()
    with pytest.raises(DepthImageError, match="'rgb8' is not supported.*16UC1"):
        DepthImage.from_buffer(data, "rgb8", 4, 4, 12, False)
    with pytest.raises(DepthImageError, match="too small"):
        DepthImage.from_buffer(data[:10], "16UC1", 4, 4, 8, False)


def test_buffer_layouts_decode_to_the_same_metres():
    mm = np.array([[1000, 0, 2500], [65535, 1, 300]], np.uint16)
    padded = np.zeros((2, 8), np.uint8)
    padded[:, :6] = mm.view(np.uint8).reshape(2, 6)
    a = DepthImage.from_buffer(padded.tobytes(), "16UC1", 3, 2, 8, False).metres()
    b = DepthImage.from_buffer(mm.astype(">u2").tobytes(), "16UC1", 3, 2, 6, True).metres()
    np.testing.assert_array_equal(np.isnan(a), mm == 0)
    np.testing.assert_allclose(a[mm > 0], mm[mm > 0] * 0.001, rtol=1e-6)
    np.testing.assert_array_equal(a, b)
    metres = np.array([[1.5, np.nan], [np.inf, 0.0]], np.float32)
    c = DepthImage.from_buffer(metres.tobytes(), "32FC1", 2, 2, 8, False).metres()
    assert c[0, 0] == np.float32(1.5) and np.isnan(c.ravel()[1:]).all()


def test_k_all_zero_and_bad_calibrations_are_clear_errors():
    with pytest.raises(CameraModelError, match="K is all zero.*not calibrated"):
        CameraModel([0.0] * 9)
    with pytest.raises(CameraModelError, match="pinhole"):
        CameraModel([-600, 0, 320, 0, 600, 240, 0, 0, 1])
    with pytest.raises(CameraModelError, match="not supported"):
        CameraModel(Intrinsics().k, (0.1, 0.2, 0.0, 0.0, 0.1), "kannala_brandt")
    with pytest.raises(CameraModelError, match="plumb_bob needs 5"):
        CameraModel(Intrinsics().k, (0.1, 0.2, 0.3), "plumb_bob")
    with pytest.raises(CameraModelError, match="finite"):
        CameraModel([np.nan] * 9)


def test_geometry_imports_no_ros():
    code = (
        "import sys, sa2va_ros.depth3d\n"
        "roots = {'rclpy', 'sa2va_msgs', 'std_msgs', 'sensor_msgs', 'geometry_msgs', 'visualization_msgs',"
        " 'rosidl_parser'}\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in roots or m.startswith(('sa2va_ros.node',"
        " 'sa2va_ros.msg', 'sa2va_ros.model', 'torch')))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"sa2va_ros.depth3d imports ROS / the model: {proc.stdout} {proc.stderr}"


# --------------------------------------------------------------------------- stamp pairing


def test_pairing_exact_nearest_within_slop_and_unmatched():
    pairer = StampPairer(slop=0.02, keep=3)
    for k, stamp in enumerate([1_000_000_000, 1_033_000_000, 1_066_000_000]):
        pairer.add(stamp, f"depth{k}")
    assert pairer.match(1_033_000_000) == "depth1"  # exact
    assert pairer.match(1_050_000_000) == "depth2"  # nearest: 16 ms (depth1 is 17 ms away)
    assert pairer.match(1_049_000_000) == "depth1"
    assert pairer.match(1_100_000_000) is None  # 34 ms from the nearest
    assert pairer.stats.unmatched == 1 and abs(pairer.stats.last_gap - 0.034) < 1e-9
    pairer.slop = 0.0
    assert pairer.match(1_066_000_001) is None and pairer.match(1_066_000_000) == "depth2"
    pairer.add(2_000_000_000, "depth3")  # keeps the last 3: depth0 is gone
    assert pairer.match(1_000_000_000) is None
    assert pairer.stats.depth_received == 4 and pairer.stats.matched == 4
    assert pairer.seconds_since_depth() is not None and pairer.seconds_since_depth() < 5.0


def test_pairing_before_any_depth():
    pairer = StampPairer(slop=1.0)
    assert pairer.match(5) is None and pairer.stats.last_gap is None and pairer.seconds_since_depth() is None
