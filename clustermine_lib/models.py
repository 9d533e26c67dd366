"""CLIP model registry and loader (the paper's weights, resolved through open_clip).

One registry (``MODELS``), one resolve function (``resolve_model``), one loader (``load_model``),
errors that list the valid names -- the layout of open_clip's ``factory.py``.

Registry keys are ``"<open_clip architecture>/<pretrained tag>"``:

- ``ViT-H-14/dfn5b``: the paper's default (DFN-5B, Fang et al. [17]);
- ``ViT-B-16/openai``: Table 5 (OpenAI CLIP, Radford et al. [49]);
- ``FIG3_MODELS``: the 12 public weights of Fig. 3. The paper cites their sources ([12] LAION-2B
  OpenCLIP, [17] DFN, [32] OpenCLIP, [49] OpenAI, [71] SigLIP) but not the exact list, so this is
  our choice: 2 OpenAI, 5 LAION-2B (B to bigG), 3 DFN and 2 SigLIP weights, every one a valid
  ``open_clip.list_pretrained()`` pair (open_clip 3.x).

Weights come from one of two places, and never from the network unless ``download=True``:

1. a pretrained tag already in the user's Hugging Face cache (``$HF_HOME`` / ``$HF_HUB_CACHE``; or
   open_clip's URL cache ``~/.cache/clip``). The cache is checked *before* open_clip is called, so a
   machine without the weights fails at once instead of retrying downloads;
2. ``checkpoint=PATH`` to a local ``.safetensors`` / ``.bin`` / ``.pt`` / ``.pth`` state dict, read with
   safetensors or ``torch.load(weights_only=True)`` (never unpickled).

The QuickGELU flag and image preprocessing (mean, std, interpolation, resize mode) always come from
the pretrained tag's open_clip config, also for a checkpoint file: pass ``pretrained=<tag>`` with
``checkpoint=`` to say which weights the file holds (DFN and OpenAI weights need QuickGELU).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHECKPOINT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
HF_WEIGHTS, HF_SAFE_WEIGHTS = "open_clip_pytorch_model.bin", "open_clip_model.safetensors"  # open_clip.constants


@dataclass(frozen=True)
class ModelSpec:
    """One CLIP weight: an open_clip architecture plus a pretrained tag."""

    arch: str  # open_clip architecture (config) name, e.g. "ViT-H-14"
    pretrained: str | None  # open_clip pretrained tag, e.g. "dfn5b"
    family: str = "other"  # OpenAI / LAION-2B / DFN / SigLIP
    note: str = ""

    @property
    def key(self) -> str:
        return f"{self.arch}/{self.pretrained}"


_SPECS = [
    # The paper's default model and Table 5's model come first: the first entry of an
    # architecture is its default tag (``load_model("ViT-H-14")`` -> dfn5b).
    ModelSpec("ViT-H-14", "dfn5b", "DFN", "paper default (DFN-5B, QuickGELU)"),
    ModelSpec("ViT-B-16", "openai", "OpenAI", "Table 5 and Fig. 6 (ViT-B)"),
    ModelSpec("ViT-L-14", "openai", "OpenAI"),
    ModelSpec("ViT-B-16", "laion2b_s34b_b88k", "LAION-2B"),
    ModelSpec("ViT-L-14", "laion2b_s32b_b82k", "LAION-2B"),
    ModelSpec("ViT-H-14", "laion2b_s32b_b79k", "LAION-2B"),
    ModelSpec("ViT-g-14", "laion2b_s34b_b88k", "LAION-2B"),
    ModelSpec("ViT-bigG-14", "laion2b_s39b_b160k", "LAION-2B"),
    ModelSpec("ViT-L-14", "dfn2b", "DFN"),
    ModelSpec("ViT-H-14-378", "dfn5b", "DFN"),
    ModelSpec("ViT-B-16-SigLIP", "webli", "SigLIP", "needs `pip install transformers sentencepiece`"),
    ModelSpec("ViT-SO400M-14-SigLIP", "webli", "SigLIP", "needs `pip install transformers sentencepiece`"),
]
MODELS: dict[str, ModelSpec] = {s.key: s for s in _SPECS}
DEFAULT_MODEL = "ViT-H-14/dfn5b"
FIG3_MODELS = tuple(MODELS)  # all 12 registered weights


@dataclass
class LoadedModel:
    """A ready CLIP model. ``logit_scale`` is exp(learned logit scale) read from the weights."""

    model: Any  # open_clip CLIP in eval mode, on ``device``
    preprocess: Any  # PIL image -> (3, H, W) tensor
    tokenizer: Any  # list[str] -> (B, context_length) long
    spec: ModelSpec
    checkpoint: str | None  # local file the weights were read from
    checkpoint_fingerprint: str | None  # set when the user passed ``checkpoint=``
    logit_scale: float
    logit_bias: float | None
    device: Any
    dim: int = 0

    @property
    def model_id(self) -> str:
        return model_id(self.spec, self.checkpoint_fingerprint)

    def identity(self) -> dict:
        """What decides the features' values (the cache key's model part)."""
        return model_identity(self.spec, self.checkpoint_fingerprint)


def _known_names() -> str:
    return ", ".join(MODELS)


def resolve_model(name: str, pretrained: str | None = None, checkpoint=None) -> ModelSpec:
    """Turn ``(name, pretrained)`` into a ``ModelSpec``.

    ``name`` is a registry key (``"ViT-H-14/dfn5b"``), a registered architecture (``"ViT-H-14"``:
    default tag unless ``pretrained`` is given), any open_clip architecture with an open_clip tag,
    or a path to an open_clip model-config JSON (registered with ``open_clip.add_model_config``;
    the architecture is the file stem; weights then come from ``checkpoint=``).
    """
    if isinstance(name, ModelSpec):
        return name
    if not isinstance(name, str) or not name:
        raise ValueError(f"model name must be a non-empty string, got {name!r}. Known models: {_known_names()}.")
    if name in MODELS:
        spec = MODELS[name]
        if pretrained not in (None, spec.pretrained):
            raise ValueError(f"Model {name!r} already names its tag; drop pretrained={pretrained!r}.")
        return spec
    if name.endswith(".json"):
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(f"Model config {path} does not exist.")
        import open_clip

        open_clip.add_model_config(path)
        name = path.stem
    if pretrained is not None and f"{name}/{pretrained}" in MODELS:
        return MODELS[f"{name}/{pretrained}"]
    registered = [s for s in _SPECS if s.arch == name]
    if pretrained is None and registered and checkpoint is None:
        return registered[0]
    import open_clip

    if name not in open_clip.list_models():
        raise ValueError(
            f"Unknown model {name!r}. Known models: {_known_names()} "
            "(or any open_clip architecture, see open_clip.list_models(), with a tag from "
            "open_clip.list_pretrained(); or a path to an open_clip model-config .json).")
    if pretrained is not None:
        tags = open_clip.list_pretrained_tags_by_model(name)
        if pretrained not in tags:
            raise ValueError(f"Unknown pretrained tag {pretrained!r} for {name}. Known tags: {tags}"
                             " (open_clip.list_pretrained()); for other weights pass checkpoint=PATH.")
    elif checkpoint is None:
        tags = open_clip.list_pretrained_tags_by_model(name)
        raise ValueError(f"No weights for {name!r}: pass pretrained=<tag> (one of {tags}) or checkpoint=PATH.")
    return ModelSpec(name, pretrained, "other")


def model_id(spec: ModelSpec, checkpoint_fingerprint: str | None = None) -> str:
    """Folder name of a model's feature cache, e.g. ``ViT-H-14--dfn5b`` or ``...--ckpt-1a2b3c4d5e6f``."""
    parts = [spec.arch, spec.pretrained or "none"]
    if checkpoint_fingerprint:
        parts.append(f"ckpt-{checkpoint_fingerprint[:12]}")
    return "--".join(p.replace("/", "-") for p in parts)


