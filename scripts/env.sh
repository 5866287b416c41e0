# Source this file to use the pip-only ROS 2 environment in .venv:  source scripts/env.sh
# (The venv is the ROS installation: nothing else to source.)
_sa2va_root="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
# SA2VA_ROS_DISTRO=jazzy selects the Jazzy venv that `SA2VA_ROS_DISTRO=jazzy scripts/setup.sh` builds.
if [ "${SA2VA_ROS_DISTRO:-kilted}" = "jazzy" ]; then _sa2va_default=.venv-jazzy; else _sa2va_default=.venv; fi
_sa2va_venv="${SA2VA_VENV:-$_sa2va_root/$_sa2va_default}"
# shellcheck disable=SC1091
. "$_sa2va_venv/bin/activate"
export AMENT_PREFIX_PATH="$_sa2va_venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
export ROS_HOME="${ROS_HOME:-$_sa2va_venv/ros_home}"
# Keep DDS discovery on this machine unless you deliberately change it.
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
# Fast DDS's default shared-memory segment drops best-effort messages above ~512 KB (one 640x480
# rgb8 frame is 900 KB): use our profile with a 16 MB segment unless you chose one yourself.
export FASTDDS_DEFAULT_PROFILES_FILE="${FASTDDS_DEFAULT_PROFILES_FILE:-$_sa2va_root/config/fastdds_large_data.xml}"
mkdir -p "$ROS_HOME"
unset _sa2va_root _sa2va_venv _sa2va_default
