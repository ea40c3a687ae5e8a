"""CPUs a process may use: affinity capped by cgroup v1 / v2 CPU quotas (fake cgroup trees)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from streamlearn.kernels import cpus
from streamlearn.kernels.cpus import available_cpus, cgroup_cpu_limit


def tree(tmp_path: Path, proc: str, files: dict[str, str]) -> tuple[Path, Path]:
    """A cgroup mount under tmp_path/cgroup and a /proc/self/cgroup naming the process's."""
    root = tmp_path / "cgroup"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    proc_file = tmp_path / "proc-cgroup"
    proc_file.write_text(proc)
    return root, proc_file


def test_v2_takes_the_tightest_quota_of_the_cgroup_and_its_parents(tmp_path: Path):
    root, proc = tree(
        tmp_path,
        "0::/kubepods/pod1/ctr\n",
        {
            "cpu.max": "max 100000",
            "kubepods/pod1/cpu.max": "150000 100000",  # the pod's limit: 1.5 CPUs
            "kubepods/pod1/ctr/cpu.max": "max 100000",
        },
    )
    assert cgroup_cpu_limit(root, proc) == 1.5


def test_v2_without_a_quota_is_no_limit(tmp_path: Path):
    root, proc = tree(tmp_path, "0::/\n", {"cpu.max": "max 100000"})
    assert cgroup_cpu_limit(root, proc) is None


def test_a_line_it_cannot_parse_is_skipped(tmp_path: Path):
    root, proc = tree(tmp_path, "not a cgroup line\n0::/\n", {"cpu.max": "200000 100000"})
    assert cgroup_cpu_limit(root, proc) == 2.0


def test_v1_quota_over_period(tmp_path: Path):
    root, proc = tree(
        tmp_path,
        "5:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n",
        {
            "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "50000",
            "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000",
            "cpu,cpuacct/cpu.cfs_quota_us": "-1",
            "cpu,cpuacct/cpu.cfs_period_us": "100000",
        },
    )
    assert cgroup_cpu_limit(root, proc) == 0.5


@pytest.mark.parametrize(
    "files",
    [
        {"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"},  # v1, unlimited
        {"cpu.max": "garbage"},
        {"cpu.max": "0 100000"},
        {},  # no cgroup files at all
    ],
)
def test_no_readable_quota_is_no_limit(tmp_path: Path, files: dict[str, str]):
    root, proc = tree(tmp_path, "1:cpu:/\n0::/\n", files)
    assert cgroup_cpu_limit(root, proc) is None


def test_without_proc_cgroup_there_is_no_limit(tmp_path: Path):
    assert cgroup_cpu_limit(tmp_path, tmp_path / "missing") is None


def test_a_quota_caps_the_affinity(monkeypatch: pytest.MonkeyPatch):
    affinity = len(os.sched_getaffinity(0))
    monkeypatch.setattr(cpus, "cgroup_cpu_limit", lambda: 1.5)
    assert available_cpus() == min(affinity, 1.5)
    monkeypatch.setattr(cpus, "cgroup_cpu_limit", lambda: None)
    assert available_cpus() == affinity
