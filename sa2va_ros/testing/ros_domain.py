"""A ROS domain of this process's own, on loopback only: for tests, benchmarks and soak runs.

Each domain id is an flock on a file in the temp dir, held until the process ends (the kernel
drops it when the process dies, so a crashed run never leaks one). Two test sessions or
benchmarks running at once thus never share a domain and cannot hear each other's nodes.
Children (node processes they start) inherit the id through the environment.
"""

from __future__ import annotations

import fcntl
import os
import sys
import tempfile
from pathlib import Path
from typing import IO

_HELD: list[IO[str]] = []


def claim_domain_id() -> int:
    """A ROS_DOMAIN_ID that no other process on this machine holds, for this process's life."""
    start = os.getpid()
    for k in range(100):
        domain = 1 + (start + k) % 100  # Linux allows 0..101 with the default port mapping
        handle = open(Path(tempfile.gettempdir()) / f"sa2va_ros_domain_{domain}.lock", "w")  # noqa: SIM115
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        _HELD.append(handle)  # held open (and locked) until this process exits
        return domain
    raise RuntimeError("all ROS domain ids 1..100 are held by other processes on this machine")


def isolate() -> None:
    """Loopback discovery, and a domain of this process's own unless the caller chose one."""
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    if "ROS_DOMAIN_ID" not in os.environ:
        os.environ["ROS_DOMAIN_ID"] = str(claim_domain_id())


def bench_environment(prefix: str) -> Path:
    """Set up a benchmark process like a test session: isolated ROS, no hub, its own ROS_HOME.

    Returns the new work folder (under the temp dir) that ROS_HOME points into unless the
    caller set one; node processes started from here inherit all of it.
    """
    isolate()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ.setdefault("ROS_HOME", str(work / "ros_home"))
    os.environ.setdefault("AMENT_PREFIX_PATH", sys.prefix)
    return work
