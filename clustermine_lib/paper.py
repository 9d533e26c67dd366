"""The paper's reported numbers (``data/paper/*.csv``, copied from the paper), reshaped to our long
format, and the one comparison of ours with them.

``table1()`` ... ``table9()`` return the paper's tables in the long format of ``tables.COLUMNS`` (plus
the keys an artifact varies: corpus, preprocess, size_group ...). ``compare`` puts ours, the paper's
and the difference side by side; ``with_paper`` adds the paper's values as ``paper_*`` columns (what the
CSV files hold). The paper's numbers come from real CLIP ViT-H-14 (dfn5b) on ImageNet; the simulated
benchmark is not expected to reproduce them.
"""
from __future__ import annotations

from importlib import resources

import numpy as np
import pandas as pd

from .benchmark import OOD_SETS

# Our names -> the paper's, where they differ.
CORPUS_NAMES = {"wordnet-in21k": "WordNet-IN21K", "wordnet-n": "WordNet-N", "wordnet-na": "WordNet-NA"}
OOD_NAMES = {"SSB": "SSB-hard", "Texture": "Textures"}  # Table 5 (OpenOOD)
PREPROCESS_COLUMNS = {"dedup-1-lemma": "no_dup_1_lemma", "dup-all-lemmas": "dup_all_lemmas",
                      "dup-1-lemma": "dup_1_lemma"}  # Table 6


def read_csv(name: str) -> pd.DataFrame:
    """A paper table as printed (wide), e.g. ``read_csv('table1')``; the first line is its caption."""
    with resources.files("clustermine_lib").joinpath(f"data/paper/{name}.csv").open() as f:
        return pd.read_csv(f, comment="#")


def _melt_pairs(wide: pd.DataFrame, sets, id_set: str) -> pd.DataFrame:
    rows = [{"method": r["method"], "id_set": id_set, "ood_set": s, "auroc": r.get(f"{s}_auroc"),
             "fpr95": r.get(f"{s}_fpr95")} for _, r in wide.iterrows() for s in sets]
    return pd.DataFrame(rows)


def _with_mean_columns(wide: pd.DataFrame, keys) -> pd.DataFrame:
    """Tables printing AUROC per OOD set plus mean AUROC / FPR95 columns (Tables 8, 9)."""
    rows = []
    for _, r in wide.iterrows():
        k = {c: r[c] for c in keys}
        rows += [{**k, "ood_set": s, "auroc": r[s], "fpr95": np.nan} for s in OOD_SETS]
        rows.append({**k, "ood_set": "mean", "auroc": r["mean_auroc"], "fpr95": r["mean_fpr95"]})
    return pd.DataFrame(rows)


def table1() -> pd.DataFrame:
    """Table 1 in long format, with ``ood_set='mean'`` rows for the mean columns."""
    return _melt_pairs(read_csv("table1"), list(OOD_SETS) + ["mean"], "ImageNet")


def table3() -> pd.DataFrame:
    """Table 3 in long format: method, corpus, paper_corpus_size, auroc (mean), overlap, f1."""
    rows = []
    for _, r in read_csv("table3").iterrows():
        for m, p in (("NegLabel*", "neglabel_star"), ("PosMine", "posmine"), ("ClusterMine", "clustermine")):
            rows.append({"method": m, "corpus": r["corpus"], "paper_corpus_size": r["corpus_size"],
                         "auroc": r[f"{p}_auroc"], "overlap": r.get(f"{p}_overlap", np.nan),
                         "f1": r.get(f"{p}_f1", np.nan)})
    return pd.DataFrame(rows)


def table4() -> pd.DataFrame:
    """Table 4: mean AUROC / FPR95 per method and |Y_pos| group (``ypos_1000`` / ``ypos_1500``)."""
    rows = []
    for _, r in read_csv("table4").iterrows():
        m = r["method"] if r["method"] in ("MCM (Y_GT ∪ Y_aug)", "Eq.1 (Y_GT ∪ Y_aug)") else "ClusterMine"
        for g in ("ypos_1000", "ypos_1500"):
            rows.append({"method": m, "size_group": g, "ood_set": "mean", "auroc": r[f"{g}_auroc"],
                         "fpr95": r[f"{g}_fpr95"]})
    return pd.DataFrame(rows)


