"""The resumable, atomic on-disk store of CLIP features: folder naming, cache keys, shards, ``meta.json``.

Layout, under ``<cache_dir>/<model_id>/`` (``cache_dir`` defaults to ``$CLUSTERMINE_CACHE/features``
or ``<repo>/.cache/features``; ``model_id`` like ``ViT-H-14--dfn5b``, see ``models.model_id``)::

    images/<dataset>/shard-<start>-<stop>.safetensors   features (n, D), labels (n,), index (n,)
    images/<dataset>/files.txt                         every listed image: "<relpath>\\t<label>"
    images/<dataset>/meta.json                         written last: the completion marker
    text/<name>.<names-hash>.<prompts>/shard-*.safetensors, meta.json
    knn/<dataset>.k<k>.safetensors + .json             extract.cached_knn

A store is keyed: the caller describes everything the values depend on in a ``key`` dict (model and
weights, image list or names, templates, dtype, precision, ``FORMAT_VERSION``); ``key_hash`` is its
``fileio.content_hash``. Every shard carries the key hash in its safetensors metadata and ``meta.json``
holds key, key hash and shard list, so ``run_shards`` recomputes when any input differs. Shards and
``meta.json`` are written through ``fileio.atomic_write`` (a killed run never leaves half a file; it
restarts after the last finished shard) and ``run_shards`` runs unchanged under ``torchrun``: shard
``i`` goes to rank ``i % N``, rank 0 writes ``meta.json``, and because shards are fixed item ranges,
the merged result is the one a single process computes.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from .distributed import barrier, rank_world
from .fileio import atomic_write, content_hash, read_json, write_json

FORMAT_VERSION = 1  # bump when what a feature means changes; old caches are then recomputed
DTYPES = {"float32": torch.float32, "float16": torch.float16}
DEFAULT_SHARD_SIZE = 50_000


# ----------------------------------------------------------------------------- naming
def features_root(cache_dir=None) -> Path:
    """The feature cache folder: ``cache_dir`` if given (``make features CACHE_DIR=``), else
    ``<project cache>/features`` (``$CLUSTERMINE_CACHE/features`` or ``<repo>/.cache/features``)."""
    from .wordnet import cache_dir as project_cache

    return Path(cache_dir).expanduser() if cache_dir else project_cache() / "features"


def model_dir(model_id: str, cache_dir=None) -> Path:
    """``<cache_dir>/<model_id>``: every cached feature of one model (and weights file)."""
    return features_root(cache_dir) / model_id


def image_dir(model_id: str, dataset: str, cache_dir=None) -> Path:
    """Folder of one dataset's image features (``dataset``: a registered name or alias)."""
    from .datasets import resolve_dataset

    return model_dir(model_id, cache_dir) / "images" / resolve_dataset(dataset).name


def text_dir(model_id: str, name: str, names, prompt_name: str, cache_dir=None) -> Path:
    """Folder of the text features of ``names`` (called ``name``) under the prompt set ``prompt_name``."""
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in name)
    return model_dir(model_id, cache_dir) / "text" / f"{safe}.{content_hash(list(names))[:10]}.{prompt_name}"


def knn_path(model_id: str, dataset: str, k: int, cache_dir=None) -> Path:
    """The kNN file of one dataset's image features (its ``.json`` sibling holds the key)."""
    from .datasets import resolve_dataset

    return model_dir(model_id, cache_dir) / "knn" / f"{resolve_dataset(dataset).name}.k{k}.safetensors"


# ----------------------------------------------------------------------------- keys and provenance
def key_hash(key: dict) -> str:
    """The hash every shard and ``meta.json`` of a store carries: ``fileio.content_hash`` of the key."""
    return content_hash(key)


def code_version() -> str:
    """The installed ``clustermine`` version (``"unknown"`` when not installed)."""
    try:
        from importlib.metadata import version

        return version("clustermine")
    except Exception:
        return "unknown"


def _open_clip_version() -> str:
    try:
        import open_clip

        return open_clip.__version__
    except Exception:
        return "unknown"


def provenance() -> dict:
    """What wrote a store (kept in ``meta.json``; not part of the key)."""
    return {"code_version": code_version(), "torch": torch.__version__, "open_clip": _open_clip_version(),
            "world_size": rank_world()[1], "created": time.strftime("%Y-%m-%d %H:%M:%S")}