def model_identity(spec: ModelSpec, checkpoint_fingerprint: str | None = None) -> dict:
    return {"arch": spec.arch, "pretrained": spec.pretrained, "checkpoint_sha256": checkpoint_fingerprint}


def file_fingerprint(path, chunk: int = 8 << 20) -> str:
    """Fast content fingerprint: sha256 of (size, first 8 MiB, last 8 MiB). Not a full hash:
    multi-GB checkpoints are fingerprinted in milliseconds, and any retrained file differs."""
    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(chunk))
        if size > chunk:
            f.seek(max(chunk, size - chunk))
            h.update(f.read(chunk))
    return h.hexdigest()


def check_checkpoint(checkpoint, read: bool = False) -> Path:
    """``checkpoint`` as a path: a state-dict file that exists, with a known suffix; ``read``: also
    check what can be checked without loading the weights (a ``.safetensors`` header that covers the
    file; a torch zip archive's directory), naming the file in every error."""
    path = Path(checkpoint).expanduser()
    if path.suffix not in CHECKPOINT_SUFFIXES:
        raise ValueError(f"checkpoint must be a state-dict file ending in {CHECKPOINT_SUFFIXES}, got {path.name!r}.")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {path} does not exist.")
    if read:
        if path.stat().st_size == 0:
            raise ValueError(f"checkpoint {path} is empty (0 bytes); copy the file again.")
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            try:
                with safe_open(str(path), "pt") as f:
                    f.keys()
            except Exception as e:
                raise ValueError(f"checkpoint {path} is not a complete .safetensors file ({_first_line(e)}); "
                                 "it is truncated or damaged: copy it again.") from None
        else:
            import zipfile

            with open(path, "rb") as f:
                head = f.read(4)
            if head.startswith(b"PK"):
                try:
                    zipfile.ZipFile(path).close()
                except (zipfile.BadZipFile, OSError) as e:
                    raise ValueError(f"checkpoint {path} is not a readable torch archive ({e}): truncated or "
                                     "damaged; copy it again.") from None
    return path


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


