"""The resumable, verified on-disk store of CLIP features: folder naming, cache keys, shards, metadata.

Layout, under ``<cache_dir>/<model_id>/`` (``cache_dir`` defaults to ``$CLUSTERMINE_CACHE/features``
or ``<repo>/.cache/features``; ``model_id`` like ``ViT-H-14--dfn5b``, see ``models.model_id``)::

    images/<dataset>/float32.meta.json                  the complete result: key, shard list, counts
    images/<dataset>/float32-<key hash>/shard-<start>-<stop>.safetensors   features, labels, index
    images/<dataset>/float32-<key hash>/files.txt       every listed image: "<relpath>\\t<label>"
    images/<dataset>/float16.meta.json, float16-<key hash>/ ...   (each dtype is its own result)
    text/<name>.<names-hash>.<prompts>/float32.meta.json, float32-<key hash>/shard-*.safetensors
    knn/<dataset>.<dtype>.k<k>.safetensors + .json      extract.cached_knn

A store is keyed: the caller describes everything the values depend on in a ``key`` dict (model and
weights, image list or names, templates, pre-processing, dtype, precision, ``FORMAT_VERSION``);
``key_hash`` is its ``fileio.content_hash``. Every shard carries the key hash, its row count and a
CRC32 of each tensor in its safetensors header; ``<dtype>.meta.json`` holds key, key hash, folder and
shard list. What a reader checks (``check_result`` / ``read_shard``, raising ``CacheError`` that
names the file): format version, key against key hash, the fields of the key it knows (model, names,
templates, ...), every shard's header (safetensors refuses a truncated file), key hash and rows;
loading (``load_shards``) also checks each tensor's CRC32 and that the features are finite.

Writing (``run_shards``) never destroys a complete result before its replacement is complete: a run
computes into the folder named after its key hash (``--overwrite``: the other of two folder names),
verifies every shard, and only then replaces ``<dtype>.meta.json`` (``fileio.atomic_write``: the
switch) and removes the replaced folder. Resuming (rerun the same command) keeps every finished shard
that verifies and names and recomputes one that does not. Under ``torchrun`` shard ``i`` goes to rank
``i % N`` and rank 0 writes the metadata; shards are fixed item ranges, so the merged result is the
one a single process computes. Two identical runs at once share one folder (same key, same values);
a run with another key of the same dataset and dtype, at the same time, may remove the other's folder
when it finishes (that run then stops with "rerun"; it never reports success).
"""
from __future__ import annotations

import json
import shutil
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import torch

from .distributed import barrier, rank_world, share_from_rank0
from .fileio import atomic_write, content_hash, read_json, write_json

FORMAT_VERSION = 2  # bump when what a file holds or means changes; older caches are then rebuilt
DTYPES = {"float32": torch.float32, "float16": torch.float16}
DEFAULT_SHARD_SIZE = 50_000
STALE_TMP_S = 600  # a temporary file untouched this long belongs to a killed writer
_PROVENANCE = ("code_version", "torch", "open_clip", "world_size", "created")


class CacheError(FileNotFoundError):
    """A cache file that is missing, stale (made from other inputs) or damaged.

    ``path``: the file; ``reason``: what is wrong; ``missing``: True when there is no cache at all
    (not a damaged or stale one); ``hint``: the command that rebuilds it, when the caller knows it."""

    def __init__(self, path, reason: str, missing: bool = False, hint: str = ""):
        self.path, self.reason, self.missing, self.hint = Path(path), reason, missing, hint
        super().__init__(f"{self.path}: {reason}" + (f"; rebuild it with: {hint}" if hint else ""))

    def __str__(self) -> str:
        return self.args[0]

    def with_hint(self, hint: str) -> "CacheError":
        return CacheError(self.path, self.reason, self.missing, hint)


class TooManySkipped(ValueError):
    """Too many input items (images) could not be read: the result is not recorded as complete."""


