"""Outbreak detection on weekly counts: EARS, Farrington flexible, CUSUM, endemic channel and
the IDSR historical thresholds. See :mod:`pipelines.alerts.detectors`."""

from pipelines.alerts.detectors import METHODS, detect, detect_frame, resolve_params

__all__ = ["METHODS", "detect", "detect_frame", "resolve_params"]
