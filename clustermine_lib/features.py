"""CLIP feature extraction with a resumable on-disk cache, and the real-data ``Benchmark`` loader.

What is stored (every matrix is float32 unless ``dtype="float16"``):

- image features: ``model.encode_image(x)``, i.e. AFTER CLIP's visual projection, in the shared
  image-text space where ``h·z`` is CLIP's zero-shot logit before the logit scale (Eq. 1 needs that
  space), then L2-normalised. Shape (N, D); N excludes unreadable images;
- text features of a list of concept names under a prompt set: for each concept, every template is
  filled, encoded with ``model.encode_text`` (after the text projection) and L2-normalised; the
  concept's feature is the mean of those, re-normalised. Shape (K, D);
- ``logit_scale``: CLIP's learned exp(logit_scale) read from the weights (1 / pretraining temperature;
  ``scoring.default_tau`` turns it into the paper's tau).

Cache layout, under ``<cache_dir>/<model_id>/`` (``cache_dir`` defaults to
``$CLUSTERMINE_CACHE/features`` or ``<repo>/.cache/features``; ``model_id`` like ``ViT-H-14--dfn5b``)::

    images/<dataset>/shard-<start>-<stop>.safetensors   features (n, D), labels (n,), index (n,)
    images/<dataset>/files.txt                         every listed image: "<relpath>\\t<label>"
    images/<dataset>/meta.json                         written last: the completion marker
    text/<name>.<names-hash>.<prompts>/shard-*.safetensors, meta.json
    knn/<dataset>.k<k>.safetensors + .json             cached_knn

``index`` maps a feature row to its line in ``files.txt``; ``meta.json`` holds the model, tag,
checkpoint path and fingerprint, dataset or corpus, prompt set and templates, image count, dim,
logit scale, code version and the skipped (corrupt) files. A run recomputes when any input differs
(model, weights, image list, names, templates, dtype, precision, format version); it is resumable
(shards are written atomically, temp file + ``os.replace``; a killed run restarts after the last
finished shard) and runs unchanged under ``torchrun --nproc_per_node=N``: shard ``i`` goes to rank
``i % N`` (NCCL on GPU, gloo on CPU), rank 0 writes ``meta.json``, and because shards are fixed item
ranges with fixed batches, the merged result is the one a single process computes.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.nn.functional as F

from .benchmark import OOD_SETS, Benchmark, FeatureSet
from .corpus import DEFAULT_PREPROCESS, Corpus, load_corpus
from .datasets import ImageListDataset, collate_skip, dataset_dir, list_images, resolve_data_root, resolve_dataset
from .models import (DEFAULT_MODEL, LoadedModel, check_checkpoint, default_device, file_fingerprint, load_model,
                     model_id as _model_id, model_identity, resolve_model)

FORMAT_VERSION = 1  # bump when what a feature means changes; old caches are then recomputed
DTYPES = {"float32": torch.float32, "float16": torch.float16}
DEFAULT_SHARD_SIZE = 50_000


# ----------------------------------------------------------------------------- small helpers
def features_root(cache_dir=None) -> Path:
    """The feature cache folder: ``cache_dir`` if given (``make features CACHE_DIR=``), else
    ``<project cache>/features`` (``$CLUSTERMINE_CACHE/features`` or ``<repo>/.cache/features``)."""
    from .wordnet import cache_dir as project_cache

    return Path(cache_dir).expanduser() if cache_dir else project_cache() / "features"


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _code_version() -> str:
    try:
        from importlib.metadata import version

        return version("clustermine")
    except Exception:
        return "unknown"


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _save_shard(path: Path, tensors: dict, metadata: dict) -> None:
    """Atomic safetensors write (temp file + os.replace): a killed run never leaves half a shard."""
    from safetensors.torch import save_file

    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp),
              metadata={k: json.dumps(v) for k, v in metadata.items()})
    os.replace(tmp, path)


def _shard_metadata(path: Path) -> dict | None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
    except Exception:
        return None


def _dist() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def init_distributed(device=None) -> torch.device:
    """Join the ``torchrun`` process group (when ``WORLD_SIZE`` > 1) and return this rank's device:
    ``cuda:<LOCAL_RANK>`` with NCCL when CUDA is used, else CPU with gloo."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
    dev = torch.device(f"cuda:{local_rank}") if use_cuda else torch.device(device or "cpu")
    if world > 1 and not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timedelta(hours=6))
    return dev


