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
weights). Image ``index`` maps a feature row to its line in ``files.txt``; ``meta.json`` holds the
model, tag, checkpoint path and fingerprint, dataset or corpus, prompt set and templates, image
count, dim, logit scale, code version and the skipped (corrupt) files. Layout, keys, resuming and
``torchrun`` sharding: ``feature_store``.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .benchmark import FeatureSet
from .datasets import ImageListDataset, collate_skip, dataset_dir, list_images, resolve_data_root, resolve_dataset
from .distributed import rank_world
from .feature_store import (DEFAULT_SHARD_SIZE, DTYPES, FORMAT_VERSION, code_version, image_dir, key_hash, knn_path,
                            load_shards, provenance, read_meta, run_shards, save_shard, text_dir)
from .fileio import atomic_write, content_hash, read_json, write_json
from .models import (LoadedModel, check_checkpoint, default_device, file_fingerprint, load_model,
                     model_id as _model_id, model_identity, resolve_model)
from .prompts import DEFAULT_PROMPTS


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
    skipped: list[str]  # unreadable files (relative paths), not in ``features``
    meta: dict
    path: Path

    def as_feature_set(self, name: str | None = None) -> FeatureSet:
        return FeatureSet(name or self.dataset, self.features.float(), self.labels)

    def files(self) -> list[str]:
        return [line.split("\t")[0] for line in (self.path / "files.txt").read_text(encoding="utf-8").splitlines()]


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
    return tensors, skipped, _model_info(m)


