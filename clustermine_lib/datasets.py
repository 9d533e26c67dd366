"""Image dataset registry: where each evaluation set lives under one ``DATA_ROOT`` and how its labels
map to ImageNet-1K.

One registry (``DATASETS``), one resolve function (``resolve_dataset``), errors that list the valid
names. Downloads are documented in ``docs/gpu_workflow.md`` (``DatasetSpec.url``); nothing here
downloads.

Layouts (``DatasetSpec.layout``), all under ``DATA_ROOT/<folder>``:

- ``wnid``: class folders named by WordNet id (``n01440764/``), possibly nested deeper
  (ImageNet-C: ``<corruption>/<severity>/<wnid>/``); the label is the ImageNet-1K index of the
  image's parent folder. ImageNet-R and ImageNet-A hold 200 of the 1000 classes: their labels are
  still 1K indices (``DatasetSpec.classes = 200``), so every label indexes ``IMAGENET_CLASSNAMES``;
- ``index``: class folders named by the 1K class index (ImageNetV2: ``0/`` ... ``999/``);
- ``images``: OOD sets; every image below the folder, label -1.

Any dataset folder may hold a ``filelist.txt`` (UTF-8; one image path relative to the folder per
line, optionally followed by whitespace and a wnid or class index; a path may contain spaces); when
present it replaces the folder scan (e.g. Textures43, or an ImageNet val folder that is not split into
wnid folders).

Unreadable or corrupt images are skipped, not fatal: ``ImageListDataset`` returns ``None`` for them
and ``collate_skip`` drops them and reports their indices; ``extract`` records each as missing or
unreadable and refuses a dataset where more than a stated share (or every image) was skipped.
Images are decoded to 8-bit RGB by ``to_rgb``: 16-bit (and 32-bit integer / float) grey images are
scaled to 0..255, not clipped (PIL's ``convert("RGB")`` clips them to white).
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .benchmark import EXTRA_OOD_SETS, OOD_SETS, SHIFTED_SETS

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}
FILE_LIST = "filelist.txt"
DOCS = "docs/gpu_workflow.md"


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    folder: str  # relative to DATA_ROOT
    role: str  # "id" | "ood" | "shifted"
    layout: str  # "wnid" | "index" | "images"
    url: str
    n_images: int | None = None  # as published (a sanity check, not enforced)
    classes: int = 0  # ImageNet classes present (0: OOD)
    subset: int | None = None  # seeded random subset of this many images
    openood: str = ""  # OpenOOD v1.5 grouping: "near" | "far"
    aliases: tuple[str, ...] = ()
    note: str = ""


_SPECS = [
    DatasetSpec("imagenet-train", "imagenet/train", "id", "wnid", "https://image-net.org/download.php", 1_281_167,
                1000, note="ILSVRC-2012 train, class folders by wnid"),
    DatasetSpec("imagenet-val", "imagenet/val", "id", "wnid", "https://image-net.org/download.php", 50_000, 1000,
                note="ILSVRC-2012 val sorted into wnid folders (e.g. with the common valprep.sh)"),
    # The paper's six OOD sets (Table 1).
    DatasetSpec("NINCO", "NINCO/NINCO_OOD_classes", "ood", "images", "https://zenodo.org/record/8013288", 5_879,
                openood="near", aliases=("ninco",), note="NINCO_all.tar.gz; the 64 NINCO OOD classes"),
    DatasetSpec("IN-O", "imagenet-o", "ood", "images", "https://people.eecs.berkeley.edu/~hendrycks/imagenet-o.tar",
                2_000, aliases=("ImageNet-O", "imagenet-o")),
    DatasetSpec("OpenImage-O", "openimage-o", "ood", "images", "https://github.com/haoqiwang/vim", 17_632,
                openood="far", aliases=("openimage_o", "openimage-o"),
                note="image list of ViM (datalists/openimage_o.txt) over the OpenImages test set; "
                     "OpenOOD v1.5's download script packs the same images"),
    DatasetSpec("iNat", "iNaturalist", "ood", "images",
                "http://pages.cs.wisc.edu/~huangrui/imagenet_ood_dataset/iNaturalist.tar.gz", 10_000,
                openood="far", aliases=("inaturalist", "inat"), note="MOS plant subset (110 classes)"),
    DatasetSpec("IN-OOD", "imagenet-ood", "ood", "images", "https://github.com/princetonvisualai/imagenetood",
                aliases=("ImageNet-OOD", "imagenet-ood"), note="built from ImageNet-21K with the authors' image list"),
    DatasetSpec("Textures43", "textures43", "ood", "images", "https://www.robots.ox.ac.uk/~vgg/data/dtd/",
                aliases=("textures-43",),
                note="the paper's 43-class subset of DTD (ref. [64]); put those images, or a filelist.txt "
                     "of them, in the folder"),
    # Covariate-shifted ImageNet test sets (Table 2 / 9, Fig. 4).
    DatasetSpec("ImageNet-Sketch", "imagenet-sketch/sketch", "shifted", "wnid",
                "https://github.com/HaohanWang/ImageNet-Sketch", 50_889, 1000, aliases=("sketch", "imagenet-sketch")),
    DatasetSpec("ImageNet-R", "imagenet-r", "shifted", "wnid", "https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar",
                30_000, 200, aliases=("imagenet-r",)),
    DatasetSpec("ImageNet-A", "imagenet-a", "shifted", "wnid", "https://people.eecs.berkeley.edu/~hendrycks/imagenet-a.tar",
                7_500, 200, aliases=("imagenet-a",)),
    DatasetSpec("ImageNetV2", "imagenetv2-matched-frequency-format-val", "shifted", "index",
                "https://huggingface.co/datasets/vaishaal/ImageNetV2", 10_000, 1000,
                aliases=("imagenet-v2", "imagenetv2"), note="matched-frequency; folders are class indices 0..999"),
    DatasetSpec("ImageNet-C", "imagenet-c", "shifted", "wnid", "https://zenodo.org/record/2235448", 3_750_000, 1000,
                subset=10_000, aliases=("imagenet-c",),
                note="<corruption>/<severity>/<wnid>/; a seeded random subset of 10,000 images (paper)"),
    # Extra OOD sets (Table 7) and OpenOOD's near/far sets (Table 5).
    DatasetSpec("Places", "Places", "ood", "images",
                "http://pages.cs.wisc.edu/~huangrui/imagenet_ood_dataset/Places.tar.gz", 10_000, aliases=("places",)),
    DatasetSpec("Texture", "dtd/images", "ood", "images", "https://www.robots.ox.ac.uk/~vgg/data/dtd/", 5_640,
                openood="far", aliases=("Textures", "DTD", "texture", "textures"), note="all 47 DTD classes"),
    DatasetSpec("SUN", "SUN", "ood", "images", "http://pages.cs.wisc.edu/~huangrui/imagenet_ood_dataset/SUN.tar.gz",
                10_000, aliases=("sun",)),
    DatasetSpec("SSB", "ssb_hard", "ood", "images", "https://github.com/sgvaze/SSB", 49_000, openood="near",
                aliases=("SSB-hard", "ssb_hard", "ssb"), note="ImageNet-21K images; OpenOOD v1.5 packs them"),
    DatasetSpec("NINCOv2", "NINCO/NINCO_popular_datasets_subsamples", "ood", "images",
                "https://zenodo.org/record/8013288", aliases=("ninco-v2",),
                note="our reading: the NINCO authors' ID-free subsamples of popular OOD sets"),
]
DATASETS: dict[str, DatasetSpec] = {s.name: s for s in _SPECS}
OPENOOD_NEAR = tuple(s.name for s in _SPECS if s.openood == "near")  # SSB-hard, NINCO (Table 5)
OPENOOD_FAR = tuple(s.name for s in _SPECS if s.openood == "far")  # iNat, Textures, OpenImage-O
GROUPS = {
    "paper": ("imagenet-train", "imagenet-val") + OOD_SETS,  # Table 1
    "id": ("imagenet-train", "imagenet-val"),
    "ood": OOD_SETS,
    "shifted": SHIFTED_SETS,
    "extra": EXTRA_OOD_SETS,
    "openood": ("imagenet-train", "imagenet-val") + OPENOOD_NEAR + OPENOOD_FAR,
    "all": tuple(DATASETS),
}
_LOOKUP = {k.lower(): s.name for s in _SPECS for k in (s.name,) + s.aliases}


def resolve_dataset(name: str) -> DatasetSpec:
    """Registry entry by name or alias (case-insensitive)."""
    if isinstance(name, DatasetSpec):
        return name
    key = _LOOKUP.get(str(name).lower())
    if key is None:
        raise ValueError(f"Unknown dataset {name!r}. Known datasets: {list(DATASETS)}; "
                         f"groups: {list(GROUPS)}.")
    return DATASETS[key]


def expand_datasets(names) -> list[str]:
    """``"NINCO,IN-O"`` / ``["paper", "ImageNet-R"]`` -> canonical names, groups expanded, order kept."""
    if isinstance(names, str):
        names = [n for n in names.split(",") if n.strip()]
    out = []
    for n in names:
        n = n.strip()
        members = GROUPS.get(n.lower(), (n,))
        out.extend(resolve_dataset(m).name for m in members)
    return list(dict.fromkeys(out))


@lru_cache(maxsize=1)
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1K wnids in class-index order (the order of open_clip's IMAGENET_CLASSNAMES)."""
    from .corpus import _timm_synset_list

    wnids = tuple(_timm_synset_list("imagenet_synsets.txt"))
    if len(wnids) != 1000:
        raise RuntimeError(f"timm's imagenet_synsets.txt holds {len(wnids)} wnids, expected 1000.")
    return wnids


