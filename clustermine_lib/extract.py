"""CLIP image features, of a registered dataset or of any image folder, computed once into the feature
store and loaded from it; the kNN cache of TEMI.

What is stored (every matrix is float32 unless ``dtype="float16"``):

- image features: ``model.encode_image(x)``, i.e. AFTER CLIP's visual projection, in the shared
  image-text space where ``h·z`` is CLIP's zero-shot logit before the logit scale (Eq. 1 needs that
  space), then L2-normalised. Shape (N, D); N excludes unreadable images;
- ``logit_scale``: CLIP's learned exp(logit_scale) read from the weights (1 / pretraining temperature;
  ``scoring.default_tau`` turns it into the paper's tau);
- ``cached_knn``: the k nearest neighbours of a dataset's cached image features (TEMI).

Text features live in ``text_features``; ``ModelRef`` (which model made the features, without loading
it: a cache hit never loads the weights) in ``encoder``; both stay importable from here.

Two entry points share one path (``_extract_images``): ``extract_image_features`` for a registered
dataset (``datasets``: its folder under DATA_ROOT and its labels) and ``extract_folder_features`` for
any folder of images (every image below it, in any layout; label -1), stored under
``<cache_dir>/<model_id>/folders/<folder name>.<hash of its absolute path>/`` and keyed by the model,
the pre-processing, the folder and the size and modification time of every file, so an edited, added
or removed image is a new key (recomputed) and a killed run resumes from its finished shards. Image
``index`` maps a feature row to its line in ``files.txt``; the metadata holds the model, tag,
checkpoint path and fingerprint, dataset or folder, image count, dim, logit scale, code version and
the skipped files (missing / unreadable). Layout, keys, verification, resuming and ``torchrun``
sharding: ``feature_store``.

Every loader verifies what it reads (``feature_store.check_result`` / ``load_shards``): features made
from other inputs than the caller's (another model or weights, another image list, an older cache
format) or a damaged file raise ``CacheError`` naming the file and the command that rebuilds it. A
dataset or folder where every image, or more than ``max_skipped`` of them, could not be read is an
error (``TooManySkipped``) listing them by reason, and is not recorded as complete.
"""
from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .benchmark import FeatureSet
from .datasets import (ImageListDataset, collate_skip, dataset_dir, image_problem, list_folder, list_images,
                       resolve_data_root, resolve_dataset)
from .encoder import ModelRef, autocast, common_meta, model_info, progress_bar
from .feature_store import (DEFAULT_SHARD_SIZE, DTYPES, FORMAT_VERSION, CacheError, TooManySkipped, code_version,
                            find_result, image_dir, key_hash, knn_path, load_shards, model_dir, note, read_shard,
                            run_shards, save_shard)
from .fileio import atomic_write, content_hash, read_json, write_json
from .models import preprocess_config

DEFAULT_MAX_SKIPPED = 0.01  # share of a dataset's images that may be unreadable before extraction fails


# ----------------------------------------------------------------------------- image features
@dataclass
class ImageFeatures:
    """Cached image features of one dataset or folder. ``index[i]`` is row i's line in ``files.txt``."""

    dataset: str  # registered name, or "folder:<path>"
    features: torch.Tensor  # (N, D) float, L2-normalised, after the visual projection
    labels: torch.Tensor  # (N,) long: ImageNet-1K index, -1 for OOD and for folders
    index: torch.Tensor  # (N,) long
    skipped: list[str]  # unreadable or missing files (relative paths), not in ``features``
    meta: dict
    path: Path  # the result folder (shards, files.txt)

    def as_feature_set(self, name: str | None = None) -> FeatureSet:
        return FeatureSet(name or self.dataset, self.features.float(), self.labels)

    def files(self) -> list[str]:
        """Every listed image (relative path), in ``files.txt`` order: ``index`` points into it. Verified
        against the image list the features were made from (``CacheError`` otherwise)."""
        path = self.path / "files.txt"
        try:
            rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"), newline=""), delimiter="\t"))
            items = [(r[0], int(r[1])) for r in rows]
        except (OSError, UnicodeDecodeError, ValueError, IndexError, csv.Error) as e:
            raise CacheError(path, f"unreadable image list ({e})") from None
        if content_hash(items) != self.meta["key"]["items_hash"]:
            raise CacheError(path, "does not match the image list the features were made from: damaged")
        return [p for p, _ in items]

    def row_files(self) -> list[str]:
        """The relative path of each feature row (``files()`` in row order)."""
        files = self.files()
        return [files[i] for i in self.index.tolist()]