def extract_image_features(model, pretrained, dataset: str, *, checkpoint=None, data_root=None, cache_dir=None,
                           batch_size: int = 256, num_workers: int | None = None, device=None,
                           shard_size: int = DEFAULT_SHARD_SIZE, dtype: str = "float32", seed: int = 0,
                           overwrite: bool = False, progress: bool = True, load: bool = True,
                           download: bool = False):
    """Image features of a registered dataset, computed once and cached (see the module docstring).

    ``model``: a registry name or a ``LoadedModel`` (then ``pretrained``/``checkpoint`` are ignored).
    Returns ``ImageFeatures`` (or only its metadata dict with ``load=False``). Under torchrun every
    rank calls this; shards are split across ranks.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}.")
    ref = ModelRef.resolve(model, pretrained, checkpoint, device, download)
    spec = resolve_dataset(dataset)
    items = list_images(spec, data_root, seed)
    root = dataset_dir(spec, data_root)
    key = {"kind": "image", "format": FORMAT_VERSION, "model": ref.identity, "dataset": spec.name,
           "n_items": len(items), "items_hash": content_hash(items), "dtype": dtype, "precision": ref.precision}
    out_dir = image_dir(ref.model_id, spec.name, cache_dir)
    workers = min(8, os.cpu_count() or 1) if num_workers is None else num_workers
    state = {}

    def compute(s, e):
        if "ds" not in state:
            state["ds"] = ImageListDataset(root, items, ref.get().preprocess)
        return _compute_image_shard(ref, state["ds"], s, e, batch_size, workers, DTYPES[dtype], state["bar"])

    def set_total(n):
        state["bar"] = _progress(n, f"{spec.name} images", "img", progress)

    def finalize(infos, skipped):  # rank 0 only
        atomic_write(out_dir / "files.txt", "".join(f"{p}\t{y}\n" for p, y in items))
        return {**_common_meta(ref, infos), "kind": "image", "dataset": spec.name, "role": spec.role,
                "data_root": str(resolve_data_root(data_root)), "folder": spec.folder, "n_items": len(items),
                "n_rows": len(items) - len(skipped), "dtype": dtype, "shard_size": shard_size, "seed": seed,
                "classes": sorted({y for _, y in items if y >= 0}) if spec.classes not in (0, 1000) else None,
                "skipped": [items[i][0] for i in sorted(skipped)]}

    meta = run_shards(out_dir, key, len(items), shard_size, compute, finalize, overwrite, set_total)
    if "bar" in state:
        state["bar"].close()
    return _image_result(out_dir, meta) if load else meta


def _image_result(out_dir: Path, meta: dict) -> ImageFeatures:
    t = load_shards(out_dir, meta)
    return ImageFeatures(meta["dataset"], t["features"].float(), t["labels"], t["index"], meta["skipped"],
                         meta, out_dir)


def load_image_features(model, pretrained, dataset: str, *, checkpoint=None, cache_dir=None) -> ImageFeatures:
    """Read cached image features (no data, no weights needed); raises with the command that makes them."""
    ref = ModelRef.resolve(model, pretrained, checkpoint, "cpu")
    out_dir = image_dir(ref.model_id, dataset, cache_dir)
    meta = read_meta(out_dir, ref.identity)
    if meta is None:
        from .features import check_cached  # its error names the folder and the `make features` line

        check_cached(ref, datasets=[dataset], cache_dir=cache_dir)
        meta = read_meta(out_dir, ref.identity)  # completed meanwhile by another run
        if meta is None:
            raise FileNotFoundError(f"image features of {resolve_dataset(dataset).name} ({out_dir / 'meta.json'})")
    return _image_result(out_dir, meta)


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
    return {"features": torch.cat(out) if out else torch.empty(0, m.dim)}, [], _model_info(m)


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
    key = {"kind": "text", "format": FORMAT_VERSION, "model": ref.identity, "names_hash": content_hash(names),
           "n_items": len(names), "templates": templates, "precision": ref.precision}
    out_dir = text_dir(ref.model_id, name, names, prompt_name, cache_dir)
    state = {}

    def set_total(n):
        state["bar"] = _progress(n, f"{name} text", "concept", progress)

    def compute(s, e):
        return _compute_text_shard(ref, names, templates, s, e, batch_size, state["bar"])

    def finalize(infos, skipped):
        return {**_common_meta(ref, infos), "kind": "text", "name": name, "prompts": prompt_name,
                "templates": templates, "n_items": len(names), "n_rows": len(names), "dtype": "float32",
                "shard_size": shard_size, "skipped": [], **(extra_meta or {})}

    meta = run_shards(out_dir, key, len(names), shard_size, compute, finalize, overwrite, set_total)
    if "bar" in state:
        state["bar"].close()
    return TextFeatures(name, prompt_name, names, load_shards(out_dir, meta)["features"], meta, out_dir)


def load_text_features(model, pretrained, names, *, name: str = "custom", prompts=DEFAULT_PROMPTS, checkpoint=None,
                       cache_dir=None) -> TextFeatures:
    """Read cached text features; raises ``FileNotFoundError`` naming the missing folder."""
    names = list(names)
    ref = ModelRef.resolve(model, pretrained, checkpoint, "cpu")
    prompt_name, _ = prompt_templates(prompts)
    out_dir = text_dir(ref.model_id, name, names, prompt_name, cache_dir)
    meta = read_meta(out_dir, ref.identity)
    if meta is None:
        raise FileNotFoundError(f"text features of {name} x {prompt_name} ({out_dir / 'meta.json'})")
    return TextFeatures(name, prompt_name, names, load_shards(out_dir, meta)["features"], meta, out_dir)


# ----------------------------------------------------------------------------- kNN cache (TEMI)
def cached_knn(model, pretrained=None, dataset: str = "imagenet-train", k: int = 50, *, checkpoint=None,
               cache_dir=None, chunk_size: int = 4096, device=None, progress: bool = False,
               overwrite: bool = False) -> torch.Tensor:
    """(N, k) long indices of each cached image feature's k nearest neighbours (self excluded),
    computed once by ``clustering.knn_indices`` and stored next to the features. Rows follow the
    cached feature rows; recomputed when those features change."""
    ref = ModelRef.resolve(model, pretrained, checkpoint, "cpu")
    feats = load_image_features(ref, None, dataset, cache_dir=cache_dir)
    path = knn_path(ref.model_id, feats.dataset, k, cache_dir)
    key = {"features_key_hash": feats.meta["key_hash"], "k": k, "format": FORMAT_VERSION}
    meta = read_json(path.with_suffix(".json"))
    if meta and meta.get("key") == key and path.is_file() and not overwrite:
        from safetensors.torch import load_file

        return load_file(str(path))["knn"]
    from .clustering import knn_indices  # lazily: clustering is optional for feature extraction

    knn = knn_indices(feats.features, k=k, chunk_size=chunk_size, device=device, progress=progress).cpu()
    save_shard(path, {"knn": knn}, {"key_hash": key_hash(key)})
    write_json(path.with_suffix(".json"), {"key": key, "dataset": feats.dataset, "k": k, "n": knn.shape[0],
                                           "model_id": feats.meta["model_id"], "features": str(feats.path),
                                           "code_version": code_version()})
    return knn