def table5() -> pd.DataFrame:
    """Table 5 (OpenOOD, ViT-B-16): per set and the near / far means, sets named as in the paper."""
    rows = [{"method": r["method"], "ood_set": s, "auroc": r.get(f"{s}_auroc"), "fpr95": r.get(f"{s}_fpr95")}
            for _, r in read_csv("table5").iterrows()
            for s in ("SSB-hard", "NINCO", "iNat", "Textures", "OpenImage-O", "near", "far")]
    return pd.DataFrame(rows)


def table5_wide() -> pd.DataFrame:
    """The paper's Table 5 AUROCs as printed, AdaNeg and SynOOD included (their authors' numbers)."""
    return table5().pivot_table(index="method", columns="ood_set", values="auroc", sort=False).round(2)


def table6() -> pd.DataFrame:
    """Table 6: ClusterMine per corpus pre-processing (our names, ``PREPROCESS_COLUMNS``) and OOD set."""
    rows = []
    for _, r in read_csv("table6").iterrows():
        for v, col in PREPROCESS_COLUMNS.items():
            rows.append({"method": "ClusterMine", "preprocess": v,
                         "ood_set": "mean" if r["ood_set"] == "Mean" else r["ood_set"],
                         "auroc": r[f"{col}_auroc"], "fpr95": r[f"{col}_fpr95"]})
    return pd.DataFrame(rows)


def table7() -> pd.DataFrame:
    """Table 7: AUROC of each method on the extra OOD sets."""
    return read_csv("table7").melt(id_vars="method", var_name="ood_set", value_name="auroc")


def table8() -> pd.DataFrame:
    """Table 8: PLP on mined positives; AUROC per OOD set, mean AUROC and FPR95."""
    return _with_mean_columns(read_csv("table8"), ("method",))


def table9() -> pd.DataFrame:
    """Table 9 (and Table 2 = its means): AUROC per OOD set, mean AUROC and FPR95, per ID set."""
    return _with_mean_columns(read_csv("table9"), ("method", "id_set"))


def _reference(reference: pd.DataFrame, keys, values, prefix: str, suffix: str) -> pd.DataFrame:
    ref = reference[keys + [v for v in values if v in reference.columns]].drop_duplicates(keys)
    return ref.rename(columns={v: f"{prefix}{v}{suffix}" for v in values})


def compare(ours: pd.DataFrame, reference: pd.DataFrame, on=("method", "id_set", "ood_set"),
            values=("auroc", "fpr95")) -> pd.DataFrame:
    """Ours beside the paper's numbers and the difference (ours - paper), rounded to 2 decimals.

    Columns: the ``on`` keys, then for each value ``<value>``, ``<value>_paper``, ``<value>_diff``.
    Rows of ``ours`` without a paper number keep NaN there; the row order of ``ours`` is kept.
    """
    keys = list(on)
    vals = [v for v in values if v in ours.columns]
    out = ours[keys + vals].merge(_reference(reference, keys, vals, "", "_paper"), on=keys, how="left", sort=False)
    for v in vals:
        out[f"{v}_paper"] = pd.to_numeric(out[f"{v}_paper"], errors="coerce") if f"{v}_paper" in out else np.nan
        out[f"{v}_diff"] = out[v] - out[f"{v}_paper"]
    return out[keys + [c for v in vals for c in (v, f"{v}_paper", f"{v}_diff")]].round(2)


def with_paper(ours: pd.DataFrame, reference: pd.DataFrame, on=("method", "id_set", "ood_set")) -> pd.DataFrame:
    """``ours`` (every column kept) with ``paper_auroc`` / ``paper_fpr95`` columns: what the CSV files hold."""
    keys = list(on)
    out = ours.merge(_reference(reference, keys, ("auroc", "fpr95"), "paper_", ""), on=keys, how="left", sort=False)
    for c in ("paper_auroc", "paper_fpr95"):
        if c not in out.columns:
            out[c] = np.nan
    return out