def _write_file_list(path: Path, items) -> None:
    buf = io.StringIO(newline="")
    csv.writer(buf, delimiter="\t", lineterminator="\n").writerows(items)
    atomic_write(path, buf.getvalue())


def _compute_image_shard(ref: ModelRef, ds: ImageListDataset, start: int, stop: int, batch_size: int,
                         num_workers: int, dtype: torch.dtype, bar):
    """Encode items [start, stop): returns ({features (n, D), labels (n,), index (n,)}, skipped, info)."""
    from torch.utils.data import DataLoader, Subset

    m = ref.get()
    loader = DataLoader(Subset(ds, range(start, stop)), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, collate_fn=collate_skip, pin_memory=ref.device.type == "cuda")
    feats, labels, index, skipped = [], [], [], []
    with torch.inference_mode():
        for images, y, idx, bad in loader:
            skipped.extend(int(i) for i in bad)
            if images is not None:
                with autocast(ref.device):
                    f = m.model.encode_image(images.to(ref.device, non_blocking=True))
                feats.append(F.normalize(f.float(), dim=-1).cpu().to(dtype))
                labels.append(y), index.append(idx)
            bar.update(len(y) + len(bad))
    tensors = {"features": torch.cat(feats) if feats else torch.empty(0, m.dim, dtype=dtype),
               "labels": torch.cat(labels) if labels else torch.empty(0, dtype=torch.long),
               "index": torch.cat(index) if index else torch.empty(0, dtype=torch.long)}
    missing = [i for i in skipped if not (ds.root / ds.items[i][0]).is_file()]
    return tensors, {"skipped": skipped, "missing": missing, **model_info(m)}


def image_key(ref: ModelRef, dataset: str, items, dtype: str) -> dict:
    """Everything a dataset's image features depend on: the cache key."""
    return {"kind": "image", "format": FORMAT_VERSION, "model": ref.identity, "preprocess": preprocess_config(ref.spec),
            "dataset": resolve_dataset(dataset).name, "n_items": len(items), "items_hash": content_hash(items),
            "dtype": dtype, "precision": ref.precision}


def folder_key(ref: ModelRef, root: Path, items, stats, dtype: str) -> dict:
    """Everything a folder's image features depend on: the cache key. ``stats``: ``(relpath, size,
    mtime_ns)`` of every listed file, so any edited, added or removed image is another key."""
    return {"kind": "image-folder", "format": FORMAT_VERSION, "model": ref.identity,
            "preprocess": preprocess_config(ref.spec), "folder": str(root), "n_items": len(items),
            "items_hash": content_hash(items), "files_hash": content_hash(stats), "dtype": dtype,
            "precision": ref.precision}


def folder_dir(model_id: str, root: Path, cache_dir=None) -> Path:
    """Store of one folder's image features: ``<cache_dir>/<model_id>/folders/<name>.<path hash>``."""
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in root.name)[:40] or "root"
    return model_dir(model_id, cache_dir) / "folders" / f"{safe}.{content_hash(str(root))[:10]}"


def _skipped_error(name: str, root: Path, items, skipped: list[int], missing: set, folder: Path,
                   max_skipped: float) -> str | None:
    """The ``TooManySkipped`` message when every image, or more than ``max_skipped`` of them, was
    skipped (the full list is written to ``<folder>/skipped.txt``), else None."""
    n, k = len(items), len(skipped)
    if k == 0 or (k < n and k <= max_skipped * n):
        return None
    gone = [items[i][0] for i in skipped if i in missing]
    bad = [items[i][0] for i in skipped if i not in missing]
    listing = folder / "skipped.txt"
    atomic_write(listing, "".join(f"missing\t{p}\n" for p in gone) + "".join(f"unreadable\t{p}\n" for p in bad))

    def some(paths):
        return ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")

    parts = ([f"{len(gone)} missing ({some(gone)})"] if gone else []) + \
            ([f"{len(bad)} unreadable, not a decodable image ({some(bad)})"] if bad else [])
    head = (f"{name}: none of its {n} images could be read" if k == n else
            f"{name}: {k} of {n} images ({100 * k / n:.1f}%) could not be read, more than --max-skipped "
            f"{max_skipped:g} allows")
    return (f"{head}: {'; '.join(parts)} (under {root}; full list: {listing}). Fix or remove those files "
            "and rerun (finished shards are kept)" + ("" if k == n else
            f", or accept them with --max-skipped {min(1.0, round(k / n + 0.005, 2)):g}") + ".")


