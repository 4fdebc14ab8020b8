"""Input validation at the library's boundary: clear errors that name the argument."""
from __future__ import annotations

import torch


def check_images(x: object, name: str = "images") -> torch.Tensor:
    """Return ``x`` if it is a float N×C×H×W tensor in [0, 1] without NaNs, else raise."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor with values in [0, 1], got dtype {x.dtype}")
    if x.dim() != 4:
        raise ValueError(f"{name} must have rank 4 (N, C, H, W), got shape {tuple(x.shape)}")
    if x.shape[1] not in (1, 3):
        raise ValueError(f"{name} must have 1 or 3 channels (N, C, H, W), got C={x.shape[1]}")
    if torch.isnan(x).any():
        raise ValueError(f"{name} contains NaN values")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError(
            f"{name} must lie in [0, 1], got range [{x.min().item():.4g}, {x.max().item():.4g}]; "
            "models normalize inside forward, so pass unnormalized images"
        )
    return x


def check_labels(y: object, n: int, name: str = "labels", num_classes: int | None = None) -> torch.Tensor:
    """Return ``y`` if it is an integer vector of length ``n`` (and < num_classes), else raise."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(y).__name__}")
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"{name} must be an integer tensor, got dtype {y.dtype}")
    if y.dim() != 1 or y.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},) to match the batch of images, got {tuple(y.shape)}")
    if y.numel() and (y.min() < 0 or (num_classes is not None and y.max() >= num_classes)):
        raise ValueError(f"{name} must lie in [0, {num_classes}), got range [{y.min().item()}, {y.max().item()}]")
    return y


def check_positive(value: object, name: str) -> float:
    """Return ``value`` as a float if it is a finite number > 0, else raise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not value > 0 or value != value or value == float("inf"):
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return float(value)
