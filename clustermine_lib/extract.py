"""CLIP image and text features, computed once into the feature store and loaded from it; the kNN cache.

What is stored (every matrix is float32 unless ``dtype="float16"``):

- image features: ``model.encode_image(x)``, i.e. AFTER CLIP's visual projection, in the shared
  image-text space where ``h·z`` is CLIP's zero-shot logit before the logit scale (Eq. 1 needs that
  space), then L2-normalised. Shape (N, D); N excludes unreadable images;
- text features of a list of concept names under a prompt set: for each concept, every template is
  filled, encoded with ``model.encode_text`` (after the text projection) and L2-normalised; the
  concept's feature is the mean of those, re-normalised. Shape (K, D);
- ``logit_scale``: CLIP's learned exp(logit_scale) read from the weights (1 / pretraining temperature;
  ``scoring.default_tau`` turns it into the paper's tau);
- ``cached_knn``: the k nearest neighbours of a dataset's cached image features (TEMI).

``ModelRef`` says which model made the features without loading it (a cache hit never loads the
weights). Image ``index`` maps a feature row to its line in ``files.txt``; the metadata holds the
model, tag, checkpoint path and fingerprint, dataset or corpus, prompt set and templates, image
count, dim, logit scale, code version and the skipped files (missing / unreadable). Layout, keys,
verification, resuming and ``torchrun`` sharding: ``feature_store``.

Every loader verifies what it reads (``feature_store.check_result`` / ``load_shards``): features made
from other inputs than the caller's (another model or weights, other names or prompt templates, an
older cache format) or a damaged file raise ``CacheError`` naming the file and the ``make features``
command that rebuilds it. A dataset where every image, or more than ``max_skipped`` of them, could
not be read is an error (``TooManySkipped``) listing them by reason, and is not recorded as complete.
"""
from __future__ import annotations

import contextlib
import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .benchmark import FeatureSet
from .datasets import (ImageListDataset, collate_skip, dataset_dir, image_problem, list_images, resolve_data_root,
                       resolve_dataset)
from .distributed import rank_world
from .feature_store import (DEFAULT_SHARD_SIZE, DTYPES, FORMAT_VERSION, CacheError, TooManySkipped, check_result,
                            code_version, find_result, image_dir, key_hash, knn_path, load_shards, note, provenance,
                            read_shard, run_shards, save_shard, text_dir)
from .fileio import atomic_write, content_hash, write_json
from .models import (LoadedModel, check_checkpoint, default_device, file_fingerprint, load_model,
                     model_id as _model_id, model_identity, preprocess_config, resolve_model)
from .prompts import DEFAULT_PROMPTS

DEFAULT_MAX_SKIPPED = 0.01  # share of a dataset's images that may be unreadable before extraction fails


# ----------------------------------------------------------------------------- the model, lazily
@dataclass
class ModelRef:
    """What identifies a model's features, without loading it; ``get()`` loads the weights once."""

    spec: object  # models.ModelSpec
    checkpoint: str | None
    fingerprint: str | None
    device: torch.device
    download: bool = False
    loaded: LoadedModel | None = None

    @classmethod
    def resolve(cls, model, pretrained=None, checkpoint=None, device=None, download=False) -> "ModelRef":
        """``model``: a ``ModelRef`` (returned as is), a ``LoadedModel``, or a registry name /
        open_clip architecture / config ``.json`` with ``pretrained`` (``"none"``: no tag) or ``checkpoint``."""
        if isinstance(model, cls):  # already resolved (the CLI shares one lazily loaded model)
            return model
        if isinstance(model, LoadedModel):
            return cls(model.spec, model.checkpoint if model.checkpoint_fingerprint else None,
                       model.checkpoint_fingerprint, torch.device(model.device), loaded=model)
        if isinstance(pretrained, str) and pretrained.lower() in ("", "none"):
            pretrained = None
        spec = resolve_model(model, pretrained, checkpoint)
        fingerprint = None
        if checkpoint is not None:
            checkpoint = str(check_checkpoint(checkpoint))
            fingerprint = file_fingerprint(checkpoint)
        return cls(spec, checkpoint, fingerprint, default_device(device), download)

    @property
    def model_id(self) -> str:
        return _model_id(self.spec, self.fingerprint)

    @property
    def identity(self) -> dict:
        return model_identity(self.spec, self.fingerprint)

    @property
    def precision(self) -> str:
        return "amp-fp16" if self.device.type == "cuda" else "fp32"

    def get(self) -> LoadedModel:
        if self.loaded is None:
            self.loaded = load_model(self.spec, checkpoint=self.checkpoint, device=self.device,
                                     download=self.download)
        return self.loaded


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def _model_info(m: LoadedModel) -> dict:
    return {"dim": m.dim, "logit_scale": m.logit_scale, "logit_bias": m.logit_bias}