def _check_options(dtype: str, max_skipped: float) -> None:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}.")
    if not 0 <= max_skipped <= 1:
        raise ValueError(f"max_skipped must be a share in [0, 1], got {max_skipped!r}.")


def _extract_images(ref: ModelRef, name: str, root: Path, items, key: dict, store: Path, meta: dict, *,
                    batch_size: int, num_workers: int | None, shard_size: int, overwrite: bool, progress: bool,
                    max_skipped: float, desc: str | None = None) -> dict:
    """Encode ``items`` (``(relpath, label)`` under ``root``) into ``store`` for ``key``, resuming and
    verifying through ``feature_store.run_shards``; ``meta``: what the result's metadata adds. Returns
    the metadata of the complete result (``TooManySkipped``: nothing recorded). ``name`` is said in
    errors, ``desc`` (default ``name``) on the progress bar."""
    dtype = key["dtype"]
    workers = min(8, os.cpu_count() or 1) if num_workers is None else num_workers
    state = {}

    def compute(s, e):
        if "ds" not in state:
            state["ds"] = ImageListDataset(root, items, ref.get().preprocess)
        return _compute_image_shard(ref, state["ds"], s, e, batch_size, workers, DTYPES[dtype], state["bar"])

    def set_total(n):
        state["bar"] = progress_bar(n, f"{desc or name} images", "img", progress)

    def retry(shard):  # a shard that skipped files which are readable now is recomputed on resume
        return any(image_problem(root / items[i][0]) is None for i in shard.get("skipped", []))

    def finalize(folder, infos):  # rank 0 only
        skipped = sorted(i for m in infos for i in m["skipped"])
        missing = {i for m in infos for i in m.get("missing", [])}
        problem = _skipped_error(name, root, items, skipped, missing, folder, max_skipped)
        if problem:
            raise TooManySkipped(problem)
        _write_file_list(folder / "files.txt", items)
        return {**common_meta(ref, infos), **meta, "n_items": len(items), "dtype": dtype, "shard_size": shard_size,
                "max_skipped": max_skipped, "skipped": [items[i][0] for i in skipped],
                "missing": [items[i][0] for i in skipped if i in missing]}

    try:
        return run_shards(store, key, len(items), shard_size, compute, finalize, overwrite, set_total, retry)
    finally:
        if "bar" in state:
            state["bar"].close()


def extract_image_features(model, pretrained, dataset: str, *, checkpoint=None, data_root=None, cache_dir=None,
                           batch_size: int = 256, num_workers: int | None = None, device=None,
                           shard_size: int = DEFAULT_SHARD_SIZE, dtype: str = "float32", seed: int = 0,
                           overwrite: bool = False, progress: bool = True, load: bool = True,
                           download: bool = False, max_skipped: float = DEFAULT_MAX_SKIPPED, items=None):
    """Image features of a registered dataset, computed once and cached (see the module docstring).

    ``model``: a registry name or a ``LoadedModel`` (then ``pretrained``/``checkpoint`` are ignored).
    ``max_skipped``: the share of images that may be unreadable or missing (more, or all of them:
    ``TooManySkipped``, nothing recorded); ``items``: the dataset's ``list_images`` if already listed.
    Returns ``ImageFeatures`` (or only its metadata dict with ``load=False``). Under torchrun every
    rank calls this; shards are split across ranks.
    """
    _check_options(dtype, max_skipped)
    ref = ModelRef.resolve(model, pretrained, checkpoint, device, download)
    spec = resolve_dataset(dataset)
    items = list_images(spec, data_root, seed) if items is None else [tuple(i) for i in items]
    root = dataset_dir(spec, data_root)
    extra = {"kind": "image", "dataset": spec.name, "role": spec.role,
             "data_root": str(resolve_data_root(data_root)), "folder_under_data_root": spec.folder, "seed": seed,
             "classes": sorted({y for _, y in items if y >= 0}) if spec.classes not in (0, 1000) else None}
    store = image_dir(ref.model_id, spec.name, cache_dir)
    meta = _extract_images(ref, spec.name, root, items, image_key(ref, spec.name, items, dtype), store, extra,
                           batch_size=batch_size, num_workers=num_workers, shard_size=shard_size,
                           overwrite=overwrite, progress=progress, max_skipped=max_skipped)
    if not load:
        return meta

    def rebuild():
        from .feature_check import make_command

        return make_command(ref, [meta["dataset"]], cache_dir=cache_dir, dtype=meta["dtype"])

    return _image_result(store, meta, meta["dataset"], rebuild)