# ----------------------------------------------------------------------------- the model, lazily
@dataclass
class _ModelRef:
    """What identifies a model's features, without loading it (a cache hit never loads weights)."""

    spec: object
    checkpoint: str | None
    fingerprint: str | None
    device: torch.device
    download: bool = False
    loaded: LoadedModel | None = None

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


def _model_ref(model, pretrained=None, checkpoint=None, device=None, download=False) -> _ModelRef:
    if isinstance(model, _ModelRef):  # already resolved (the CLI shares one lazily loaded model)
        return model
    if isinstance(model, LoadedModel):
        return _ModelRef(model.spec, model.checkpoint if model.checkpoint_fingerprint else None,
                         model.checkpoint_fingerprint, torch.device(model.device), loaded=model)
    if isinstance(pretrained, str) and pretrained.lower() in ("", "none"):
        pretrained = None
    spec = resolve_model(model, pretrained, checkpoint)
    fingerprint = None
    if checkpoint is not None:
        checkpoint = str(check_checkpoint(checkpoint))
        fingerprint = file_fingerprint(checkpoint)
    return _ModelRef(spec, checkpoint, fingerprint, default_device(device), download)


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


# ----------------------------------------------------------------------------- sharded, resumable store
def _run_shards(out_dir: Path, key: dict, n_items: int, shard_size: int, compute, finalize, overwrite: bool,
                progress_total=None) -> dict:
    """Compute ``compute(start, stop) -> (tensors, skipped, info)`` for every shard missing in
    ``out_dir`` (this rank's share: shard i on rank i % world) and write ``meta.json`` once all are done.

    ``finalize(shard_infos, skipped) -> dict`` builds the metadata. Returns the metadata.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}.")
    key_hash = _hash(key)
    meta_path = out_dir / "meta.json"
    meta = _read_json(meta_path)
    ranges = [(s, min(s + shard_size, n_items)) for s in range(0, n_items, shard_size)]
    if meta and meta.get("key_hash") == key_hash and not overwrite and all(
            (out_dir / s).is_file() for s in meta.get("shards", [])):
        return meta  # cache hit: nothing loaded, nothing computed
    rank, world = _dist()
    _barrier()  # every rank has looked at the old meta before rank 0 removes it
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        meta_path.unlink(missing_ok=True)  # no reader may mix old metadata with new shards
    _barrier()

    def shard_path(s, e):
        return out_dir / f"shard-{s:09d}-{e:09d}.safetensors"

    def done(path):
        m = _shard_metadata(path) if path.is_file() else None
        return m is not None and m.get("key_hash") == key_hash

    todo = [(s, e) for i, (s, e) in enumerate(ranges) if i % world == rank]
    todo = [(s, e) for s, e in todo if overwrite or not done(shard_path(s, e))]
    if progress_total is not None:
        progress_total(sum(e - s for s, e in todo))
    for s, e in todo:
        tensors, skipped, info = compute(s, e)
        _save_shard(shard_path(s, e), tensors, {"key_hash": key_hash, "start": s, "stop": e,
                                                 "skipped": skipped, **info})
    _barrier()
    if rank == 0:
        infos, skipped = [], []
        for s, e in ranges:
            m = _shard_metadata(shard_path(s, e))
            if m is None or m.get("key_hash") != key_hash:
                raise RuntimeError(f"shard {shard_path(s, e)} is missing or stale after extraction; rerun "
                                   "(finished shards are kept).")
            infos.append(m)
            skipped.extend(m["skipped"])
        keep = {shard_path(s, e).name for s, e in ranges}
        for stale in out_dir.glob("shard-*.safetensors"):  # shards of an older layout or key
            if stale.name not in keep:
                stale.unlink(missing_ok=True)
        meta = {"format": FORMAT_VERSION, "key": key, "key_hash": key_hash,
                "shards": [shard_path(s, e).name for s, e in ranges], **finalize(infos, skipped)}
        _write_json(meta_path, meta)
    _barrier()
    return _read_json(meta_path)


def _load_shards(out_dir: Path, meta: dict) -> dict[str, torch.Tensor]:
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


def _common_meta(ref: _ModelRef, infos: list[dict]) -> dict:
    first = infos[0] if infos else {}
    return {"model": ref.spec.arch, "pretrained": ref.spec.pretrained, "model_id": ref.model_id,
            "checkpoint": ref.checkpoint, "checkpoint_sha256": ref.fingerprint,
            "dim": first.get("dim"), "logit_scale": first.get("logit_scale"),
            "logit_bias": first.get("logit_bias"), "precision": ref.precision,
            "code_version": _code_version(), "torch": torch.__version__,
            "open_clip": _open_clip_version(), "world_size": _dist()[1],
            "created": time.strftime("%Y-%m-%d %H:%M:%S")}


def _open_clip_version() -> str:
    try:
        import open_clip

        return open_clip.__version__
    except Exception:
        return "unknown"


def _model_info(m: LoadedModel) -> dict:
    return {"dim": m.dim, "logit_scale": m.logit_scale, "logit_bias": m.logit_bias}


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
        return [line.split("\t")[0] for line in (self.path / "files.txt").read_text().splitlines()]


def image_dir(ref_or_id, dataset: str, cache_dir=None) -> Path:
    mid = ref_or_id.model_id if isinstance(ref_or_id, _ModelRef) else str(ref_or_id)
    return features_root(cache_dir) / mid / "images" / resolve_dataset(dataset).name


def _compute_image_shard(ref: _ModelRef, ds: ImageListDataset, start: int, stop: int, batch_size: int,
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
    from tqdm.auto import tqdm

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}.")
    ref = _model_ref(model, pretrained, checkpoint, device, download)
    spec = resolve_dataset(dataset)
    items = list_images(spec, data_root, seed)
    root = dataset_dir(spec, data_root)
    key = {"kind": "image", "format": FORMAT_VERSION, "model": ref.identity, "dataset": spec.name,
           "n_items": len(items), "items_sha256": _hash(items), "dtype": dtype, "precision": ref.precision}
    out_dir = image_dir(ref, spec.name, cache_dir)
    rank, _ = _dist()
    workers = min(8, os.cpu_count() or 1) if num_workers is None else num_workers
    state = {}

    def compute(s, e):
        if "ds" not in state:
            state["ds"] = ImageListDataset(root, items, ref.get().preprocess)
        return _compute_image_shard(ref, state["ds"], s, e, batch_size, workers, DTYPES[dtype], state["bar"])

    def set_total(n):
        state["bar"] = tqdm(total=n, desc=f"{spec.name} images", unit="img", disable=not progress or rank != 0)

    def finalize(infos, skipped):
        (out_dir / ".files.txt.tmp").write_text("".join(f"{p}\t{y}\n" for p, y in items))
        os.replace(out_dir / ".files.txt.tmp", out_dir / "files.txt")  # rank 0 only: finalize runs there
        return {**_common_meta(ref, infos), "kind": "image", "dataset": spec.name, "role": spec.role,
                "data_root": str(resolve_data_root(data_root)), "folder": spec.folder, "n_items": len(items),
                "n_rows": len(items) - len(skipped), "dtype": dtype, "shard_size": shard_size, "seed": seed,
                "classes": sorted({y for _, y in items if y >= 0}) if spec.classes not in (0, 1000) else None,
                "skipped": [items[i][0] for i in sorted(skipped)]}

    meta = _run_shards(out_dir, key, len(items), shard_size, compute, finalize, overwrite, set_total)
    if "bar" in state:
        state["bar"].close()
    return _image_result(out_dir, meta) if load else meta


def _image_result(out_dir: Path, meta: dict) -> ImageFeatures:
    t = _load_shards(out_dir, meta)
    return ImageFeatures(meta["dataset"], t["features"].float(), t["labels"], t["index"], meta["skipped"],
                         meta, out_dir)


def load_image_features(model, pretrained, dataset: str, *, checkpoint=None, cache_dir=None) -> ImageFeatures:
    """Read cached image features (no data, no weights needed); raises with the command that makes them."""
    ref = _model_ref(model, pretrained, checkpoint, "cpu")
    out_dir = image_dir(ref, dataset, cache_dir)
    meta = _read_json(out_dir / "meta.json")
    if not meta or meta.get("key", {}).get("model") != ref.identity:
        raise FileNotFoundError(_missing_message(ref, [f"image features of {resolve_dataset(dataset).name} "
                                                       f"({out_dir / 'meta.json'})"],
                                                 [resolve_dataset(dataset).name], None, None, cache_dir))
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


def _templates(prompts) -> tuple[str, list[str]]:
    """``prompts``: a registered prompt-set name or a list of templates with one ``{}``."""
    if isinstance(prompts, str):
        from .prompts import get_prompts

        return prompts, list(get_prompts(prompts))
    templates = list(prompts)
    if not templates or not all(isinstance(t, str) and t.count("{}") == 1 for t in templates):
        raise ValueError("prompts must be a prompt-set name or a non-empty list of templates with exactly one '{}'.")
    return f"custom-{_hash(templates)[:8]}", templates


def text_dir(ref_or_id, name: str, names, prompt_name: str, cache_dir=None) -> Path:
    mid = ref_or_id.model_id if isinstance(ref_or_id, _ModelRef) else str(ref_or_id)
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in name)
    return features_root(cache_dir) / mid / "text" / f"{safe}.{_hash(list(names))[:10]}.{prompt_name}"


def _compute_text_shard(ref: _ModelRef, names, templates, start: int, stop: int, batch_size: int, bar):
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


def extract_text_features(model, pretrained, names, *, name: str = "custom", prompts="simple-7", checkpoint=None,
                          cache_dir=None, batch_size: int = 1024, device=None, shard_size: int = DEFAULT_SHARD_SIZE,
                          overwrite: bool = False, progress: bool = True, extra_meta: dict | None = None,
                          download: bool = False) -> TextFeatures:
    """Text features (K, D) of concept ``names`` under a prompt set, computed once and cached."""
    from tqdm.auto import tqdm

    names = list(names)
    if not names or not all(isinstance(n, str) for n in names):
        raise ValueError("names must be a non-empty list of concept strings.")
    ref = _model_ref(model, pretrained, checkpoint, device, download)
    prompt_name, templates = _templates(prompts)
    key = {"kind": "text", "format": FORMAT_VERSION, "model": ref.identity, "names_sha256": _hash(names),
           "n_items": len(names), "templates": templates, "precision": ref.precision}
    out_dir = text_dir(ref, name, names, prompt_name, cache_dir)
    rank, _ = _dist()
    state = {}

    def set_total(n):
        state["bar"] = tqdm(total=n, desc=f"{name} text", unit="concept", disable=not progress or rank != 0)

    def compute(s, e):
        return _compute_text_shard(ref, names, templates, s, e, batch_size, state["bar"])

    def finalize(infos, skipped):
        return {**_common_meta(ref, infos), "kind": "text", "name": name, "prompts": prompt_name,
                "templates": templates, "n_items": len(names), "n_rows": len(names), "dtype": "float32",
                "shard_size": shard_size, "skipped": [], **(extra_meta or {})}

    meta = _run_shards(out_dir, key, len(names), shard_size, compute, finalize, overwrite, set_total)
    if "bar" in state:
        state["bar"].close()
    return TextFeatures(name, prompt_name, names, _load_shards(out_dir, meta)["features"], meta, out_dir)


def load_text_features(model, pretrained, names, *, name: str = "custom", prompts="simple-7", checkpoint=None,
                       cache_dir=None) -> TextFeatures:
    """Read cached text features; raises ``FileNotFoundError`` naming the missing folder."""
    names = list(names)
    ref = _model_ref(model, pretrained, checkpoint, "cpu")
    prompt_name, _ = _templates(prompts)
    out_dir = text_dir(ref, name, names, prompt_name, cache_dir)
    meta = _read_json(out_dir / "meta.json")
    if not meta or meta.get("key", {}).get("model") != ref.identity:
        raise FileNotFoundError(f"text features of {name} x {prompt_name} ({out_dir / 'meta.json'})")
    return TextFeatures(name, prompt_name, names, _load_shards(out_dir, meta)["features"], meta, out_dir)


def imagenet_classnames() -> list[str]:
    """Y_GT: open_clip's 1000 ImageNet class names, in class-index (sorted wnid) order."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    return list(IMAGENET_CLASSNAMES)