def _common_meta(ref: ModelRef, infos: list[dict]) -> dict:
    first = infos[0] if infos else {}
    return {"model": ref.spec.arch, "pretrained": ref.spec.pretrained, "model_id": ref.model_id,
            "checkpoint": ref.checkpoint, "checkpoint_sha256": ref.fingerprint,
            "dim": first.get("dim"), "logit_scale": first.get("logit_scale"),
            "logit_bias": first.get("logit_bias"), "precision": ref.precision, **provenance()}


def _progress(total: int, desc: str, unit: str, progress: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not progress or rank_world()[0] != 0)


# ----------------------------------------------------------------------------- image features
@dataclass
class ImageFeatures:
    """Cached image features of one dataset. ``index[i]`` is row i's line in ``files.txt``."""

    dataset: str
    features: torch.Tensor  # (N, D) float, L2-normalised, after the visual projection
    labels: torch.Tensor  # (N,) long: ImageNet-1K index, -1 for OOD
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
                with _autocast(ref.device):
                    f = m.model.encode_image(images.to(ref.device, non_blocking=True))
                feats.append(F.normalize(f.float(), dim=-1).cpu().to(dtype))
                labels.append(y), index.append(idx)
            bar.update(len(y) + len(bad))
    tensors = {"features": torch.cat(feats) if feats else torch.empty(0, m.dim, dtype=dtype),
               "labels": torch.cat(labels) if labels else torch.empty(0, dtype=torch.long),
               "index": torch.cat(index) if index else torch.empty(0, dtype=torch.long)}
    missing = [i for i in skipped if not (ds.root / ds.items[i][0]).is_file()]
    return tensors, {"skipped": skipped, "missing": missing, **_model_info(m)}


def image_key(ref: "ModelRef", dataset: str, items, dtype: str) -> dict:
    """Everything a dataset's image features depend on: the cache key."""
    return {"kind": "image", "format": FORMAT_VERSION, "model": ref.identity, "preprocess": preprocess_config(ref.spec),
            "dataset": resolve_dataset(dataset).name, "n_items": len(items), "items_hash": content_hash(items),
            "dtype": dtype, "precision": ref.precision}


def text_key(ref: "ModelRef", names, templates) -> dict:
    """Everything the text features of ``names`` under ``templates`` depend on: the cache key."""
    return {"kind": "text", "format": FORMAT_VERSION, "model": ref.identity, "names_hash": content_hash(list(names)),
            "n_items": len(names), "templates": list(templates), "dtype": "float32", "precision": ref.precision}


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
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}.")
    if not 0 <= max_skipped <= 1:
        raise ValueError(f"max_skipped must be a share in [0, 1], got {max_skipped!r}.")
    ref = ModelRef.resolve(model, pretrained, checkpoint, device, download)
    spec = resolve_dataset(dataset)
    items = list_images(spec, data_root, seed) if items is None else [tuple(i) for i in items]
    root = dataset_dir(spec, data_root)
    key = image_key(ref, spec.name, items, dtype)
    store = image_dir(ref.model_id, spec.name, cache_dir)
    workers = min(8, os.cpu_count() or 1) if num_workers is None else num_workers
    state = {}

    def compute(s, e):
        if "ds" not in state:
            state["ds"] = ImageListDataset(root, items, ref.get().preprocess)
        return _compute_image_shard(ref, state["ds"], s, e, batch_size, workers, DTYPES[dtype], state["bar"])

    def set_total(n):
        state["bar"] = _progress(n, f"{spec.name} images", "img", progress)

    def retry(shard):  # a shard that skipped files which are readable now is recomputed on resume
        return any(image_problem(root / items[i][0]) is None for i in shard.get("skipped", []))

    def finalize(folder, infos):  # rank 0 only
        skipped = sorted(i for m in infos for i in m["skipped"])
        missing = {i for m in infos for i in m.get("missing", [])}
        problem = _skipped_error(spec.name, root, items, skipped, missing, folder, max_skipped)
        if problem:
            raise TooManySkipped(problem)
        _write_file_list(folder / "files.txt", items)
        return {**_common_meta(ref, infos), "kind": "image", "dataset": spec.name, "role": spec.role,
                "data_root": str(resolve_data_root(data_root)), "folder_under_data_root": spec.folder,
                "n_items": len(items), "dtype": dtype, "shard_size": shard_size, "seed": seed,
                "max_skipped": max_skipped,
                "classes": sorted({y for _, y in items if y >= 0}) if spec.classes not in (0, 1000) else None,
                "skipped": [items[i][0] for i in skipped],
                "missing": [items[i][0] for i in skipped if i in missing]}

    meta = run_shards(store, key, len(items), shard_size, compute, finalize, overwrite, set_total, retry)
    if "bar" in state:
        state["bar"].close()
    return _image_result(ref, store, meta, cache_dir) if load else meta