def extract_folder_features(model, pretrained, folder, *, checkpoint=None, cache_dir=None, batch_size: int = 256,
                            num_workers: int | None = None, device=None, shard_size: int = DEFAULT_SHARD_SIZE,
                            dtype: str = "float32", overwrite: bool = False, progress: bool = True,
                            download: bool = False, max_skipped: float = DEFAULT_MAX_SKIPPED) -> ImageFeatures:
    """Image features of every image below ``folder`` (any layout, recursive, hidden files skipped;
    ``datasets.list_folder``), computed once and cached like ``extract_image_features`` (resumable,
    verified on every hit; key in ``folder_key``). ``ImageFeatures.row_files()`` gives each row's path
    relative to ``folder``; labels are -1. An empty folder, or one where no image (or more than
    ``max_skipped`` of them) can be read, is an error naming the folder and the files."""
    _check_options(dtype, max_skipped)
    ref = ModelRef.resolve(model, pretrained, checkpoint, device, download)
    root = Path(folder).expanduser().resolve()
    items = list_folder(root)
    stats = []
    for p, _ in items:
        try:
            st = (root / p).stat()
            stats.append((p, st.st_size, st.st_mtime_ns))
        except OSError:  # vanished since the listing: read as missing
            stats.append((p, -1, -1))
    store = folder_dir(ref.model_id, root, cache_dir)
    name = f"folder:{root}"
    meta = _extract_images(ref, str(root), root, items, folder_key(ref, root, items, stats, dtype), store,
                           {"kind": "image-folder", "dataset": name, "folder": str(root)},
                           batch_size=batch_size, num_workers=num_workers, shard_size=shard_size,
                           overwrite=overwrite, progress=progress, max_skipped=max_skipped, desc=root.name)
    return _image_result(store, meta, name, lambda: f"rerun the same command with --overwrite ({root})")


def _image_result(store: Path, meta: dict, name: str, rebuild) -> ImageFeatures:
    try:
        t = load_shards(store, meta)
    except CacheError as e:
        raise e.with_hint(rebuild()) from None
    return ImageFeatures(name, t["features"].float(), t["labels"], t["index"], meta["skipped"], meta,
                         store / meta["folder"])


def image_expect(ref: ModelRef, dataset: str) -> dict:
    """The key fields a reader of ``dataset``'s image features knows without the images."""
    return {"kind": "image", "model": ref.identity, "dataset": resolve_dataset(dataset).name,
            "preprocess": preprocess_config(ref.spec)}


def load_image_features(model, pretrained, dataset: str, *, checkpoint=None, cache_dir=None,
                        dtype: str | None = None) -> ImageFeatures:
    """Read cached image features (no data, no weights needed), verified (``feature_store``).
    ``dtype``: float32 or float16; None: float32 if cached, else float16. A missing, stale or damaged
    cache raises with the command that makes it."""
    ref = ModelRef.resolve(model, pretrained, checkpoint, "cpu")
    store = image_dir(ref.model_id, dataset, cache_dir)
    try:
        meta = find_result(store, dtype, image_expect(ref, dataset))
    except CacheError:
        from .feature_check import check_cached  # its error names the file, what is wrong and the command

        check_cached(ref, datasets=[dataset], cache_dir=cache_dir, dtype=dtype)
        meta = find_result(store, dtype, image_expect(ref, dataset))  # completed meanwhile by another run

    def rebuild():
        from .feature_check import make_command

        return make_command(ref, [meta["dataset"]], cache_dir=cache_dir, dtype=meta["dtype"])

    return _image_result(store, meta, meta["dataset"], rebuild)


