#!/usr/bin/env bash
# `make demo`: the node end to end on this machine, offline, in about a minute.
#   1. set up .venv (idempotent), write a tiny offline checkpoint to .venv/demo_model
#   2. start sa2va_demo_camera (a synthetic moving scene, with registered depth and camera_info)
#      and sa2va_node on it (depth_enabled: 3D positions)
#   3. send the command "the red circle", ask a question, save the overlay to docs/overlay.png,
#      print the tracked object's 3D position
#   4. stop both processes cleanly (SIGINT, as Ctrl-C would)
# Logs go to demo_out/. Knobs: SA2VA_DEMO_MODEL=path (another checkpoint, e.g. a local
# ByteDance/Sa2VA-1B copy), SA2VA_DEMO_DEVICE=cpu|cuda, SA2VA_DEMO_OUT=file.png.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST   # DDS never leaves this machine
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$((1 + $$ % 59))}"

./scripts/setup.sh
# shellcheck disable=SC1091
. scripts/env.sh
# Frames over 512 KB sent best_effort need Fast DDS's larger shared-memory segment (see the file).
export FASTDDS_DEFAULT_PROFILES_FILE="${FASTDDS_DEFAULT_PROFILES_FILE:-$ROOT/config/fastdds_large_data.xml}"

VENV="${SA2VA_VENV:-$ROOT/.venv}"
MODEL="${SA2VA_DEMO_MODEL:-$VENV/demo_model}"
DEVICE="${SA2VA_DEMO_DEVICE:-cpu}"
SHOT="${SA2VA_DEMO_OUT:-$ROOT/docs/overlay.png}"
LOGS="$ROOT/demo_out"
mkdir -p "$LOGS"

if [ ! -f "$MODEL/model.safetensors" ]; then
  python scripts/demo_client.py --write-model "$MODEL"
fi

PIDS=()
stop_all() {
  for pid in "${PIDS[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
}
trap stop_all EXIT

echo "demo: starting sa2va_demo_camera and sa2va_node (model $MODEL on $DEVICE; logs in demo_out/)"
sa2va_demo_camera --ros-args -p width:=320 -p height:=240 -p rate:=10.0 >"$LOGS/camera.log" 2>&1 &
PIDS+=($!)
sa2va_node --ros-args -p model:="$MODEL" -p device:="$DEVICE" -p overlay_rate:=5.0 \
  -p presence_threshold:=0.3 -p depth_enabled:=true >"$LOGS/node.log" 2>&1 &
PIDS+=($!)

status=0
python scripts/demo_client.py --out "$SHOT" || status=$?
stop_all
trap - EXIT
echo "----- sa2va_node log (demo_out/node.log) -----"
tail -n 12 "$LOGS/node.log"
if [ "$status" -ne 0 ]; then
  echo "demo: FAILED (see demo_out/)" >&2
  exit "$status"
fi
echo "demo: done; the overlay screenshot is $SHOT"