# ----------------------------------------------------------------------------- shards
def save_shard(path: Path, tensors: dict, metadata: dict) -> None:
    """Atomic safetensors write (``fileio.atomic_write``): a killed run never leaves half a shard.
    ``metadata`` values are stored as JSON strings."""
    from safetensors.torch import save_file

    atomic_write(path, lambda tmp: save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp),
                                             metadata={k: json.dumps(v) for k, v in metadata.items()}))


def shard_metadata(path: Path) -> dict | None:
    """The metadata ``save_shard`` stored (decoded), or None for a missing or unreadable file."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
    except Exception:
        return None


def read_meta(out_dir: Path, model_identity: dict) -> dict | None:
    """``meta.json`` of a complete store made by the model ``model_identity``
    (``models.model_identity``), else None."""
    meta = read_json(Path(out_dir) / "meta.json")
    if not meta or meta.get("key", {}).get("model") != model_identity:
        return None
    return meta


def run_shards(out_dir: Path, key: dict, n_items: int, shard_size: int, compute, finalize, overwrite: bool,
               progress_total=None) -> dict:
    """Compute ``compute(start, stop) -> (tensors, skipped, info)`` for every shard missing in
    ``out_dir`` (this rank's share: shard i on rank i % world) and write ``meta.json`` once all are done.

    ``finalize(shard_infos, skipped) -> dict`` builds the metadata (it runs on rank 0 only);
    ``progress_total(n)`` is told how many items this rank computes. Returns the metadata.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}.")
    khash = key_hash(key)
    meta_path = out_dir / "meta.json"
    meta = read_json(meta_path)
    ranges = [(s, min(s + shard_size, n_items)) for s in range(0, n_items, shard_size)]
    if meta and meta.get("key_hash") == khash and not overwrite and all(
            (out_dir / s).is_file() for s in meta.get("shards", [])):
        return meta  # cache hit: nothing loaded, nothing computed
    rank, world = rank_world()
    barrier()  # every rank has looked at the old meta before rank 0 removes it
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        meta_path.unlink(missing_ok=True)  # no reader may mix old metadata with new shards
    barrier()

    def shard_path(s, e):
        return out_dir / f"shard-{s:09d}-{e:09d}.safetensors"

    def done(path):
        m = shard_metadata(path) if path.is_file() else None
        return m is not None and m.get("key_hash") == khash

    todo = [(s, e) for i, (s, e) in enumerate(ranges) if i % world == rank]
    todo = [(s, e) for s, e in todo if overwrite or not done(shard_path(s, e))]
    if progress_total is not None:
        progress_total(sum(e - s for s, e in todo))
    for s, e in todo:
        tensors, skipped, info = compute(s, e)
        save_shard(shard_path(s, e), tensors, {"key_hash": khash, "start": s, "stop": e, "skipped": skipped, **info})
    barrier()
    if rank == 0:
        infos, skipped = [], []
        for s, e in ranges:
            m = shard_metadata(shard_path(s, e))
            if m is None or m.get("key_hash") != khash:
                raise RuntimeError(f"shard {shard_path(s, e)} is missing or stale after extraction; rerun "
                                   "(finished shards are kept).")
            infos.append(m)
            skipped.extend(m["skipped"])
        keep = {shard_path(s, e).name for s, e in ranges}
        for stale in out_dir.glob("shard-*.safetensors"):  # shards of an older layout or key
            if stale.name not in keep:
                stale.unlink(missing_ok=True)
        meta = {"format": FORMAT_VERSION, "key": key, "key_hash": khash,
                "shards": [shard_path(s, e).name for s, e in ranges], **finalize(infos, skipped)}
        write_json(meta_path, meta)
    barrier()
    return read_json(meta_path)


def load_shards(out_dir: Path, meta: dict) -> dict[str, torch.Tensor]:
    """Concatenate the shards' tensors in item order (preallocated: no 2x peak memory)."""
    from safetensors.torch import load_file

    out, row = {}, 0
    for name in meta["shards"]:
        part = load_file(str(out_dir / name))
        n = part["features"].shape[0]
        for k, v in part.items():
            if k not in out:
                out[k] = torch.empty((meta["n_rows"],) + tuple(v.shape[1:]), dtype=v.dtype)
            out[k][row:row + n] = v
        row += n
    if row != meta["n_rows"]:
        raise RuntimeError(f"{out_dir}: shards hold {row} rows, meta.json says {meta['n_rows']}; "
                           "delete the folder and extract again.")
    return out
