"""The model core is ROS-free and test-free: importing its modules never imports rclpy, ROS messages
or the test support package (sa2va_ros.testing), and none of the writers' helpers lives in it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sa2va_ros"


def test_model_core_imports_nothing_from_ros():
    code = (
        "import sys\n"
        "import sa2va_ros.model.sa2va, sa2va_ros.model.tracker, sa2va_ros.testing.tiny_checkpoint\n"
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


def test_model_core_imports_no_test_code():
    """Every module of sa2va_ros.model, imported, leaves sa2va_ros.testing unimported."""
    modules = sorted(f"sa2va_ros.model.{p.stem}" for p in (PACKAGE / "model").glob("*.py"))
    assert len(modules) > 10
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m.startswith('sa2va_ros.testing'))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"test code imported by the model core: {proc.stdout} {proc.stderr[-2000:]}"


def _defined_functions(folder: Path) -> dict[str, str]:
    names = {}
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.col_offset == 0:
                names[node.name] = path.name
    return names


def test_no_writer_helper_lives_in_the_core():
    """The writers' helpers exist once, in sa2va_ros/testing; the core names none of them
    (neither by definition nor by an import of the testing package)."""
    core = _defined_functions(PACKAGE / "model")
    writers = _defined_functions(PACKAGE / "testing")
    assert {"tiny_qwen_vl_parts", "vision_to_official", "random_state", "tiny_sam2_config"} <= writers.keys()
    shared = {n: (core[n], writers[n]) for n in core.keys() & writers.keys() if not n.startswith("__")}
    assert not shared, f"defined in both the core and the writers: {shared}"
    for path in (PACKAGE / "model").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [("." * node.level) + (node.module or "")]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                assert "testing" not in name and "tiny_checkpoint" not in name, f"{path.name} imports {name}"
