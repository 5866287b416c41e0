"""Masks + a registered depth image -> where each object is in 3D (ROS-free: numpy and opencv).

* :mod:`.depth_image`: depth pixels (16UC1 millimetres / 32FC1 metres) and their scale to the
  colour image.
* :mod:`.camera_model`: pinhole intrinsics with the CameraInfo distortion models; the
  undistorted ray of every depth pixel, computed once per calibration and cached.
* :mod:`.geometry`: one object's 3D centroid, box and points, robust to mask edges, flying
  pixels, background depth and holes.
* :mod:`.pairing`: colour frames matched to depth frames by header stamp.

The node's 3D stage (sa2va_ros/node/depth.py) converts ROS messages into these types; nothing
here imports ROS, so the geometry is tested and benchmarked without it.
"""

from .camera_model import CameraModel, CameraModelError
from .depth_image import DepthImage, DepthImageError
from .geometry import GeometrySettings, ObjectGeometry, measure, measure_all
from .pairing import StampPairer

__all__ = [
    "CameraModel",
    "CameraModelError",
    "DepthImage",
    "DepthImageError",
    "GeometrySettings",
    "ObjectGeometry",
    "StampPairer",
    "measure",
    "measure_all",
]
