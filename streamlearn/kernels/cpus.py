"""How many CPUs this process may use: its affinity, capped by a cgroup CPU quota.

A container's CPU limit (Kubernetes ``resources.limits.cpu``) is a cgroup quota of CPU time per
period, which the affinity mask does not show: a pod limited to 1 CPU on a 16-core node sees 16.
A second thread that spins there (``learner.overlap``) spends the quota the learner needs and gets
the whole pod throttled, so "auto" settings ask this module, not ``os.sched_getaffinity``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["available_cpus", "cgroup_cpu_limit"]

_CGROUP_ROOT = Path("/sys/fs/cgroup")
_PROC_CGROUP = Path("/proc/self/cgroup")
# where cgroup v1's cpu controller is mounted, by the names distributions use
_V1_MOUNTS = ("cpu", "cpu,cpuacct", "cpuacct,cpu")


def available_cpus() -> float:
    """CPUs this process may keep busy: its affinity, or fewer under a cgroup CPU quota."""
    if hasattr(os, "sched_getaffinity"):
        cpus = float(len(os.sched_getaffinity(0)))
    else:
        cpus = float(os.cpu_count() or 1)
    limit = cgroup_cpu_limit()
    return cpus if limit is None else min(cpus, limit)


def cgroup_cpu_limit(root: Path = _CGROUP_ROOT, proc_cgroup: Path = _PROC_CGROUP) -> float | None:
    """The tightest CPU quota (quota ÷ period) on this process's cgroup or any of its parents,
    cgroup v2 (``cpu.max``) or v1 (``cpu.cfs_quota_us``); None when there is none or none can
    be read (not Linux, no cgroup file system)."""
    try:
        lines = proc_cgroup.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    limits: list[float] = []
    for line in lines:
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        _, controllers, path = fields
        if controllers == "":
            limits += _walk(root, path, _v2_limit)
        elif "cpu" in controllers.split(","):
            for mount in _V1_MOUNTS:
                limits += _walk(root / mount, path, _v1_limit)
    return min(limits) if limits else None


def _walk(mount: Path, path: str, read: Callable[[Path], float | None]) -> list[float]:
    """Limits read in the cgroup ``path`` under ``mount`` and in each parent up to the mount."""
    found: list[float] = []
    directory = mount / path.strip("/")
    while True:
        limit = read(directory)
        if limit is not None:
            found.append(limit)
        if directory == mount or mount not in directory.parents:
            return found
        directory = directory.parent


def _v2_limit(directory: Path) -> float | None:
    """``cpu.max``: "QUOTA PERIOD" in µs, or "max PERIOD" for none."""
    fields = _read(directory / "cpu.max").split()
    if len(fields) != 2 or fields[0] == "max":
        return None
    return _ratio(fields[0], fields[1])


def _v1_limit(directory: Path) -> float | None:
    """``cpu.cfs_quota_us`` ÷ ``cpu.cfs_period_us``; a quota of -1 is none."""
    return _ratio(_read(directory / "cpu.cfs_quota_us"), _read(directory / "cpu.cfs_period_us"))


def _ratio(quota: str, period: str) -> float | None:
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return ""
