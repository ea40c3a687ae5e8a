"""Drift detectors on the prequential loss, one per module, behind the DriftDetector protocol."""

from streamlearn.drift.base import DriftDetector, build_detector
from streamlearn.drift.loss_deviation import LossDeviationDetector
from streamlearn.drift.river import RiverDriftDetector

__all__ = ["DriftDetector", "LossDeviationDetector", "RiverDriftDetector", "build_detector"]
