"""Notebook 08, Fig. 5: how close the mined labels are to the true class names (text similarity, WordNet
hops)."""
from __future__ import annotations

import pandas as pd

from .. import analysis, paper
from ..runner import Runner


def fig5_data(run: Runner, methods=("PosMine", "ClusterMine")) -> pd.DataFrame:
    """Fig. 5: for each mined label, top-1 text-text cosine to Y_GT and WordNet hops to Y_GT (NaN: no synset
    or no common ancestor). Long: method, label, similarity, hops."""
    b = run.bench
    parts = []
    for m in methods:
        mined = run.mined(m)
        sim = analysis.top1_text_similarity(b.corpus_text[mined.pos], b.class_text, device=run.settings.device)
        hops = analysis.wordnet_hops([b.corpus.synsets[i] for i in mined.pos.tolist()], b.class_synsets)
        parts.append(pd.DataFrame({"method": m, "label": mined.names, "similarity": sim.numpy().astype(float),
                                   "hops": hops}))
    return pd.concat(parts, ignore_index=True)


def fig5_summary(f5: pd.DataFrame) -> pd.DataFrame:
    """Per method: |Y_pos|, mean/median similarity, share of labels at 0 / 1 / 2 / >=3 hops (percent)."""
    rows = []
    for m, g in f5.groupby("method", sort=False):
        h = g["hops"]
        rows.append({"method": m, "|Y_pos|": len(g), "mean similarity": g["similarity"].mean(),
                     "median similarity": g["similarity"].median(),
                     "0 hops %": 100 * (h == 0).mean(), "1 hop %": 100 * (h == 1).mean(),
                     "2 hops %": 100 * (h == 2).mean(), ">=3 hops %": 100 * (h >= 3).mean(),
                     "no path %": 100 * h.isna().mean()})
    return pd.DataFrame(rows).round(2)


def fig5_reference(run: Runner, methods=("PosMine", "ClusterMine")) -> pd.DataFrame:
    """Overlap and F1 of Y_pos vs Y_GT beside the paper's (Table 3, WordNet-NA row), which Fig. 5 illustrates."""
    b = run.bench
    rows = []
    for m in methods:
        q = analysis.label_set_quality(run.mined(m).names, b.class_names)
        rows.append({"corpus": paper.CORPUS_NAMES.get(b.corpus.name, b.corpus.name), "method": m,
                     "overlap": q["overlap"], "f1": q["f1"]})
    return paper.compare(pd.DataFrame(rows), paper.table3(), on=("corpus", "method"), values=("overlap", "f1"))
