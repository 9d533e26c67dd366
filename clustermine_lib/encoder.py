"""The CLIP model whose features are computed, without loading it until needed, and what every encoder
shares (image features: ``extract``; text features: ``text_features``).

- ``ModelRef``: which model made a set of features (registry spec, checkpoint path and fingerprint,
  device); ``get()`` loads the weights once, so a cache hit never loads them;
- ``autocast``: fp16 autocast on CUDA, nothing on the CPU (``ModelRef.precision`` names it in the key);
- ``model_info`` / ``common_meta``: the model's dim, logit scale and bias, and the metadata every
  feature store records about the model and the code that wrote it;
- ``progress_bar``: a tqdm bar shown on rank 0 only.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from .distributed import rank_world
from .feature_store import provenance
from .models import (LoadedModel, check_checkpoint, default_device, file_fingerprint, load_model,
                     model_id as _model_id, model_identity, resolve_model)


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


def autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def model_info(m: LoadedModel) -> dict:
    return {"dim": m.dim, "logit_scale": m.logit_scale, "logit_bias": m.logit_bias}


def common_meta(ref: ModelRef, infos: list[dict]) -> dict:
    first = infos[0] if infos else {}
    return {"model": ref.spec.arch, "pretrained": ref.spec.pretrained, "model_id": ref.model_id,
            "checkpoint": ref.checkpoint, "checkpoint_sha256": ref.fingerprint,
            "dim": first.get("dim"), "logit_scale": first.get("logit_scale"),
            "logit_bias": first.get("logit_bias"), "precision": ref.precision, **provenance()}


def progress_bar(total: int, desc: str, unit: str, progress: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not progress or rank_world()[0] != 0)