def imagenet_classnames() -> list[str]:
    """Y_GT: open_clip's 1000 ImageNet class names, in class-index (sorted wnid) order."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    return list(IMAGENET_CLASSNAMES)


def resolve_data_root(data_root=None) -> Path:
    """``data_root`` if given, else ``$DATA_ROOT``."""
    root = data_root if data_root is not None else os.environ.get("DATA_ROOT")
    if not root:
        raise ValueError(f"No data root: pass data_root=... (CLI --data-root, make DATA_ROOT=...) or set "
                         f"DATA_ROOT. The expected layout is in {DOCS}.")
    return Path(root).expanduser()


def dataset_dir(name, data_root=None) -> Path:
    """``DATA_ROOT/<folder>`` of a dataset; raises if it is missing, naming the path and the URL."""
    spec = resolve_dataset(name)
    path = resolve_data_root(data_root) / spec.folder
    if not path.is_dir():
        raise FileNotFoundError(f"Dataset {spec.name} not found: expected the folder {path} "
                                f"(layout '{spec.layout}'). Get it from {spec.url} ({spec.note or 'see ' + DOCS}); "
                                f"the full DATA_ROOT layout is in {DOCS}.")
    return path


def _scan(root: Path) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = Path(dirpath).relative_to(root)
        for f in filenames:
            if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_EXTENSIONS:
                found.append((rel / f).as_posix())
    return sorted(found)


def _label(spec: DatasetSpec, relpath: str, given: str | None, wnid_index: dict) -> int:
    if spec.role == "ood":
        return -1
    token = given if given is not None else (Path(relpath).parent.name if "/" in relpath else "")
    if spec.layout == "index" or (given is not None and token.isdigit()):
        if not token.isdigit() or not 0 <= int(token) < 1000:
            raise ValueError(f"{spec.name}: {relpath!r} has no class index 0..999 (got {token!r}).")
        return int(token)
    if token not in wnid_index:
        raise ValueError(f"{spec.name}: {relpath!r} is not inside an ImageNet-1K wnid folder (got {token!r}); "
                         f"expected layout '{spec.layout}' (see {DOCS}).")
    return wnid_index[token]


def read_file_list(path: Path) -> list[tuple[str, str | None]]:
    """``(relpath, label token or None)`` of each line of a ``filelist.txt``: the whole line when it
    ends in an image extension, else the path and its last whitespace-separated token (a wnid or
    class index). UTF-8 (a BOM is dropped); a decoding error names the file and the line."""
    from .corpus import read_text_file

    pairs = []
    for line in read_text_file(path).splitlines():
        line = line.strip()
        if not line:
            continue
        if Path(line).suffix.lower() in IMAGE_EXTENSIONS or len(line.split()) == 1:
            pairs.append((line, None))
        else:
            relpath, token = line.rsplit(maxsplit=1)
            pairs.append((relpath.strip(), token))
    return pairs


def missing_files(root: Path, items) -> list[str]:
    """The listed relative paths that do not exist under ``root`` (one ``stat`` each)."""
    return [p for p, _ in items if not (Path(root) / p).is_file()]


def list_folder(folder) -> list[tuple[str, int]]:
    """Sorted ``(path relative to folder, -1)`` of every image below ``folder``: any layout, recursive,
    hidden files and folders skipped, extensions ``IMAGE_EXTENSIONS`` (what ``clustermine fit`` /
    ``score`` encode). A folder that is missing, not a folder, or holds no image is an error naming it."""
    root = Path(folder).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"the image folder {root} does not exist: give the folder that holds your images.")
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder: give the folder that holds your images (every image "
                                 "below it is used, in any layout).")
    found = _scan(root)
    if not found:
        raise FileNotFoundError(f"the image folder {root} holds no images (searched recursively for "
                                f"{', '.join(sorted(IMAGE_EXTENSIONS))}): give a folder with images in it.")
    return [(p, -1) for p in found]


def list_images(name, data_root=None, seed: int = 0) -> list[tuple[str, int]]:
    """Sorted ``(path relative to the dataset folder, label)`` pairs; label = 1K index or -1 (OOD).

    A ``subset`` dataset (ImageNet-C) keeps ``spec.subset`` images drawn with ``random.Random(seed)``
    from the sorted full list, in sorted order.
    """
    spec = resolve_dataset(name)
    root = dataset_dir(spec, data_root)
    listing = root / FILE_LIST
    if listing.is_file():
        pairs = read_file_list(listing)
    else:
        pairs = [(p, None) for p in _scan(root)]
    if not pairs:
        raise FileNotFoundError(f"Dataset {spec.name}: no images ({sorted(IMAGE_EXTENSIONS)}) under {root}. "
                                f"Get it from {spec.url}; layout in {DOCS}.")
    wnid_index = {w: i for i, w in enumerate(imagenet_wnids())} if spec.role != "ood" else {}
    items = [(p, _label(spec, p, g, wnid_index)) for p, g in pairs]
    if spec.subset is not None and len(items) > spec.subset:
        keep = sorted(random.Random(seed).sample(range(len(items)), spec.subset))
        items = [items[i] for i in keep]
    return items


def to_rgb(img):
    """A PIL image as 8-bit RGB. 16-bit grey (``I;16*``) is divided by 257; 32-bit integer (``I``)
    likewise when it exceeds 255 (a 16-bit file opened as ``I``); float (``F``) in [0, 1] is
    multiplied by 255. Other modes go through PIL's ``convert``."""
    from PIL import Image

    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        import numpy as np

        a = np.asarray(img, dtype=np.float64)
        if img.mode.startswith("I;16") or (img.mode == "I" and a.max(initial=0) > 255):
            a = a / 257.0
        elif img.mode == "F" and a.max(initial=0) <= 1.0:
            a = a * 255.0
        img = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), mode="L")
    return img.convert("RGB")


