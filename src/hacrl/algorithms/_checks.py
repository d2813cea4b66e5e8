"""Input checks shared by the algorithm functions.

Every public algorithm function validates its inputs up front and raises a `ValueError` that names the
argument and what was wrong: a silent broadcast or a NaN that slips into an advantage would corrupt a
training run without any visible error.
"""

from __future__ import annotations

import torch
from torch import Tensor


def as_1d(name: str, value: Tensor, *, length: int | None = None) -> Tensor:
    if not isinstance(value, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(value.shape)}")
    if length is not None and value.shape[0] != length:
        raise ValueError(f"{name} has {value.shape[0]} entries but {length} were expected (one per response)")
    return value


def finite(name: str, value: Tensor) -> Tensor:
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        bad = int((~torch.isfinite(value)).sum())
        raise ValueError(f"{name} contains {bad} NaN/inf value(s)")
    return value


def float_1d(name: str, value: Tensor, *, length: int | None = None) -> Tensor:
    value = as_1d(name, value, length=length)
    if not value.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    return finite(name, value)


def index_1d(name: str, value: Tensor, *, length: int | None = None, upper: int | None = None) -> Tensor:
    value = as_1d(name, value, length=length)
    if value.is_floating_point() or value.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor of indices, got dtype {value.dtype}")
    if value.numel() and int(value.min()) < 0:
        raise ValueError(f"{name} contains a negative index ({int(value.min())})")
    if upper is not None and value.numel() and int(value.max()) >= upper:
        raise ValueError(f"{name} contains index {int(value.max())}, but only {upper} exist (0..{upper - 1})")
    return value


def bounds(name: str, value: tuple[float, float]) -> tuple[float, float]:
    low, high = value
    if not (0.0 < low <= 1.0 <= high):
        raise ValueError(f"{name} must satisfy 0 < low <= 1 <= high, got {value}")
    return float(low), float(high)


def non_negative(name: str, value: float) -> float:
    if not value >= 0.0:  # also rejects NaN
        raise ValueError(f"{name} must be >= 0, got {value}")
    return float(value)