def _corpus(corpus, preprocess: str) -> Corpus:
    return corpus if isinstance(corpus, Corpus) else load_corpus(corpus, preprocess)


def _corpus_tag(corpus: Corpus, preprocess: str, registered: bool) -> str:
    return f"{corpus.name}-{preprocess}" if registered else corpus.name


# ----------------------------------------------------------------------------- kNN cache (TEMI)
def cached_knn(model, pretrained=None, dataset: str = "imagenet-train", k: int = 50, *, checkpoint=None,
               cache_dir=None, chunk_size: int = 4096, device=None, progress: bool = False,
               overwrite: bool = False) -> torch.Tensor:
    """(N, k) long indices of each cached image feature's k nearest neighbours (self excluded),
    computed once by ``clustering.knn_indices`` and stored next to the features. Rows follow the
    cached feature rows; recomputed when those features change."""
    feats = load_image_features(model, pretrained, dataset, checkpoint=checkpoint, cache_dir=cache_dir)
    out_dir = feats.path.parent.parent / "knn"
    path = out_dir / f"{feats.dataset}.k{k}.safetensors"
    key = {"features_key_hash": feats.meta["key_hash"], "k": k, "format": FORMAT_VERSION}
    meta = _read_json(path.with_suffix(".json"))
    if meta and meta.get("key") == key and path.is_file() and not overwrite:
        from safetensors.torch import load_file

        return load_file(str(path))["knn"]
    from .clustering import knn_indices  # lazily: clustering is optional for feature extraction

    knn = knn_indices(feats.features, k=k, chunk_size=chunk_size, device=device, progress=progress).cpu()
    out_dir.mkdir(parents=True, exist_ok=True)
    _save_shard(path, {"knn": knn}, {"key_hash": _hash(key)})
    _write_json(path.with_suffix(".json"), {"key": key, "dataset": feats.dataset, "k": k, "n": knn.shape[0],
                                            "model_id": feats.meta["model_id"], "features": str(feats.path),
                                            "code_version": _code_version()})
    return knn