def _image_result(ref: "ModelRef", store: Path, meta: dict, cache_dir=None) -> ImageFeatures:
    try:
        t = load_shards(store, meta)
    except CacheError as e:
        from .features import make_command

        raise e.with_hint(make_command(ref, [meta["dataset"]], cache_dir=cache_dir, dtype=meta["dtype"])) from None
    return ImageFeatures(meta["dataset"], t["features"].float(), t["labels"], t["index"], meta["skipped"],
                         meta, store / meta["folder"])


def image_expect(ref: "ModelRef", dataset: str) -> dict:
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
        from .features import check_cached  # its error names the file, what is wrong and the command

        check_cached(ref, datasets=[dataset], cache_dir=cache_dir, dtype=dtype)
        meta = find_result(store, dtype, image_expect(ref, dataset))  # completed meanwhile by another run
    return _image_result(ref, store, meta, cache_dir)


# ----------------------------------------------------------------------------- text features
@dataclass
class TextFeatures:
    name: str
    prompts: str
    names: list[str]
    features: torch.Tensor  # (K, D) float, L2-normalised mean of normalised template features
    meta: dict
    path: Path


def prompt_templates(prompts) -> tuple[str, list[str]]:
    """``(name, templates)`` of ``prompts``: a registered prompt-set name, or a list of templates with
    one ``{}`` each (named ``custom-<hash>``)."""
    if isinstance(prompts, str):
        from .prompts import get_prompts

        return prompts, list(get_prompts(prompts))
    templates = list(prompts)
    if not templates or not all(isinstance(t, str) and t.count("{}") == 1 for t in templates):
        raise ValueError("prompts must be a prompt-set name or a non-empty list of templates with exactly one '{}'.")
    return f"custom-{content_hash(templates)[:8]}", templates


