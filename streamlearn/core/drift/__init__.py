"""Drift detectors on the prequential loss, one per module, behind the DriftDetector protocol."""

from streamlearn.core.drift.base import DriftDetector, build_detector
from streamlearn.core.drift.loss_deviation import LossDeviationDetector
from streamlearn.core.drift.river import RiverDriftDetector

__all__ = ["DriftDetector", "LossDeviationDetector", "RiverDriftDetector", "build_detector"]