# ----------------------------------------------------------------------------- the Benchmark
def make_command(ref: _ModelRef, datasets, corpus=None, prompts=None, data_root=None, cache_dir=None,
                 preprocess: str = DEFAULT_PREPROCESS) -> str:
    """The ``make features`` line that creates the given features (DATASET=text: text features only)."""
    parts = ["make features", f"MODEL={ref.spec.arch}"]
    if ref.spec.pretrained:
        parts.append(f"PRETRAINED={ref.spec.pretrained}")
    if ref.checkpoint:
        parts.append(f"CHECKPOINT={ref.checkpoint}")
    from .datasets import GROUPS

    group = [g for g, members in GROUPS.items() if datasets and set(members) == set(datasets)]
    parts.append(f"DATASET={group[0] if group else ','.join(datasets) if datasets else 'text'}")
    if corpus:
        parts.append(f"CORPUS={corpus}")
    if prompts:
        parts.append(f"PROMPTS={prompts}")
    if corpus and preprocess != DEFAULT_PREPROCESS:
        parts.append(f'FEATURE_ARGS="--corpus-preprocess {preprocess}"')
    if datasets:
        root = data_root or os.environ.get("DATA_ROOT") or "/path/to/data"
        parts.append(f"DATA_ROOT={root}")
    if cache_dir:
        parts.append(f"CACHE_DIR={cache_dir}")
    return " ".join(parts)


