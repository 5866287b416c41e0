"""Test infrastructure shared by every test.

Every test process gets its own ROS_DOMAIN_ID (claimed with a lock file, see _claim_domain_id),
ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST (DDS never leaves the machine) and a temporary ROS_HOME,
set before anything imports rclpy. The Fast DDS shared-memory files this session creates are
removed at the end.
"""

from __future__ import annotations

import fcntl
import os
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures"
SHM = Path("/dev/shm")


def _claim_domain_id() -> int:
    """A ROS_DOMAIN_ID that no other process on this machine holds, for this process's life.

    Each id is an flock on a file in the temp dir; the kernel drops it when the process ends, so
    a crashed run never leaks one. Two pytest sessions (or xdist workers) running at once thus
    never share a domain and cannot hear each other's nodes. Children (node processes started by
    tests) inherit the id through the environment.
    """
    start = os.getpid()
    for k in range(100):
        domain = 1 + (start + k) % 100  # Linux allows 0..101 with the default port mapping
        handle = open(Path(tempfile.gettempdir()) / f"sa2va_ros_domain_{domain}.lock", "w")  # noqa: SIM115
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        _DOMAIN_LOCKS.append(handle)  # held open (and locked) until this process exits
        return domain
    raise RuntimeError("all ROS domain ids 1..100 are held by other test processes on this machine")


_DOMAIN_LOCKS: list = []
# Set at import time (before any test module imports rclpy), not in a fixture.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["ROS_DOMAIN_ID"] = str(_claim_domain_id())
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
