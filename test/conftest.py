"""Test infrastructure shared by every test.

Every test process gets its own ROS_DOMAIN_ID (claimed with a lock file, see sa2va_ros.testing.ros_domain),
ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST (DDS never leaves the machine) and a temporary ROS_HOME,
set before anything imports rclpy. The Fast DDS shared-memory files this session creates are
removed at the end.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

from sa2va_ros.testing.ros_domain import claim_domain_id

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures"
SHM = Path("/dev/shm")


# Set at import time (before any test module imports rclpy), not in a fixture.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["ROS_DOMAIN_ID"] = str(claim_domain_id())
os.environ["RMW_IMPLEMENTATION"] = os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
_ros_home = tempfile.mkdtemp(prefix="sa2va_ros_home_")
os.environ["ROS_HOME"] = _ros_home
os.environ["ROS_LOG_DIR"] = str(Path(_ros_home) / "log")
os.environ.setdefault("AMENT_PREFIX_PATH", sys.prefix)
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach for the hub
_shm_before = {p.name for p in SHM.glob("fast*")} if SHM.is_dir() else set()


def _shm_in_use() -> set[str]:
    """Names under /dev/shm that a live process maps or holds open.

    Another pytest session (or a node it started) may be using segments created while this one
    ran: deleting those stalls its Fast DDS shared-memory transport for good (seen with several
    sessions at once: nodes stopped receiving anything, threads idle).
    """
    used: set[str] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            with open(proc / "maps") as maps:
                used.update(line.rsplit("/dev/shm/", 1)[1].strip() for line in maps if "/dev/shm/" in line)
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("/dev/shm/"):
                    used.add(target[len("/dev/shm/") :])
        except OSError:  # the process ended, or is not ours to read
            continue
    return used


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove the Fast DDS shared-memory segments and locks this session left behind.

    Only files created during the session that no live process still uses: those of other
    sessions running at the same time stay.
    """
    if not SHM.is_dir():
        return
    in_use = _shm_in_use()
    for path in SHM.glob("fast*"):
        if path.name not in _shm_before and path.name not in in_use:
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