def _missing_message(ref, missing, datasets, corpus, prompts, cache_dir, data_root=None,
                     preprocess: str = DEFAULT_PREPROCESS) -> str:
    return (f"Cached features of {ref.model_id} are missing:\n  - " + "\n  - ".join(missing) +
            "\nMake them on a GPU machine (docs/gpu_workflow.md) with:\n  " +
            make_command(ref, datasets, corpus, prompts, data_root, cache_dir, preprocess))


def _class_synsets() -> list[str]:
    try:
        from .simulate import imagenet_synsets

        return imagenet_synsets()
    except Exception as e:  # WordNet missing: names still work, WordNet distances (Fig. 5) do not
        import warnings

        warnings.warn(f"ImageNet class synsets unavailable ({e}); class_synsets set to ''.")
        return [""] * 1000


def load_benchmark(model=DEFAULT_MODEL, pretrained=None, corpus="wordnet-na", prompts="simple-7", cache_dir=None,
                   id_dataset: str = "imagenet", ood=OOD_SETS, shifted=(), *, checkpoint=None,
                   preprocess: str = DEFAULT_PREPROCESS, data_root=None) -> Benchmark:
    """Assemble cached real CLIP features into a ``Benchmark`` (same container as the simulated one).

    train / test = ``<id_dataset>-train`` / ``-val``; ``ood`` and ``shifted`` name registered
    datasets (keys of the result are canonical names); class names = open_clip's
    ``IMAGENET_CLASSNAMES`` with text features under the same ``prompts``; ``corpus`` is a registered
    corpus name (built with ``preprocess``) or a ``Corpus``. Missing features raise one
    ``FileNotFoundError`` listing all of them and the ``make features`` command that makes them.
    """
    ref = _model_ref(model, pretrained, checkpoint, "cpu")
    prompt_name, _ = _templates(prompts)
    registered = not isinstance(corpus, Corpus)
    corp = _corpus(corpus, preprocess)
    train_name, test_name = f"{id_dataset}-train", f"{id_dataset}-val"
    wanted = [resolve_dataset(d).name for d in [train_name, test_name, *ood, *shifted]]
    missing, missing_sets, images = [], [], {}
    for d in dict.fromkeys(wanted):
        try:
            images[d] = load_image_features(ref, None, d, cache_dir=cache_dir)
        except FileNotFoundError:
            missing.append(f"image features of {d} ({image_dir(ref, d, cache_dir) / 'meta.json'})")
            missing_sets.append(d)
    texts = {}
    for tag, names in ((_corpus_tag(corp, preprocess, registered), corp.names), ("imagenet-classes",
                                                                                imagenet_classnames())):
        try:
            texts[tag] = load_text_features(ref, None, names, name=tag, prompts=prompts, cache_dir=cache_dir)
        except FileNotFoundError as e:
            missing.append(str(e))
    if missing:
        msg = _missing_message(ref, missing, missing_sets, corp.name if registered else None, prompt_name,
                               cache_dir, data_root, preprocess)
        if not registered and any(m.startswith("text") for m in missing):
            msg += ("\nA custom Corpus has no make target: compute its text features with "
                    "features.extract_text_features(model, pretrained, corpus.names, name=corpus.name, prompts=...).")
        raise FileNotFoundError(msg)
    corpus_text = texts[_corpus_tag(corp, preprocess, registered)].features
    class_text = texts["imagenet-classes"].features
    dims = {v.features.shape[1] for v in images.values()} | {corpus_text.shape[1], class_text.shape[1]}
    if len(dims) != 1:
        raise ValueError(f"Cached features of {ref.model_id} have different dimensions {sorted(dims)}; "
                         "re-extract them with one model (overwrite=True).")
    train, test = images[resolve_dataset(train_name).name], images[resolve_dataset(test_name).name]
    meta = {"simulated": False, "model_id": ref.model_id, "prompts": prompt_name, "preprocess": preprocess,
            "feature_args": {"model": ref.spec.arch, "pretrained": ref.spec.pretrained, "checkpoint": checkpoint,
                             "cache_dir": None if cache_dir is None else str(cache_dir)},
            "datasets": {k: {"n": len(v.features), "skipped": len(v.skipped), "path": str(v.path)}
                         for k, v in images.items()},
            "class_subsets": {k: v.meta["classes"] for k, v in images.items() if v.meta.get("classes")},
            "logit_bias": train.meta.get("logit_bias")}
    return Benchmark(
        name=f"{ref.model_id}:{id_dataset}", simulated=False,
        train=train.as_feature_set("train"), test=test.as_feature_set("ImageNet"),
        ood={resolve_dataset(d).name: images[resolve_dataset(d).name].as_feature_set() for d in ood},
        shifted={resolve_dataset(d).name: images[resolve_dataset(d).name].as_feature_set() for d in shifted},
        class_names=imagenet_classnames(), class_text=class_text, class_synsets=_class_synsets(),
        corpus=corp, corpus_text=corpus_text, logit_scale=float(train.meta["logit_scale"]), meta=meta)


