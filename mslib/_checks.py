"""Input validation at the library's boundary: clear errors that name the argument and the expected form."""
from __future__ import annotations

import math
from typing import Any

import torch

# Floating dtypes cast to float32 on the way in (models and attacks run in float32; the result is float32).
CASTABLE_FLOATS = (torch.float64, torch.float16, torch.bfloat16)


def check_images(x: object, name: str = "images", allow_empty: bool = False) -> torch.Tensor:
    """``x`` as a float32 N×C×H×W tensor (C = 1 or 3) in [0, 1] without NaN/inf, else raise.

    float64, float16 and bfloat16 tensors are cast to float32 (a copy); integer tensors are refused, since
    0..255 bytes are not [0, 1] images. Use the returned tensor, not ``x``.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, C, H, W) in [0, 1], got {type(x).__name__}")
    if not x.is_floating_point():
        hint = "; scale to [0, 1], e.g. x.float() / 255" if x.dtype == torch.uint8 else ""
        raise TypeError(f"{name} must be a float tensor with values in [0, 1], got dtype {x.dtype}{hint}")
    if x.dim() != 4:
        raise ValueError(f"{name} must have rank 4 (N, C, H, W), got shape {tuple(x.shape)}")
    if x.shape[1] not in (1, 3):
        raise ValueError(f"{name} must have 1 or 3 channels (N, C, H, W), got C={x.shape[1]}")
    if x.shape[0] == 0 and not allow_empty:
        raise ValueError(f"{name} is empty: got shape {tuple(x.shape)}, expected at least one image")
    if x.dtype in CASTABLE_FLOATS:
        x = x.float()
    elif x.dtype != torch.float32:
        raise TypeError(f"{name} must be float32 (or float64/float16/bfloat16, cast to float32), got {x.dtype}")
    check_unit_range(x, name)
    return x


def check_unit_range(x: torch.Tensor, name: str = "images") -> None:
    """Raise unless every value of ``x`` is finite and in [0, 1] (one pass, detached: gradients unaffected)."""
    if x.numel() == 0:
        return
    lo, hi = torch.stack(torch.aminmax(x.detach())).tolist()  # NaN propagates; one device sync
    if math.isnan(lo) or math.isnan(hi):
        raise ValueError(f"{name} contains NaN values; expected images in [0, 1]")
    if math.isinf(lo) or math.isinf(hi):
        raise ValueError(f"{name} contains infinite values; expected images in [0, 1]")
    if lo < 0 or hi > 1:
        hint = ("; it looks like 0..255 pixel values: scale to [0, 1], e.g. x / 255" if hi > 1.5 else
                "; models normalize inside forward, so pass unnormalized images")
        raise ValueError(f"{name} must lie in [0, 1], got range [{lo:.4g}, {hi:.4g}]{hint}")


def check_labels(y: object, n: int, name: str = "labels", num_classes: int | None = None) -> torch.Tensor:
    """``y`` as an int64 vector of length ``n`` with values in 0..num_classes−1, else raise.

    Any integer dtype is accepted and cast to int64; bool and float labels are refused (a float label
    vector is usually a one-hot or probability mix-up).
    """
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of integer class indices, got {type(y).__name__}")
    if y.dtype == torch.bool or y.is_floating_point() or y.is_complex():
        raise TypeError(f"{name} must be an integer tensor of class indices, got dtype {y.dtype}")
    if y.dim() != 1 or y.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},) to match the batch of images, got {tuple(y.shape)}")
    y = y.long()
    if y.numel():
        lo, hi = y.min().item(), y.max().item()
        if lo < 0 or (num_classes is not None and hi >= num_classes):
            upper = f"{num_classes - 1}" if num_classes is not None else "K-1"
            raise ValueError(f"{name} must lie in 0..{upper} (the model's classes), got range [{lo}, {hi}]")
    return y


def check_positive(value: object, name: str) -> float:
    """``value`` as a float if it is a finite number > 0, else raise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or not value > 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return float(value)


def check_eps(value: object, name: str = "eps") -> float:
    """An L∞ radius for images in [0, 1]: a finite number in (0, 1), else raise (suggesting x/255)."""
    eps = check_positive(value, name)
    if eps >= 1:
        raise ValueError(f"{name} must be < 1 for images in [0, 1] (eps >= 1 allows any image), got {value}; "
                         f"for {value:g} pixel levels pass {value:g}/255 = {eps / 255:.6g}")
    return eps


def check_tolerance(value: object, name: str = "tolerance") -> float:
    """A rejection tolerance: a finite number >= 0, else raise (NaN would silently never reject)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number >= 0, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def check_int(value: object, name: str, minimum: int, maximum: int | None = None) -> int:
    """``value`` if it is an int (not bool) in ``minimum``..``maximum`` (no upper bound if None), else raise."""
    bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer {bound}, got {type(value).__name__} {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be an integer {bound}, got {value!r}")
    return value


def check_finite_output(z: object, what: str, n: int | None = None) -> torch.Tensor:
    """``z`` unchanged if it is an (N, K) float tensor (N = ``n`` when given) without NaN/inf, else raise
    ``TypeError`` (not a tensor: a tuple or dict from a model that returns several things) or ``ValueError``
    (wrong rank or batch size, NaN/inf; checked detached)."""
    if not isinstance(z, torch.Tensor):
        raise TypeError(f"{what} must return one tensor of scores (N, K), got {type(z).__name__}; "
                        "wrap a model that returns several outputs so forward returns only the scores")
    if z.dim() != 2 or (n is not None and z.shape[0] != n):
        want = f"({n}, K)" if n is not None else "(N, K)"
        raise ValueError(f"{what} must return scores of shape {want}, one row per image, got {tuple(z.shape)}")
    if not bool(torch.isfinite(z.detach()).all()):
        raise ValueError(f"{what} returned non-finite values (NaN or inf) for some inputs; refusing to decide "
                         "on them (check the model's weights and the inputs)")
    return z


def check_device(value: object, name: str = "device") -> str:
    """A torch device string of type cpu, cuda or mps (``'cuda:0'`` allowed), else raise."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string such as 'cpu', 'cuda', 'cuda:0' or 'mps', got {type(value).__name__}")
    try:
        dev = torch.device(value)
    except (RuntimeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"{name} must be 'cpu', 'cuda', 'cuda:<index>' or 'mps', got {value!r}")
    return value


def check_unit_grid(value: object, name: str, upper_open: float | None = 1.0) -> tuple[Any, ...]:
    """A tuple of finite numbers >= 0 (and < ``upper_open`` when given), else raise."""
    if not isinstance(value, (tuple, list)):
        raise TypeError(f"{name} must be a tuple of numbers, got {type(value).__name__}")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"{name} must hold numbers, got {type(v).__name__} {v!r}")
        if not math.isfinite(v) or v < 0 or (upper_open is not None and v >= upper_open):
            where = f"[0, {upper_open:g})" if upper_open is not None else ">= 0"
            raise ValueError(f"{name} values must be finite and in {where}, got {v!r}")
    return tuple(value)
