"""Seeded loss sequences for the drift detectors' golden tests (shared as fixtures)."""

import numpy as np
import pytest

# Abrupt level changes of a (non-negative) loss at known positions: up, down, up.
CHANGES = (1500, 3000, 4500)
LEVELS = ((0.2, 1500), (0.8, 1500), (0.3, 1500), (1.2, 1500))


def _feed(detector, losses, batch=50):
    """Global positions of detections when losses arrive in micro-batches."""
    fired = []
    for start in range(0, len(losses), batch):
        fired += [start + i for i in detector.update(losses[start : start + batch])]
    return fired


@pytest.fixture
def changes():
    return CHANGES


@pytest.fixture
def losses():
    rng = np.random.default_rng(2024)
    return np.concatenate([np.abs(rng.normal(m, 0.1, n)) for m, n in LEVELS])


@pytest.fixture
def stairs():
    """Twelve steps up, every 300 events: a detection at each step unless a cooldown holds."""
    rng = np.random.default_rng(7)
    return np.concatenate([np.abs(rng.normal(0.1 + 0.4 * k, 0.05, 300)) for k in range(12)])


@pytest.fixture
def feed():
    return _feed