def checkpoint_error(path, arch: str, e: BaseException) -> ValueError:
    """One line saying why ``path`` could not be loaded as ``arch``'s weights, naming the file; never
    torch's advice to load with ``weights_only=False`` (this project never unpickles)."""
    import pickle
    import re

    text = str(e)
    try:  # a legacy (non-zip) torch file is read by the weights-only unpickler: random or foreign bytes make
        with open(path, "rb") as f:  # it fail with any error (IndexError, KeyError, ...), not only UnpicklingError
            legacy = Path(path).suffix != ".safetensors" and not f.read(2).startswith(b"PK")
    except OSError:
        legacy = False
    mismatch = "Error(s) in loading state_dict" in text or "size mismatch" in text
    if type(e).__name__ == "SafetensorError":
        why = f"is not a complete .safetensors file ({_first_line(e)}): truncated or damaged; copy it again"
    elif isinstance(e, pickle.UnpicklingError) or "Weights only load failed" in text or (
            legacy and not mismatch and not isinstance(e, (EOFError, OSError))):
        glob = re.search(r"GLOBAL ([\w.]+)", text)
        what = f" (it refers to {glob.group(1)})" if glob else ""
        why = (f"holds Python objects, not only tensors{what}, or is not a torch file; it was refused and not "
               "unpickled. Save the weights as a plain state dict (torch.save(model.state_dict(), ...)) or "
               "as .safetensors")
    elif "PytorchStreamReader" in text or isinstance(e, (EOFError, OSError)):
        why = "is not a readable torch archive: truncated or damaged; copy it again"
    elif mismatch:
        missing = re.search(r"Missing key\(s\)[^:]*: (.*?)(?:\.\s|$)", text, re.S)
        unexpected = re.search(r"Unexpected key\(s\)[^:]*: (.*?)(?:\.\s|$)", text, re.S)
        sizes = re.findall(r"size mismatch for ([\w.]+)", text)
        parts = []
        for label, m in (("missing", missing), ("unexpected", unexpected)):
            if m:
                keys = re.findall(r'"([^"]+)"', m.group(1))
                parts.append(f"{len(keys)} {label} key(s), e.g. {keys[0]}" if keys else label + " keys")
        if sizes:
            parts.append(f"{len(sizes)} tensor(s) of another shape, e.g. {sizes[0]}")
        why = (f"holds the weights of another architecture than {arch} ({'; '.join(parts) or _first_line(e)}): "
               "pass the --model (open_clip architecture or config .json) the file was trained with")
    else:
        why = f"could not be loaded as {arch} weights ({type(e).__name__}: {_first_line(e)})"
    return ValueError(f"checkpoint {path} {why}.")


def preprocess_config(spec: ModelSpec) -> dict:
    """What decides the image pre-processing (part of the image-feature cache key): the architecture's
    input size and the tag's mean / std / interpolation / resize mode, read from open_clip's configs
    (no weights loaded)."""
    import open_clip

    cfg = open_clip.get_model_config(spec.arch) or {}
    tag = _tag_config(spec)
    return {"image_size": cfg.get("vision_cfg", {}).get("image_size"),
            **{k: tag.get(k) for k in ("mean", "std", "interpolation", "resize_mode")}}


def _tag_config(spec: ModelSpec) -> dict:
    if spec.pretrained is None:
        return {}
    from open_clip.pretrained import get_pretrained_cfg

    return get_pretrained_cfg(spec.arch, spec.pretrained)


def cached_weights(spec: ModelSpec, hf_cache_dir=None) -> str | None:
    """Local path of a tag's weights in the Hugging Face (or open_clip URL) cache, else None.

    Looks only at the disk; mirrors open_clip's ``download_pretrained`` file choice (a
    ``.safetensors`` alternative first, then the named file or ``open_clip_pytorch_model.bin``).
    """
    cfg = _tag_config(spec)
    if not cfg:
        return None
    hf_hub = cfg.get("hf_hub", "")
    if hf_hub:
        from huggingface_hub import try_to_load_from_cache

        repo_id, filename = os.path.split(hf_hub)
        filename = filename or HF_WEIGHTS
        names = [filename]
        if filename == HF_WEIGHTS:
            names.insert(0, HF_SAFE_WEIGHTS)
        elif Path(filename).suffix in (".bin", ".pth"):
            names.insert(0, str(Path(filename).with_suffix(".safetensors")))
        for fn in names:
            hit = try_to_load_from_cache(repo_id, fn, cache_dir=hf_cache_dir)
            if isinstance(hit, str) and os.path.isfile(hit):
                return hit
    url = cfg.get("url", "")
    if url:
        target = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        if target.is_file():
            return str(target)
    return None


