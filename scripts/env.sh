# Source this file to use the pip-only ROS 2 environment in .venv:  source scripts/env.sh
# (The venv is the ROS installation: nothing else to source.)
_sa2va_root="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
_sa2va_venv="${SA2VA_VENV:-$_sa2va_root/.venv}"
# shellcheck disable=SC1091
. "$_sa2va_venv/bin/activate"
export AMENT_PREFIX_PATH="$_sa2va_venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
export ROS_HOME="${ROS_HOME:-$_sa2va_venv/ros_home}"
# Keep DDS discovery on this machine unless you deliberately change it.
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
mkdir -p "$ROS_HOME"
unset _sa2va_root _sa2va_venv
