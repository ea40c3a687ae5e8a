"""Where tensors live: device auto-detection, CPU threads, pinned host-to-device copies."""

from __future__ import annotations

import numpy as np
import torch

from streamlearn.errors import ConfigError

__all__ = ["autocast_dtype", "configure_threads", "resolve_device", "to_device"]


def resolve_device(choice: str, large: bool = False, compiled: bool = False) -> torch.device:
    """The device ``learner.device`` = ``choice`` names; CUDA asked for without one is a config
    error. 'auto' takes CUDA where one is present and it pays: a ``large`` model
    (kernels/model_size.py), and not the ``compiled`` step (CPU-only) asked for."""
    if choice == "auto":
        pays = large and not compiled and torch.cuda.is_available()
        return torch.device("cuda" if pays else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError("learner.device: 'cuda' requested but no CUDA device is available")
    return torch.device(choice)


def autocast_dtype(device: torch.device, amp: str) -> torch.dtype | None:
    """bfloat16 autocast on CUDA unless switched off; CPU runs float32 (faster there)."""
    if device.type == "cuda" and amp in ("auto", "on"):
        return torch.bfloat16
    return None


def configure_threads(threads: int) -> None:
    """Small per-event models run fastest on one intra-op thread; 0 keeps torch's choice."""
    if threads > 0 and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """Host array to device tensor; on CUDA through pinned memory, without blocking."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor
