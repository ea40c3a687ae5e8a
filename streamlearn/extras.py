"""Which requirement of an extra (``streamlearn[serve]``, ``[worker]``, …) is not installed.

The extras are declared once, in pyproject.toml; this reads them back from the installed
package's metadata (``Requires-Dist: torch>=2.6; extra == "worker"``, an extra that names
another, as ``streamlearn[serve]``, included), so a command can stop at once with one line that
names the extra to install rather than fail deep inside an import.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from importlib import metadata

__all__ = ["first_missing", "installed"]

PACKAGE = "streamlearn"
_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")
_EXTRA = re.compile(r"""\bextra\s*==\s*["']([^"']+)["']""")


def installed(distribution: str) -> bool:
    """Whether a distribution of that name is installed."""
    try:
        metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requires() -> list[str] | None:
    try:
        return metadata.requires(PACKAGE) or []
    except metadata.PackageNotFoundError:
        return None


def first_missing(
    extra: str,
    requires: Iterable[str] | None = None,
    is_installed: Callable[[str], bool] = installed,
) -> str | None:
    """The first distribution that ``streamlearn[extra]`` requires and that is not installed;
    None when all are, or when the package's metadata cannot be read (a source tree on
    ``PYTHONPATH``). ``requires``: the Requires-Dist lines (default: the installed package's)."""
    lines = _requires() if requires is None else list(requires)
    if lines is None:
        return None
    pending, seen = [_normal(extra)], set()
    while pending:
        wanted = pending.pop(0)
        seen.add(wanted)
        for line in lines:
            requirement, _, marker = line.partition(";")
            extras = {_normal(e) for e in _EXTRA.findall(marker)}
            match = _NAME.match(requirement)
            if wanted not in extras or match is None:
                continue
            name, nested = match.group(1), match.group(2) or ""
            if _normal(name) == PACKAGE:  # another extra of this package
                pending += [e for e in map(_normal, nested.split(",")) if e and e not in seen]
            elif not is_installed(name):
                return name
    return None