def note(msg: str) -> None:
    """A line on stderr: what a long run found and did (e.g. a damaged shard it recomputes)."""
    print(f"[features] {msg}", file=sys.stderr, flush=True)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


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
    """Store of one dataset's image features (``dataset``: a registered name or alias); one result per
    dtype inside (``meta_file``, ``result_folder``)."""
    from .datasets import resolve_dataset

    return model_dir(model_id, cache_dir) / "images" / resolve_dataset(dataset).name


def text_dir(model_id: str, name: str, names, prompt_name: str, cache_dir=None) -> Path:
    """Store of the text features of ``names`` (called ``name``) under the prompt set ``prompt_name``."""
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in name)
    return model_dir(model_id, cache_dir) / "text" / f"{safe}.{content_hash(list(names))[:10]}.{prompt_name}"


def meta_file(store: Path, dtype: str = "float32") -> Path:
    """``<store>/<dtype>.meta.json``: the metadata of the store's complete result in ``dtype``."""
    return Path(store) / f"{dtype}.meta.json"


def result_folder(store: Path, dtype: str, khash: str, alternate: bool = False) -> Path:
    """The key-specific folder a result is computed in (``alternate``: the second name ``--overwrite``
    uses while the first holds the complete result)."""
    return Path(store) / (f"{dtype}-{khash[:12]}" + ("-b" if alternate else ""))


def knn_path(model_id: str, dataset: str, k: int, cache_dir=None, dtype: str = "float32") -> Path:
    """The kNN file of one dataset's image features (its ``.json`` sibling describes it)."""
    from .datasets import resolve_dataset

    return model_dir(model_id, cache_dir) / "knn" / f"{resolve_dataset(dataset).name}.{dtype}.k{k}.safetensors"


# ----------------------------------------------------------------------------- keys and provenance
def key_hash(key: dict) -> str:
    """The hash every shard and metadata file of a store carries: ``fileio.content_hash`` of the key."""
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
    """What wrote a store (kept in the metadata; not part of the key)."""
    return {"code_version": code_version(), "torch": torch.__version__, "open_clip": _open_clip_version(),
            "world_size": rank_world()[1], "created": time.strftime("%Y-%m-%d %H:%M:%S")}


# ----------------------------------------------------------------------------- shards
def crc32(t: torch.Tensor) -> str:
    """CRC32 (hex) of a tensor's bytes: detects damage after writing (~2 GB/s; not a security hash)."""
    a = t.detach().cpu().contiguous().numpy()
    return f"{zlib.crc32(a.reshape(-1).view(np.uint8)):08x}"


def save_shard(path: Path, tensors: dict, metadata: dict) -> None:
    """Atomic safetensors write (``fileio.atomic_write``): a killed run never leaves half a shard.
    ``metadata`` values are stored as JSON strings, with the row count (``rows``, the first dimension
    every tensor shares) and each tensor's CRC32 (``crc``) added."""
    from safetensors.torch import save_file

    rows = {int(v.shape[0]) for v in tensors.values()}
    if len(rows) != 1:
        raise ValueError(f"shard tensors of {path.name} have different row counts {sorted(rows)}.")
    meta = {**metadata, "rows": rows.pop(), "crc": {k: crc32(v) for k, v in tensors.items()}}
    atomic_write(path, lambda tmp: save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp),
                                             metadata={k: json.dumps(v) for k, v in meta.items()}))