def _compute_text_shard(ref: ModelRef, names, templates, start: int, stop: int, batch_size: int, bar):
    """Encode concepts [start, stop) -> ({features (n, D)}, [], info); batches of ~batch_size prompts."""
    m = ref.get()
    per_batch = max(1, batch_size // len(templates))
    out = []
    with torch.inference_mode():
        for s in range(start, stop, per_batch):
            chunk = names[s:min(s + per_batch, stop)]
            tokens = m.tokenizer([t.format(n) for n in chunk for t in templates]).to(ref.device)
            with _autocast(ref.device):
                z = m.model.encode_text(tokens)
            z = F.normalize(z.float(), dim=-1).view(len(chunk), len(templates), -1)
            out.append(F.normalize(z.mean(dim=1), dim=-1).cpu())
            bar.update(len(chunk))
    return {"features": torch.cat(out) if out else torch.empty(0, m.dim)}, _model_info(m)


def extract_text_features(model, pretrained, names, *, name: str = "custom", prompts=DEFAULT_PROMPTS,
                          checkpoint=None, cache_dir=None, batch_size: int = 1024, device=None,
                          shard_size: int = DEFAULT_SHARD_SIZE, overwrite: bool = False, progress: bool = True,
                          extra_meta: dict | None = None, download: bool = False) -> TextFeatures:
    """Text features (K, D) of concept ``names`` under a prompt set, computed once and cached."""
    names = list(names)
    if not names or not all(isinstance(n, str) for n in names):
        raise ValueError("names must be a non-empty list of concept strings.")
    ref = ModelRef.resolve(model, pretrained, checkpoint, device, download)
    prompt_name, templates = prompt_templates(prompts)
    key = text_key(ref, names, templates)
    store = text_dir(ref.model_id, name, names, prompt_name, cache_dir)
    state = {}

    def set_total(n):
        state["bar"] = _progress(n, f"{name} text", "concept", progress)

    def compute(s, e):
        return _compute_text_shard(ref, names, templates, s, e, batch_size, state["bar"])

    def finalize(folder, infos):
        return {**_common_meta(ref, infos), "kind": "text", "name": name, "prompts": prompt_name,
                "templates": templates, "n_items": len(names), "dtype": "float32", "shard_size": shard_size,
                "skipped": [], **(extra_meta or {})}

    meta = run_shards(store, key, len(names), shard_size, compute, finalize, overwrite, set_total)
    if "bar" in state:
        state["bar"].close()
    return _text_result(ref, store, meta, name, prompts, names, cache_dir)


def _text_result(ref, store, meta, name, prompts, names, cache_dir) -> TextFeatures:
    try:
        features = load_shards(store, meta)["features"]
    except CacheError as e:
        from .features import text_command

        raise e.with_hint(text_command(ref, name, prompts, cache_dir)) from None
    return TextFeatures(name, meta["prompts"], names, features, meta, store / meta["folder"])


def text_expect(ref: "ModelRef", names, templates) -> dict:
    """The key fields a reader of text features checks (all but the precision they were computed in)."""
    key = text_key(ref, names, templates)
    return {k: key[k] for k in ("kind", "model", "names_hash", "n_items", "templates", "dtype")}


def load_text_features(model, pretrained, names, *, name: str = "custom", prompts=DEFAULT_PROMPTS, checkpoint=None,
                       cache_dir=None) -> TextFeatures:
    """Read cached text features, verified against ``names`` and the prompt set's current templates;
    a missing, stale or damaged cache raises ``CacheError`` naming the file, what is wrong and the
    command that makes it."""
    names = list(names)
    ref = ModelRef.resolve(model, pretrained, checkpoint, "cpu")
    prompt_name, templates = prompt_templates(prompts)
    store = text_dir(ref.model_id, name, names, prompt_name, cache_dir)
    try:
        meta = check_result(store, "float32", text_expect(ref, names, templates))
    except CacheError as e:
        from .features import _elsewhere, text_command

        reason = f"text features of {name} x {prompt_name}: {e.reason}"
        if e.missing:
            reason += _elsewhere(ref, store, cache_dir)
        raise CacheError(e.path, reason, e.missing, text_command(ref, name, prompts, cache_dir)) from None
    return _text_result(ref, store, meta, name, prompts, names, cache_dir)


# ----------------------------------------------------------------------------- kNN cache (TEMI)
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
    computed once by ``clustering.knn_indices`` and stored next to the features. Rows follow the
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
    key = {"kind": "knn", "features_key_hash": feats.meta["key_hash"], "k": k, "n": n, "format": FORMAT_VERSION}
    khash = key_hash(key)
    if path.exists() and not overwrite:
        try:
            return _verified_knn(path, khash, n, k)
        except CacheError as e:
            note(f"{e}; recomputing it")
    from .clustering import knn_indices  # lazily: clustering is optional for feature extraction

    knn = knn_indices(feats.features, k=k, chunk_size=chunk_size, device=device, progress=progress).cpu().long()
    save_shard(path, {"knn": knn}, {"key_hash": khash, "key": key})
    write_json(path.with_suffix(".json"), {"key": key, "key_hash": khash, "dataset": feats.dataset, "k": k, "n": n,
                                           "model_id": feats.meta["model_id"], "features": str(feats.path),
                                           "code_version": code_version()})
    return knn
