"""Test infrastructure shared by every test.

Every test process gets its own ROS_DOMAIN_ID, ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST (DDS
never leaves the machine) and a temporary ROS_HOME, set before anything imports rclpy. The Fast
DDS shared-memory files this session creates are removed at the end.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures"
SHM = Path("/dev/shm")


def _domain_id() -> int:
    """A domain id distinct per parallel test process (pytest-xdist worker or plain pid)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker.startswith("gw") and worker[2:].isdigit():
        return 60 + int(worker[2:]) % 40
    return 1 + os.getpid() % 59  # Linux allows domain ids 0..101 with the default port mapping


# Set at import time (before any test module imports rclpy), not in a fixture.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(_domain_id()))
os.environ["RMW_IMPLEMENTATION"] = os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
_ros_home = tempfile.mkdtemp(prefix="sa2va_ros_home_")
os.environ["ROS_HOME"] = _ros_home
os.environ["ROS_LOG_DIR"] = str(Path(_ros_home) / "log")
os.environ.setdefault("AMENT_PREFIX_PATH", sys.prefix)
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach for the hub
_shm_before = {p.name for p in SHM.glob("fast*")} if SHM.is_dir() else set()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove the Fast DDS shared-memory segments and locks created during this session."""
    if not SHM.is_dir():
        return
    for path in SHM.glob("fast*"):
        if path.name not in _shm_before:
            try:
                path.unlink()
            except OSError:
                pass


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """../shared/fixtures: tiny official-layout checkpoints with the official outputs."""
    if not FIXTURES.is_dir():
        pytest.skip(
            f"{FIXTURES} is missing: the parity fixtures come from the shared/ folder that sits beside "
            "the project checkout (CI always has it)."
        )
    return FIXTURES


@pytest.fixture()
def ros_env() -> dict[str, str]:
    """Environment for child processes: same domain, loopback only, same ROS_HOME."""
    return dict(os.environ)
