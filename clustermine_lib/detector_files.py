"""A fitted PosMine / ClusterMine detector as a folder: ``detector.safetensors`` + ``detector.json``.

``detector.safetensors`` holds tensors only (never a pickle): Y_pos / Y_neg as corpus indices, the
positive text features, the negative ones (unless saved with ``embed_negatives=False``, then the corpus
text features are needed at load and checked against the stored hash), the per-label votes, the ID
score quantiles and, for ClusterMine, the best TEMI head (``load`` gives it back as ``det.temi_``, a
``clustering.TEMIResult`` whose ``predict`` / ``ClusterMine.predict_clusters`` assign new images).
``detector.json`` says what it is: format version, class and parameters, τ, C, the corpus (name, size,
hash of its names and of its text features), Y_pos with the clusters and images that voted for each,
the threshold and its ID recall, what the features came from (``meta``: model, weights fingerprint,
prompts ...), and the hash of every tensor in the safetensors file, verified on load: a tampered or
truncated file is an error naming it. Both files are written atomically (``fileio``), the JSON last.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from .fileio import atomic_write, content_hash, read_json, write_json
from .validation import check_is_fitted

FORMAT = 1
TENSORS, INFO = "detector.safetensors", "detector.json"


class DetectorFileError(ValueError):
    """A detector folder that cannot be used as it is (missing, damaged, other format or corpus)."""


def _image_votes(det) -> torch.Tensor:
    """(P,) training images whose top-1 concept is the positive, in the clusters it won (ClusterMine) or
    overall (PosMine)."""
    if det.top1_ is None:  # a loaded detector: the votes it was saved with
        return det.pos_images_
    pos, top1 = det.mined_.pos, det.top1_
    clusters = getattr(det, "clusters_", None)
    if clusters is None:
        return det.mined_.counts.clone()
    from .mining import cluster_vote

    ids, winners = cluster_vote(top1, clusters)
    winner_of = torch.full((int(clusters.max()) + 1,), -1, dtype=torch.long)
    winner_of[ids] = winners
    voted = top1[top1 == winner_of[clusters]]
    return torch.bincount(voted, minlength=int(pos.max()) + 1)[pos]


def _temi_tensors(det) -> tuple[dict, dict | None]:
    temi = getattr(det, "temi_", None)
    if temi is None:
        return {}, None
    tensors = {f"temi.{k}": v.contiguous() for k, v in temi.head.items()}
    for name in ("mean", "std"):
        if getattr(temi, name) is not None:
            tensors[f"temi.{name}"] = getattr(temi, name)
    from dataclasses import asdict

    return tensors, {"config": asdict(temi.config), "best_head": temi.best_head}


def save(det, directory, meta: dict | None = None, embed_negatives: bool = True) -> Path:
    """Write ``det`` (fitted) to ``directory``; returns the folder."""
    from safetensors.torch import save as to_bytes

    check_is_fitted(det, "mined_")
    directory = Path(directory)
    m = det.mined_
    tensors = {"pos_index": m.pos, "neg_index": m.neg, "pos_clusters": m.counts, "pos_images": _image_votes(det),
               "pos_text": det.pos_text_.float()}
    if embed_negatives:
        tensors["neg_text"] = det.neg_text_.float()
    if det.id_quantiles_ is not None:
        tensors["id_quantiles"] = det.id_quantiles_
    temi_tensors, temi_info = _temi_tensors(det)
    tensors.update(temi_tensors)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    params = {k: getattr(det, k) for k in ("m", "n_clusters", "neg_k", "seed") if hasattr(det, k)}
    info = {
        "format": FORMAT, "class": type(det).__name__, "params": params, "tau": det.tau_,
        "C": m.params.get("C"), "corpus": det.corpus_, "embed_negatives": embed_negatives,
        "n_pos": len(m.pos), "n_neg": len(m.neg), "dim": int(det.pos_text_.shape[1]),
        "positives": [{"name": n, "index": int(i), "clusters": int(c), "images": int(v)} for n, i, c, v in zip(
            m.names, m.pos.tolist(), tensors["pos_clusters"].tolist(), tensors["pos_images"].tolist())],
        "threshold": det.threshold_, "recall": getattr(det, "recall_", None), "temi": temi_info,
        "meta": meta or {}, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "tensors": {k: content_hash(v) for k, v in sorted(tensors.items())},
    }
    atomic_write(directory / TENSORS, to_bytes(tensors))
    write_json(directory / INFO, info)
    return directory


def read_info(directory) -> dict:
    """``detector.json`` of a detector folder, checked (exists, parses, this format)."""
    path = Path(directory) / INFO
    if not path.exists():
        raise DetectorFileError(f"{path} does not exist: {directory} is not a detector folder (make one with "
                                "`clustermine fit IMAGES_DIR ... --out DIR` or ClusterMine.save).")
    info = read_json(path)
    if not isinstance(info, dict) or "format" not in info:
        raise DetectorFileError(f"{path} is not a readable detector description (damaged?); fit it again.")
    if info["format"] != FORMAT:
        raise DetectorFileError(f"{path} has detector format {info['format']}, this version reads {FORMAT}; "
                                "fit it again with this version.")
    return info


def read_tensors(directory, info: dict) -> dict:
    """The tensors of a detector folder, each checked against the hash its JSON recorded."""
    from safetensors.torch import load as from_bytes

    path = Path(directory) / TENSORS
    try:
        tensors = from_bytes(path.read_bytes())
    except FileNotFoundError:
        raise DetectorFileError(f"{path} is missing; the detector folder is incomplete: fit it again.") from None
    except Exception as e:  # safetensors raises its own error types for a damaged header
        raise DetectorFileError(f"{path} is damaged or truncated ({type(e).__name__}); fit the detector again.") from None
    expected = info.get("tensors", {})
    if sorted(tensors) != sorted(expected) or any(content_hash(tensors[k]) != h for k, h in expected.items()):
        raise DetectorFileError(f"{path} does not match {Path(directory) / INFO} (tampered, or from another "
                                "fit); fit the detector again.")
    return tensors


def load(directory, corpus_text=None):
    """The detector saved in ``directory`` (``save``), verified; see the module docstring."""
    from .detector import ClusterMine, PosMine

    info = read_info(directory)
    t = read_tensors(directory, info)
    cls = {"PosMine": PosMine, "ClusterMine": ClusterMine}.get(info["class"])
    if cls is None:
        raise DetectorFileError(f"{Path(directory) / INFO} describes an unknown detector {info['class']!r}.")
    det = cls(**{k: v for k, v in info["params"].items() if k in cls.__dataclass_fields__})
    if "neg_text" in t:
        neg_text = t["neg_text"]
    else:
        if corpus_text is None:
            raise DetectorFileError(f"{directory} was saved without its negative text features: pass the "
                                    f"corpus text features of {info['corpus']['name']!r} (corpus_text=).")
        if content_hash(corpus_text) != info["corpus"]["text_hash"]:
            raise DetectorFileError(f"the corpus text features given differ from those {directory} was fitted "
                                    f"with ({info['corpus']['name']!r}): same model, corpus and prompts needed.")
        neg_text = corpus_text[t["neg_index"]]
    from .mining import Mined

    names = [p["name"] for p in info["positives"]]
    det.mined_ = Mined(info["class"], t["pos_index"], t["neg_index"], names, t["pos_clusters"], {"C": info["C"]})
    det.pos_text_, det.neg_text_, det.tau_ = t["pos_text"], neg_text, info["tau"]
    det.corpus_, det.threshold_, det.recall_ = info["corpus"], info["threshold"], info["recall"]
    det.id_quantiles_ = t.get("id_quantiles")
    det.pos_images_, det.info_ = t["pos_images"], info
    if info.get("temi"):
        det.temi_ = _temi_predictor(info["temi"], t)
    return det


def _temi_predictor(temi: dict, t: dict):
    """The saved best TEMI head as a ``clustering.TEMIResult`` that assigns new images to clusters
    (``predict``); its training-time fields (labels, losses) are empty."""
    from dataclasses import fields

    from .clustering import TEMIConfig, TEMIResult

    known = {f.name for f in fields(TEMIConfig)}
    config = TEMIConfig(**{k: v for k, v in temi["config"].items() if k in known})
    head = {k[len("temi."):]: v for k, v in t.items() if k.startswith("temi.") and k not in ("temi.mean", "temi.std")}
    empty = torch.empty(0)
    return TEMIResult(labels=torch.empty(0, dtype=torch.long), best_head=temi["best_head"], head_losses=empty,
                      epoch_losses=empty, confidence=empty, probs=None, head=head, config=config,
                      mean=t.get("temi.mean"), std=t.get("temi.std"))