def read_shard(path, khash: str | None, rows: int | None = None, load: bool = True):
    """``(metadata, tensors)`` of a verified shard (``tensors`` None unless ``load``).

    Checked: the safetensors header (safetensors refuses a file that does not cover every tensor, so
    a truncated shard fails here), the key hash (``khash``), the row count of every tensor (and
    ``rows`` if given); with ``load`` also each tensor's CRC32 and finite floating-point values.
    Raises ``CacheError`` naming the shard and what is wrong."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CacheError(path, "shard is missing", missing=True)
    try:
        with safe_open(str(path), "pt") as f:
            meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:
        raise CacheError(path, f"unreadable shard ({_first_line(e)}): truncated or overwritten") from None
    if khash is not None and meta.get("key_hash") != khash:
        raise CacheError(path, "shard was made from other inputs (its key hash differs)")
    n, crc = meta.get("rows"), meta.get("crc")
    if not isinstance(n, int) or not isinstance(crc, dict) or set(crc) != set(shapes):
        raise CacheError(path, "shard header lacks its row count or checksums (an older format)")
    wrong = sorted(k for k, s in shapes.items() if not s or s[0] != n)
    if wrong or (rows is not None and n != rows):
        raise CacheError(path, f"shard holds {[shapes[k][:1] for k in wrong] or n} rows where its "
                               f"metadata says {n if wrong else rows}")
    if not load:
        return meta, None
    try:
        tensors = load_file(str(path))
    except Exception as e:
        raise CacheError(path, f"unreadable shard ({_first_line(e)}): truncated or overwritten") from None
    for k, v in tensors.items():
        if crc32(v) != crc[k]:
            raise CacheError(path, f"'{k}' does not match its checksum: the file was changed after writing")
        if v.is_floating_point() and not torch.isfinite(v.float().sum()) and not torch.isfinite(v).all():
            raise CacheError(path, f"'{k}' holds NaN or Inf")
    return meta, tensors


def shard_name(start: int, stop: int) -> str:
    return f"shard-{start:09d}-{stop:09d}.safetensors"


# ----------------------------------------------------------------------------- reading a result
_FIELDS = {"kind": "kind of features", "model": "model or weights", "dataset": "dataset",
           "templates": "prompt templates", "names_hash": "concept names", "n_items": "number of items",
           "dtype": "dtype", "preprocess": "image pre-processing", "items_hash": "image list",
           "precision": "precision"}


def _short(v) -> str:
    s = json.dumps(v, default=str)
    return s if len(s) <= 70 else s[:67] + "..."


def check_result(store: Path, dtype: str = "float32", expect: dict | None = None, deep: bool = False) -> dict:
    """The metadata of ``store``'s complete result in ``dtype``, verified: format version, key against
    key hash, each field of ``expect`` against the key (what the reader knows: model, names, templates,
    ...), the result folder and every shard's header, key hash and rows (``deep``: also the tensors'
    checksums and finiteness: reads every shard). Raises ``CacheError`` (``missing=True`` when there is
    no result at all)."""
    store = Path(store)
    path = meta_file(store, dtype)
    if not path.exists():
        legacy = read_json(store / "meta.json")
        if isinstance(legacy, dict) and legacy.get("dtype", "float32") == dtype:
            raise CacheError(store / "meta.json", f"made by an older version of this code (cache format "
                                                  f"{legacy.get('format', '?')}, now {FORMAT_VERSION})")
        raise CacheError(path, "missing", missing=True)
    meta = read_json(path)
    if not isinstance(meta, dict):
        raise CacheError(path, "unreadable metadata (not JSON): damaged")
    if meta.get("format") != FORMAT_VERSION:
        raise CacheError(path, f"made by another version of this code (cache format {meta.get('format')}, "
                               f"now {FORMAT_VERSION})")
    key = meta.get("key")
    if not isinstance(key, dict) or meta.get("key_hash") != key_hash(key):
        raise CacheError(path, "its key does not match its key hash: the file was edited or damaged")
    for field, want in (expect or {}).items():
        want = json.loads(json.dumps(want, default=str))
        if key.get(field) != want:
            raise CacheError(path, f"made from other {_FIELDS.get(field, field)} (cached: "
                                   f"{_short(key.get(field))}; now: {_short(want)})")
    folder = store / str(meta.get("folder", ""))
    if folder.name not in {result_folder(store, dtype, meta["key_hash"], alt).name for alt in (False, True)}:
        raise CacheError(path, f"names the folder {meta.get('folder')!r}, not its key's: damaged")
    if not folder.is_dir():
        raise CacheError(folder, "the folder of this result is missing")
    shards, rows = meta.get("shards"), meta.get("shard_rows")
    if not isinstance(shards, list) or not isinstance(rows, list) or len(shards) != len(rows) or \
            sum(rows) != meta.get("n_rows"):
        raise CacheError(path, "its shard list does not add up to its row count: damaged")
    for name, n in zip(shards, rows):
        read_shard(folder / name, meta["key_hash"], n, load=deep)
    return meta


def find_result(store: Path, dtype: str | None = None, expect: dict | None = None) -> dict:
    """``check_result`` for ``dtype``; ``dtype=None``: the first of float32, float16 that verifies (or
    the problem of the first one present)."""
    if dtype is not None:
        return check_result(store, dtype, expect)
    first = None
    for d in DTYPES:
        try:
            return check_result(store, d, expect)
        except CacheError as e:
            first = first if first is not None and (first.missing <= e.missing) else e
    raise first


def load_shards(store: Path, meta: dict) -> dict[str, torch.Tensor]:
    """Concatenate a result's verified shards (``read_shard`` with checksums) in item order
    (preallocated: no 2x peak memory). Raises ``CacheError`` naming a damaged shard."""
    folder = Path(store) / meta["folder"]
    out, row = {}, 0
    for name, n in zip(meta["shards"], meta["shard_rows"]):
        _, part = read_shard(folder / name, meta["key_hash"], n, load=True)
        for k, v in part.items():
            if k not in out:
                out[k] = torch.empty((meta["n_rows"],) + tuple(v.shape[1:]), dtype=v.dtype)
            out[k][row:row + n] = v
        row += n
    return out


# ----------------------------------------------------------------------------- writing a result
def _same_result(a: dict | None, b: dict) -> bool:
    if not isinstance(a, dict):
        return False
    strip = lambda m: {k: v for k, v in m.items() if k not in _PROVENANCE}  # noqa: E731
    return json.loads(json.dumps(strip(a), default=str)) == json.loads(json.dumps(strip(b), default=str))


def _cleanup(store: Path, dtype: str, keep: Path, shards: list[str]) -> None:
    """After the switch: drop what the new result replaced (other folders of this dtype, an older
    format's files) and unlisted shards and abandoned temporary files in ``keep``."""
    listed = set(shards)
    for p in keep.glob("shard-*.safetensors"):
        if p.name not in listed:
            p.unlink(missing_ok=True)
    for p in keep.glob(".*.tmp*"):
        try:
            if time.time() - p.stat().st_mtime > STALE_TMP_S:
                p.unlink()
        except OSError:
            pass
    for p in store.glob(f"{dtype}-*"):
        if p.is_dir() and p.name != keep.name:
            shutil.rmtree(p, ignore_errors=True)
    legacy = read_json(store / "meta.json")
    if isinstance(legacy, dict) and legacy.get("dtype", "float32") == dtype:
        (store / "meta.json").unlink(missing_ok=True)  # first: no reader sees half an old result
        for p in [store / "files.txt", *store.glob("shard-*.safetensors")]:
            p.unlink(missing_ok=True)


def run_shards(store: Path, key: dict, n_items: int, shard_size: int, compute, finalize, overwrite: bool = False,
               progress_total=None, retry=None) -> dict:
    """Compute ``compute(start, stop) -> (tensors, info)`` for every shard of ``store``'s result for
    ``key`` that is missing or does not verify (this rank's share: shard i on rank i % world), then
    (rank 0) record the result: ``finalize(folder, shard_metadatas) -> dict`` adds to the metadata
    (it may write files into ``folder`` or raise, e.g. ``TooManySkipped``: then nothing is recorded
    and the previous result stays). ``progress_total(n)`` is told how many items this rank computes;
    ``retry(shard_metadata) -> bool`` may ask for a verified shard to be recomputed (its skipped items
    became readable). ``overwrite``: recompute every shard (into a second folder; the previous result
    stays in use until the new one is complete). Returns the metadata (``key["dtype"]`` is the dtype).
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}.")
    store, dtype, khash = Path(store), key["dtype"], key_hash(key)
    rank, world = rank_world()
    mpath = meta_file(store, dtype)
    current = read_json(mpath)
    current = current if isinstance(current, dict) else None
    first, second = result_folder(store, dtype, khash), result_folder(store, dtype, khash, alternate=True)
    now = (current or {}).get("folder")
    if overwrite:
        folder = second if now == first.name else first
    else:
        folder = store / now if current and current.get("key_hash") == khash and now == second.name else first
    ranges = [(s, min(s + shard_size, n_items)) for s in range(0, n_items, shard_size)]

    todo = []
    for i, (s, e) in enumerate(ranges):
        if i % world != rank:
            continue
        path = folder / shard_name(s, e)
        if overwrite or not path.exists():
            todo.append((s, e))
            continue
        try:
            m, _ = read_shard(path, khash, load=True)
            if (m.get("start"), m.get("stop")) != (s, e):
                raise CacheError(path, f"shard says it holds items [{m.get('start')}, {m.get('stop')})")
        except CacheError as err:
            note(f"{err}; recomputing it")
            todo.append((s, e))
            continue
        if retry is not None and retry(m):
            note(f"{path}: some of its skipped items are readable now; recomputing it")
            todo.append((s, e))
    if progress_total is not None:
        progress_total(sum(e - s for s, e in todo))
    for s, e in todo:
        tensors, info = compute(s, e)
        for k, v in tensors.items():
            if v.is_floating_point() and not torch.isfinite(v).all():
                bad = (~torch.isfinite(v.reshape(len(v), -1))).any(dim=1).nonzero().flatten()
                raise ValueError(f"the model produced NaN or Inf '{k}' for {len(bad)} of the items "
                                 f"[{s}, {e}) (first rows {bad[:5].tolist()}); nothing was written for them. "
                                 "Check the weights and the precision (fp16 overflow?).")
        save_shard(folder / shard_name(s, e), tensors, {"key_hash": khash, "start": s, "stop": e, **info})
    barrier()
    status, error, meta = {}, None, None
    if rank == 0:
        try:
            meta = _record(store, folder, key, khash, ranges, finalize, current, mpath)
        except Exception as e:  # every rank learns of it (no rank waits for a result that never comes)
            error, status = e, {"error": str(e), "type": type(e).__name__}
    status = share_from_rank0(status)
    if error is not None:
        raise error
    if "error" in status:
        raise {"TooManySkipped": TooManySkipped, "ValueError": ValueError}.get(status["type"], RuntimeError)(
            status["error"])
    return meta if meta is not None else read_json(mpath)


def _record(store, folder, key, khash, ranges, finalize, current, mpath) -> dict:
    infos = []
    for s, e in ranges:
        try:
            m, _ = read_shard(folder / shard_name(s, e), khash, load=False)
        except CacheError as err:
            raise RuntimeError(f"{err} after extraction (another run of other inputs may have removed it); "
                               "rerun the same command (finished shards are kept).") from None
        infos.append(m)
    extra = finalize(folder, infos)
    meta = {**extra, "format": FORMAT_VERSION, "key": key, "key_hash": khash, "folder": folder.name,
            "shards": [shard_name(s, e) for s, e in ranges], "shard_rows": [m["rows"] for m in infos],
            "shard_crc": [m["crc"] for m in infos], "n_rows": sum(m["rows"] for m in infos)}
    if _same_result(current, meta):
        meta = current  # a verified cache hit: the metadata stays as it was written
    else:
        write_json(mpath, meta)  # the switch: readers see the old complete result or the new one
    _cleanup(store, key["dtype"], folder, meta["shards"])
    return meta
