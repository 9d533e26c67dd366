"""The one way this project writes files and hashes what a cached value was made from.

- ``atomic_write(path, data)``: ``data`` is ``str``, ``bytes`` or a function ``write(tmp_path)`` (which
  may write a file or a whole folder; a folder replaces an existing one only once it is complete); it is
  written to a temporary file beside ``path`` and renamed over it (``os.replace``, atomic on POSIX), so
  a reader sees the old complete file or the new complete file, never half of one; the temporary file
  is removed if writing fails. Every writer in the package goes through it.
- ``write_json`` / ``read_json``: JSON through ``atomic_write``; ``read_json`` returns None for a missing
  or unreadable file (callers decide whether that is an error).
- ``content_hash(*parts)``: blake2b over tensors (shape, dtype and bytes), arrays, bytes and anything
  JSON-serialisable (sorted keys), each part separated: the key of every cache.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable, Union

import numpy as np

Data = Union[str, bytes, Callable[[Path], None]]


def atomic_write(path, data: Data) -> Path:
    """Write ``data`` to ``path`` atomically (temp file + rename); parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        elif isinstance(data, (bytes, bytearray)):
            tmp.write_bytes(data)
        else:
            data(tmp)
        if tmp.is_dir() and path.is_dir():  # a folder replacing a folder: swap only once the new one is whole
            old = path.with_name(f".{path.name}.old{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.is_dir():  # a writer may build a whole folder (wordnet.install_from_debian)
            shutil.rmtree(tmp)
        elif tmp.exists():
            tmp.unlink()
    return path


def write_json(path, obj) -> Path:
    return atomic_write(path, json.dumps(obj, indent=1, default=str))


def read_json(path) -> dict | None:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def content_hash(*parts, size: int = 16) -> str:
    """Hex digest (``2 * size`` characters) of ``parts``: tensors / arrays by shape, dtype and bytes,
    ``bytes`` as is, anything else as sorted-key JSON (``str()`` for what JSON cannot hold)."""
    import torch

    h = hashlib.blake2b(digest_size=size)
    for p in parts:
        if isinstance(p, torch.Tensor):
            t = p.detach().cpu().contiguous()
            h.update(f"{tuple(t.shape)}{t.dtype}".encode())
            h.update((t.float() if t.dtype == torch.bfloat16 else t).numpy().tobytes())
        elif isinstance(p, np.ndarray):
            a = np.ascontiguousarray(p)
            h.update(f"{a.shape}{a.dtype}".encode())
            h.update(a.tobytes())
        elif isinstance(p, (bytes, bytearray)):
            h.update(p)
        else:
            h.update(json.dumps(p, sort_keys=True, default=str).encode())
        h.update(b"|")
    return h.hexdigest()