# ----------------------------------------------------------------------------- CLI (`make features`)
def _parser() -> argparse.ArgumentParser:
    from .datasets import GROUPS

    p = argparse.ArgumentParser(
        prog="python -m clustermine_lib.features",
        description="Extract and cache CLIP image/text features (run under torchrun for several GPUs).")
    p.add_argument("--model", default="ViT-H-14", help="registry name / open_clip architecture / config .json")
    p.add_argument("--pretrained", default=None, help="open_clip pretrained tag (default: the model's first "
                                                       "registry tag); 'none' with --checkpoint")
    p.add_argument("--checkpoint", default=None, help="local state-dict file (.safetensors/.bin/.pt/.pth)")
    p.add_argument("--dataset", default="paper",
                   help=f"comma-separated datasets or groups {list(GROUPS)}; 'text' = text features only")
    p.add_argument("--data-root", default=None, help="dataset root (default: $DATA_ROOT)")
    p.add_argument("--cache-dir", default=None,
                   help="feature cache (default: $CLUSTERMINE_CACHE/features or <repo>/.cache/features)")
    p.add_argument("--corpus", default="wordnet-na", help="registered corpus for text features")
    p.add_argument("--corpus-preprocess", default=DEFAULT_PREPROCESS)
    p.add_argument("--prompts", default="simple-7", help="comma-separated prompt sets")
    p.add_argument("--no-text", action="store_true", help="skip the corpus and class-name text features")
    p.add_argument("--knn", type=int, default=0, help="also cache the k-NN of imagenet-train features (TEMI)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--text-batch-size", type=int, default=1024)
    p.add_argument("--num-workers", type=int, default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE)
    p.add_argument("--dtype", default="float32", choices=list(DTYPES))
    p.add_argument("--seed", type=int, default=0, help="seed of subsampled sets (ImageNet-C)")
    p.add_argument("--download", action="store_true", help="let open_clip download missing weights")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv=None) -> int:
    from .datasets import expand_datasets

    args = _parser().parse_args(argv)
    device = init_distributed(args.device)
    rank, world = _dist()
    say = print if rank == 0 else (lambda *a, **k: None)
    names = [n for n in args.dataset.split(",") if n.strip()]
    do_text = not args.no_text
    datasets = expand_datasets([n for n in names if n.lower() != "text"])
    pretrained = None if args.pretrained in (None, "", "none", "None") else args.pretrained
    ref = _model_ref(args.model, pretrained, args.checkpoint, device, args.download)
    say(f"[features] {ref.model_id} on {world} process(es), device {device}; datasets: {datasets or '-'}")
    common = dict(checkpoint=args.checkpoint, cache_dir=args.cache_dir, device=device,
                  shard_size=args.shard_size, overwrite=args.overwrite, progress=not args.no_progress)
    for d in datasets:
        meta = extract_image_features(ref, None, d, data_root=args.data_root, batch_size=args.batch_size,
                                      num_workers=args.num_workers, dtype=args.dtype, seed=args.seed, load=False,
                                      **common)
        say(f"[features] {d}: {meta['n_rows']} images (skipped {len(meta['skipped'])}), dim {meta['dim']}, "
            f"logit_scale {meta['logit_scale']:.4g} -> {image_dir(ref, d, args.cache_dir)}")
    if do_text:
        corp = load_corpus(args.corpus, args.corpus_preprocess)
        for prompts in [p for p in args.prompts.split(",") if p.strip()]:
            for tag, nm in ((_corpus_tag(corp, args.corpus_preprocess, True), corp.names),
                            ("imagenet-classes", imagenet_classnames())):
                t = extract_text_features(ref, None, nm, name=tag, prompts=prompts,
                                          batch_size=args.text_batch_size, **common,
                                          extra_meta={"corpus": args.corpus if tag != "imagenet-classes" else None})
                say(f"[features] text {tag} x {prompts}: {tuple(t.features.shape)} -> {t.path}")
    if args.knn and rank == 0:
        knn = cached_knn(args.model, pretrained, "imagenet-train", args.knn, checkpoint=args.checkpoint,
                         cache_dir=args.cache_dir, device=device, progress=not args.no_progress)
        say(f"[features] kNN of imagenet-train: {tuple(knn.shape)}")
    _barrier()
    return 0


if __name__ == "__main__":
    sys.exit(main())