def _missing_weights_message(spec: ModelSpec) -> str:
    cfg = _tag_config(spec)
    where = cfg.get("hf_hub") or cfg.get("url") or "?"
    from huggingface_hub import constants

    offline = " (HF_HUB_OFFLINE=1 is set)" if constants.HF_HUB_OFFLINE else ""
    return (
        f"Weights of {spec.key} are not on this machine{offline}: not in the Hugging Face cache "
        f"{constants.HF_HUB_CACHE} (source: {where}). Provide them one of two ways:\n"
        f"  (a) on a machine with internet, download them into the Hugging Face cache:\n"
        f"      python -c \"import open_clip; open_clip.create_model_and_transforms('{spec.arch}', "
        f"pretrained='{spec.pretrained}')\"\n"
        f"      then copy the cache (~/.cache/huggingface/hub, or set HF_HOME) to this machine; or call "
        f"load_model(..., download=True) there;\n"
        f"  (b) pass a local state-dict file: load_model('{spec.arch}', '{spec.pretrained}', "
        f"checkpoint='/path/to/open_clip_model.safetensors') (CLI: --checkpoint PATH, make: CHECKPOINT=PATH).")


def default_device(device=None):
    """``device`` as a torch.device; None or ``"auto"``: CUDA when present, else the CPU."""
    import torch

    if device is not None and str(device).lower() != "auto":
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_problem(device) -> str | None:
    """What is wrong with a ``--device`` value (None: nothing; ``auto`` and None are always fine)."""
    import torch

    if device is None or str(device).lower() == "auto":
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        return f"--device {device!r} is not a device: use cpu, cuda or cuda:<index>"
    if dev.type == "cuda" and not torch.cuda.is_available():
        return f"--device {device}: CUDA is not available on this machine (use --device cpu)"
    return None


def load_model(name: str | ModelSpec = DEFAULT_MODEL, pretrained: str | None = None, checkpoint=None, device=None,
               download: bool = False, hf_cache_dir=None) -> LoadedModel:
    """Load a CLIP model through ``open_clip.create_model_and_transforms``, in eval mode.

    Weights: ``checkpoint`` (a local state-dict file) if given, else the pretrained tag from the
    Hugging Face cache. Without cached weights this raises at once (no network) naming both ways to
    provide them, unless ``download=True`` (then open_clip downloads them).
    """
    import open_clip
    import torch

    spec = resolve_model(name, pretrained, checkpoint)
    device = default_device(device)
    cfg = _tag_config(spec)
    fingerprint = None
    if checkpoint is not None:
        weights = str(check_checkpoint(checkpoint, read=True))
        fingerprint = file_fingerprint(weights)
    else:
        weights = cached_weights(spec, hf_cache_dir)
        if weights is None:
            if not download:
                raise FileNotFoundError(_missing_weights_message(spec))
            weights = spec.pretrained  # open_clip downloads the tag
    kwargs = {}
    if cfg:
        kwargs["force_quick_gelu"] = bool(cfg.get("quick_gelu", False))
        kwargs.update({f"image_{k}": cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in cfg})
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            spec.arch, pretrained=weights, device=device, weights_only=True, cache_dir=hf_cache_dir, **kwargs)
    except Exception as e:
        if not os.path.isfile(str(weights)):
            raise
        raise checkpoint_error(weights, spec.arch, e) from e
    model.eval()
    try:
        tokenizer = open_clip.get_tokenizer(spec.arch)
    except Exception as e:  # SigLIP tokenizers come from Hugging Face (transformers)
        raise RuntimeError(f"Could not build the tokenizer of {spec.key}: {e}. SigLIP models need "
                           "`pip install transformers sentencepiece` and the tokenizer in the HF cache.") from e
    scale = float(model.logit_scale.detach().float().exp().item())
    bias = getattr(model, "logit_bias", None)
    bias = float(bias.detach().float().item()) if isinstance(bias, torch.Tensor) else None
    loaded = LoadedModel(model, preprocess, tokenizer, spec, weights if os.path.isfile(str(weights)) else None,
                         fingerprint, scale, bias, device)
    with torch.inference_mode():
        loaded.dim = int(model.encode_text(tokenizer(["a"]).to(device)).shape[-1])
    return loaded