def image_problem(path) -> str | None:
    """None when ``path`` decodes as an image, else ``"missing"`` or ``"unreadable"``."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        return "missing"
    try:
        with Image.open(path) as img:
            to_rgb(img)
    except Exception:
        return "unreadable"
    return None


class ImageListDataset:
    """Map-style torch dataset over ``(relpath, label)`` items under ``root``.

    ``ds[i] -> (image (3, H, W) tensor, label int, i)``; ``image`` is ``None`` when the file cannot
    be read or decoded (the index is then added to ``ds.skipped`` in this process). Use
    ``collate_skip`` so a DataLoader drops those and reports them, also from worker processes.
    """

    def __init__(self, root, items, transform=None):
        self.root = Path(root)
        self.items = list(items)
        self.transform = transform
        self.skipped: list[int] = []

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        from PIL import Image

        path, label = self.items[i]
        try:
            with Image.open(self.root / path) as img:
                img = to_rgb(img)
            image = self.transform(img) if self.transform is not None else img
        except Exception:  # corrupt, truncated, missing or undecodable: skip, never crash a long run
            self.skipped.append(i)
            return None, label, i
        return image, label, i


def collate_skip(batch):
    """Collate ``(image|None, label, index)`` samples -> ``(images (B, 3, H, W) | None, labels (B,),
    indices (B,), skipped indices list)`` with the unreadable samples removed."""
    import torch

    ok = [b for b in batch if b[0] is not None]
    skipped = [b[2] for b in batch if b[0] is None]
    if not ok:
        return None, torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), skipped
    images = torch.stack([b[0] for b in ok])
    labels = torch.tensor([b[1] for b in ok], dtype=torch.long)
    indices = torch.tensor([b[2] for b in ok], dtype=torch.long)
    return images, labels, indices, skipped


def build_dataset(name, data_root=None, transform=None, seed: int = 0) -> ImageListDataset:
    """``ImageListDataset`` of a registered dataset (``transform``: e.g. a CLIP model's preprocess)."""
    return ImageListDataset(dataset_dir(name, data_root), list_images(name, data_root, seed), transform)


def describe_datasets() -> str:
    """Registry as text: name, role, folder under DATA_ROOT, source."""
    return "\n".join(f"{s.name:16s} {s.role:8s} DATA_ROOT/{s.folder:42s} {s.url}" for s in _SPECS)
