"""The one input validator: every public function on features, scores or ids checks its inputs here.

Tensors and NumPy arrays (and nested lists) are accepted everywhere and come back as torch tensors
(``check_scores``: a NumPy float64 vector); what is wrong is said in one line naming the argument,
the shape or value that was found and what to do.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def as_tensor(x, name: str) -> torch.Tensor:
    """``x`` as a torch tensor (NumPy arrays and lists are converted, tensors returned as they are)."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, (np.ndarray, list, tuple)):
        try:
            return torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError) as e:
            raise TypeError(f"{name} must be numeric (a tensor or array), got {type(x).__name__}: {e}") from e
    raise TypeError(f"{name} must be a torch.Tensor or NumPy array, got {type(x).__name__}.")


def check_matrix(x, name: str, dim: int | None = None, min_rows: int = 1) -> torch.Tensor:
    """A (N, D) feature matrix: 2-D, floating point, ``dim`` columns if given, ``>= min_rows`` rows,
    finite. Returned unchanged (a tensor; integer input becomes float32)."""
    x = as_tensor(x, name)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N, D) with one row per item, got shape {tuple(x.shape)}.")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name} has dimension {x.shape[1]} but the other features have {dim}: "
                         "image and text features must come from the same CLIP model.")
    if x.shape[0] < min_rows or x.shape[1] == 0:
        raise ValueError(f"{name} needs at least {min_rows} row(s) and 1 column, got shape {tuple(x.shape)}.")
    if not x.is_floating_point():
        if x.dtype == torch.bool or x.is_complex():
            raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}.")
        x = x.float()
    # one sum first (a NaN/Inf element always makes it non-finite; ~20x cheaper than isfinite on a
    # corpus matrix); only a non-finite sum, or a finite one that overflowed, needs the element check
    if not torch.isfinite(x.sum()) and not torch.isfinite(x).all():
        bad = (~torch.isfinite(x)).any(dim=1).nonzero().flatten()
        raise ValueError(f"{name} contains NaN or Inf in {len(bad)} of {x.shape[0]} rows (first rows: "
                         f"{bad[:5].tolist()}); recompute or drop those features.")
    return x


def check_features(x, name: str, dim: int | None = None) -> torch.Tensor:
    """``check_matrix``, then L2-normalised rows as float32."""
    return F.normalize(check_matrix(x, name, dim).float(), dim=-1)


def check_ids(x, name: str, n: int | None = None, upper: int | None = None) -> torch.Tensor:
    """A (N,) vector of non-negative integer ids (class labels, cluster ids, corpus indices) as int64:
    ``n`` entries if given (one per feature row), each ``< upper`` if given."""
    x = as_tensor(x, name)
    if x.ndim != 1:
        if x.ndim == 2 and 1 in x.shape:
            x = x.flatten()
        else:
            raise ValueError(f"{name} must be 1-D (N,), one id per row, got shape {tuple(x.shape)}.")
    if x.is_floating_point() or x.dtype == torch.bool or x.is_complex():
        raise TypeError(f"{name} must hold integer ids, got dtype {x.dtype}.")
    if n is not None and x.shape[0] != n:
        raise ValueError(f"{name} has {x.shape[0]} entries but there are {n} feature rows; "
                         "they must come from the same images, in the same order.")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty.")
    lo, hi = int(x.min()), int(x.max())
    if lo < 0:
        raise ValueError(f"{name} holds negative ids (min {lo}); ids must be >= 0 (drop unassigned rows).")
    if upper is not None and hi >= upper:
        raise ValueError(f"{name} holds ids up to {hi} but must be < {upper}; they belong to other data.")
    return x.long()


def check_scores(x, name: str = "scores") -> np.ndarray:
    """A non-empty, finite 1-D score vector as NumPy float64."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    x = np.asarray(x, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError(f"{name} are empty: every ID and OOD set needs at least one sample.")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contain NaN or Inf; check the features and tau.")
    return x


def check_positive(value, name: str, hint: str = "") -> float:
    """A finite number > 0 (temperatures, logit scales); NumPy and 0-d tensor scalars are accepted."""
    try:
        v = float(value) if not isinstance(value, (bool, str)) else math.nan
    except (TypeError, ValueError):
        v = math.nan
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}" + (f"; {hint}" if hint else "."))
    return v


def check_is_fitted(estimator, attribute: str) -> None:
    """Raise scikit-learn style when ``estimator.fit`` has not run (``attribute`` unset or None)."""
    if getattr(estimator, attribute, None) is None:
        raise RuntimeError(f"This {type(estimator).__name__} instance is not fitted yet; call "
                           f"fit(...) before using it.")
