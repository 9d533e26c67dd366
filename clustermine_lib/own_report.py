"""``clustermine explain``: what a detector fitted on your images mined, and how C was chosen, read
from its ``detector.json`` (``own_images.fit_folder`` wrote it); as text, and as a Markdown report with
thumbnails of a few example images per concept when the image folder is given.

- ``concepts(info)``: one row per mined concept (Y_pos): the clusters whose majority vote it won, the
  training images that voted for it (their zero-shot top-1, in those clusters), a few of those
  images (the most similar to the concept's text first);
- ``c_curve(info)``: the label-free curves of appendix B for the C values tried (|Y_pos|, |Y_pos|/C,
  the redundancy ratio: the share of Y_pos that won two or more clusters) and the elbow of each;
- ``explain_text`` / ``write_report``.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .fileio import atomic_write, content_hash


def concepts(info: dict) -> pd.DataFrame:
    """name, clusters, images, examples (paths relative to the fitted folder), by images descending."""
    examples = info.get("meta", {}).get("examples", {})
    rows = [{"concept": p["name"], "clusters": p["clusters"], "images": p["images"],
             "examples": examples.get(p["name"], [])} for p in info["positives"]]
    return pd.DataFrame(rows).sort_values(["images", "clusters", "concept"], ascending=[False, False, True],
                                          ignore_index=True)


def c_curve(info: dict) -> pd.DataFrame:
    """C, |Y_pos|, |Y_pos|/C, redundancy of every C tried, and which curve has its elbow there."""
    clusters = info.get("meta", {}).get("clusters", {})
    table = pd.DataFrame(clusters.get("curve") or [])
    if table.empty:
        return table
    table = table[["C", "n_pos", "pos_per_cluster", "redundancy"]].rename(
        columns={"n_pos": "|Y_pos|", "pos_per_cluster": "|Y_pos|/C"})
    by = clusters.get("by_metric") or {}
    names = {"pos_per_cluster": "|Y_pos|/C", "redundancy": "redundancy"}
    table["elbow of"] = [", ".join(names[m] for m, c in by.items() if c == row_c) for row_c in table["C"]]
    return table


def _model(meta: dict) -> str:
    from .own_images import describe_model

    return describe_model(meta["model"]) if isinstance(meta.get("model"), dict) else "(not recorded)"


def header(info: dict, directory) -> list[str]:
    meta = info.get("meta", {})
    corpus, images, clusters = meta.get("corpus", info["corpus"]), meta.get("images", {}), meta.get("clusters", {})
    how = (f"chosen by --clusters auto: the elbow of |Y_pos|/C at C = {clusters['by_metric']['pos_per_cluster']}, "
           f"of the redundancy ratio at C = {clusters['by_metric']['redundancy']}, the larger kept"
           if clusters.get("by_metric") else "given with --clusters")
    lines = [f"Detector {directory}: {info['class']}, fitted {info.get('created', '?')}"]
    if "prompts" in meta:  # written by clustermine fit (own_images.fit_folder)
        lines.append(f"  features: {_model(meta)}; prompts {meta['prompts'].get('name')}")
    lines.append(f"  corpus: {corpus.get('name')} ({corpus.get('size')} concepts)")
    if images:
        lines.append(f"  images: {images['n_images']} from {images['folder']} ({images['n_train']} clustered, "
                     f"{images['n_holdout']} held out for the threshold, seed {images['seed']}; "
                     f"{images['n_skipped']} unreadable skipped)")
    lines.append(f"  C = {info['C']} clusters ({how}); |Y_pos| = {info['n_pos']} mined concepts, "
                 f"|Y_neg| = {info['n_neg']}")
    if info.get("threshold") is not None:
        lines.append(f"  threshold {info['threshold']:.4g}: {100 * (info.get('recall') or 0):.0f}% of the held-out "
                     "ID images score at or above it; below it an image is flagged OOD")
    return lines


def explain_text(info: dict, directory, top: int = 30) -> str:
    """What ``clustermine explain`` prints: the header, the ``top`` concepts, the C curve."""
    table = concepts(info)
    lines = header(info, directory) + ["", f"Mined concepts, by the images that voted for them "
                                           f"({min(top, len(table))} of {len(table)}):"]
    shown = table.head(top).assign(examples=lambda d: d["examples"].map(lambda e: ", ".join(e[:3])))
    lines += shown.to_string(index=False).splitlines()
    curve = c_curve(info)
    lines += ["", "Label-free C curve (paper appendix B: pick C where |Y_pos|/C and the redundancy ratio saturate):"]
    lines += curve.to_string(index=False, float_format=lambda v: f"{v:.3f}").splitlines() if len(curve) > 1 else [
        f"  one C only ({info['C']}); fit with --clusters auto to see the curve"]
    return "\n".join(lines)


def _thumbnail(src: Path, dest: Path, size: int) -> bool:
    from PIL import Image

    from .datasets import to_rgb

    try:
        with Image.open(src) as img:
            img = to_rgb(img)
        img.thumbnail((size, size))
    except Exception:  # missing or unreadable since the fit: the report says so
        return False
    atomic_write(dest, lambda tmp: img.save(tmp, format="PNG"))
    return True


def write_report(info: dict, directory, images_dir, out=None, top: int = 30, size: int = 128) -> Path:
    """``<out>/report.md`` (default ``<detector>/report``) with ``thumbs/`` of each concept's example
    images (read from ``images_dir``, the folder the detector was fitted on); written last, so a
    report that exists is complete."""
    images_dir = Path(images_dir).expanduser()
    if not images_dir.is_dir():
        raise FileNotFoundError(f"--images {images_dir} is not a folder: give the folder the detector was fitted on.")
    out = Path(out) if out is not None else Path(directory) / "report"
    table = concepts(info).head(top)
    md = ["# What the detector mined", ""] + [f"- {ln.strip()}" for ln in header(info, directory)] + [
        "", "## Mined concepts", "", "| concept | clusters | images | examples |", "| --- | ---: | ---: | --- |"]
    for row in table.itertuples():
        cells = []
        for rel in row.examples:
            name = f"thumbs/{content_hash(rel)[:16]}.png"
            cells.append(f"![{rel}]({name})" if _thumbnail(images_dir / rel, out / name, size) else f"{rel} (missing)")
        md.append(f"| {row.concept.replace('|', chr(92) + '|')} | {row.clusters} | {row.images} | {' '.join(cells)} |")
    curve = c_curve(info)
    md += ["", "## Label-free C curve (appendix B)", ""]
    if len(curve) > 1:
        md += ["| " + " | ".join(c.replace("|", "\\|") for c in curve.columns) + " |",
               "|" + " ---: |" * len(curve.columns)]
        md += ["| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v).replace("|", "\\|") for v in r) + " |"
               for r in curve.itertuples(index=False)]
    else:
        md.append(f"One C only ({info['C']}); fit with `--clusters auto` to see the curve.")
    return atomic_write(out / "report.md", "\n".join(md) + "\n")
