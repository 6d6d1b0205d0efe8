"""ROS 2 network isolation: a private DDS domain and localhost-only discovery for tests and the demo.

ROS 2 nodes find each other through DDS discovery on a *domain* (``ROS_DOMAIN_ID``, 0..232; the
safe range on Linux is 0..101). Two tests, or a test and a colleague's robot, on the same domain and
network would see each other's topics. So every test and the demo here:

* claims a domain id that no other process on this machine holds (a lock file per id under the
  temp dir, held with ``flock`` for the life of the claiming process -- the kernel releases it
  even if the process is killed), starting from one derived from the pid;
* sets ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` (Jazzy and newer; the installed rclpy is Kilted)
  and, for Humble/Iron, ``ROS_LOCALHOST_ONLY=1`` -- only when rclpy is older than Jazzy, since newer
  releases warn that the variable is deprecated.

On a real robot network leave these to the operator: set ``ROS_DOMAIN_ID`` to the robot's domain
and ``ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET`` (the README explains). No ROS import happens here.
"""
from __future__ import annotations

import fcntl
import os
import tempfile
from importlib import metadata
from pathlib import Path

DOMAIN_MIN, DOMAIN_MAX = 1, 100
_held: dict[int, int] = {}     # domain id -> lock file descriptor kept open by this process


def _lock_dir() -> Path:
    d = Path(tempfile.gettempdir()) / "s2r-ros-domains"
    d.mkdir(exist_ok=True)
    return d


def claim_domain_id(preferred: int | None = None) -> int:
    """A ROS_DOMAIN_ID in [1, 100] that no other process on this machine has claimed.

    The claim lasts until this process exits (or `release_domain_id`). Raises RuntimeError when
    all 100 are taken.
    """
    span = DOMAIN_MAX - DOMAIN_MIN + 1
    start = (os.getpid() if preferred is None else preferred - DOMAIN_MIN) % span
    for k in range(span):
        did = DOMAIN_MIN + (start + k) % span
        if did in _held:
            continue
        fd = os.open(_lock_dir() / f"domain-{did}.lock", os.O_CREAT | os.O_RDWR, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        _held[did] = fd
        return did
    raise RuntimeError(f"every ROS domain id in [{DOMAIN_MIN}, {DOMAIN_MAX}] is claimed by another process")


def release_domain_id(did: int) -> None:
    fd = _held.pop(did, None)
    if fd is not None:
        os.close(fd)


def _rclpy_before_jazzy() -> bool:
    for dist in ("ros-rclpy", "rclpy"):
        try:
            major = int(metadata.version(dist).split(".")[0])
        except (metadata.PackageNotFoundError, ValueError):
            continue
        return major < 7          # rclpy 7.x is Jazzy, 9.x Kilted; 3.x Humble, 4.x-6.x Iron/Rolling
    return False


def isolation_vars(domain_id: int) -> dict[str, str]:
    """The environment variables that put ROS 2 traffic on `domain_id`, on this machine only."""
    env = {"ROS_DOMAIN_ID": str(int(domain_id)), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    if _rclpy_before_jazzy():
        env["ROS_LOCALHOST_ONLY"] = "1"
    return env


def isolated_env(base: dict | None = None, domain_id: int | None = None) -> dict[str, str]:
    """A copy of `base` (default: os.environ) with a freshly claimed private domain, localhost only."""
    env = dict(os.environ if base is None else base)
    env.update(isolation_vars(claim_domain_id() if domain_id is None else domain_id))
    return env


def isolate_this_process(domain_id: int | None = None) -> int:
    """Claim a private domain and set it in os.environ (before rclpy.init). Returns the id."""
    did = claim_domain_id() if domain_id is None else domain_id
    os.environ.update(isolation_vars(did))
    return did