# ----------------------------------------------------------------------------- kNN cache (TEMI)
def _knn_key(features_meta: dict, k: int, n: int) -> dict:
    return {"kind": "knn", "features_key_hash": features_meta["key_hash"], "k": k, "n": n, "format": FORMAT_VERSION}


def stored_knn(feats: ImageFeatures, cache_dir=None) -> list[dict]:
    """The kNN files ``cached_knn`` (``make features FEATURE_ARGS="--knn K"``) made from exactly these
    features: ``[{"path", "k", "n", "key_hash"}]``, fewest columns first. Only their small JSON
    sidecars are read here; ``read_stored_knn`` verifies the tensor itself."""
    n, found, dtype = feats.features.shape[0], [], feats.meta["dtype"]
    folder = knn_path(feats.meta["model_id"], feats.dataset, 1, cache_dir, dtype).parent
    for side in folder.glob(f"{feats.dataset}.{dtype}.k*.json"):
        side_meta = read_json(side)
        k = side_meta.get("k") if isinstance(side_meta, dict) else None
        if not isinstance(k, int):
            continue  # damaged: cached_knn rebuilds it; TEMI computes its own kNN
        path = knn_path(feats.meta["model_id"], feats.dataset, k, cache_dir, dtype)
        khash = key_hash(_knn_key(feats.meta, k, n))
        if path.with_suffix(".json") == side and side_meta.get("key_hash") == khash and path.exists():
            found.append({"path": str(path), "k": k, "n": n, "key_hash": khash})
    return sorted(found, key=lambda e: e["k"])


def read_stored_knn(entry: dict) -> torch.Tensor:
    """(n, k) long indices of one ``stored_knn`` entry, verified (``CacheError`` naming the file)."""
    return _verified_knn(Path(entry["path"]), entry["key_hash"], entry["n"], entry["k"])


def _verified_knn(path: Path, khash: str, n: int, k: int) -> torch.Tensor:
    _, t = read_shard(path, khash, n, load=True)
    knn = t.get("knn")
    if knn is None or tuple(knn.shape) != (n, k) or knn.dtype != torch.long:
        raise CacheError(path, f"holds no ({n}, {k}) int64 'knn' tensor")
    if n and (int(knn.min()) < 0 or int(knn.max()) >= n or (knn == torch.arange(n)[:, None]).any()):
        raise CacheError(path, "holds indices out of range or a row's own index")
    return knn


def cached_knn(model, pretrained=None, dataset: str = "imagenet-train", k: int = 50, *, checkpoint=None,
               cache_dir=None, chunk_size: int = 4096, device=None, progress: bool = False,
               overwrite: bool = False, dtype: str | None = None) -> torch.Tensor:
    """(N, k) long indices of each cached image feature's k nearest neighbours (self excluded),
    computed once by ``knn.knn_indices`` and stored next to the features. Rows follow the
    cached feature rows. Verified when read (key of the features it was made from, shape, index range,
    checksum); recomputed when those features changed or the file is damaged (said on stderr)."""
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}.")
    ref = ModelRef.resolve(model, pretrained, checkpoint, "cpu")
    feats = load_image_features(ref, None, dataset, cache_dir=cache_dir, dtype=dtype)
    n = feats.features.shape[0]
    if k >= n:
        raise ValueError(f"k = {k} nearest neighbours need more than {n} cached images of {feats.dataset}.")
    path = knn_path(ref.model_id, feats.dataset, k, cache_dir, feats.meta["dtype"])
    key = _knn_key(feats.meta, k, n)
    khash = key_hash(key)
    if path.exists() and not overwrite:
        try:
            return _verified_knn(path, khash, n, k)
        except CacheError as e:
            note(f"{e}; recomputing it")
    from .knn import knn_indices

    knn = knn_indices(feats.features, k=k, chunk_size=chunk_size, device=device, progress=progress).cpu().long()
    save_shard(path, {"knn": knn}, {"key_hash": khash, "key": key})
    write_json(path.with_suffix(".json"), {"key": key, "key_hash": khash, "dataset": feats.dataset, "k": k, "n": n,
                                           "model_id": feats.meta["model_id"], "features": str(feats.path),
                                           "code_version": code_version()})
    return knn
