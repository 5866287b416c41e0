"""The model core is ROS-free: importing and using its modules never imports rclpy or ROS messages."""

from __future__ import annotations

import subprocess
import sys


def test_model_core_imports_nothing_from_ros():
    code = (
        "import sys\n"
        "import sa2va_ros.model.sa2va, sa2va_ros.model.tracker, sa2va_ros.model.tiny_checkpoint\n"
        "import sa2va_ros.cli\n"
        "import sa2va_ros.eval.cli\n"
        "ros_roots = {'rclpy', 'std_msgs', 'sensor_msgs', 'rosidl_parser', 'sa2va_msgs'}\n"
        "ros = sorted(m for m in sys.modules if m.split('.')[0] in ros_roots"
        " or m.startswith('sa2va_ros.node'))\n"
        "print(ros)\n"
        "sys.exit(1 if ros else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"ROS modules imported by the model core: {proc.stdout} {proc.stderr}"
