"""Notebook 03, Table 3: ClusterMine, PosMine and NegLabel* with each text corpus (WordNet-IN21K / -N /
-NA, and a POS corpus file when given)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .. import analysis, paper
from ..benchmark import OOD_SETS
from ..notebook import Config, open_benchmark
from ..runner import Runner
from ..tables import mean_over_sets

CORPORA = ("wordnet-in21k", "wordnet-n", "wordnet-na")
METHODS = ("NegLabel*", "PosMine", "ClusterMine")


def table3_row(run: Runner, corpus_label: str) -> pd.DataFrame:
    """One corpus of Table 3: mean AUROC of NegLabel*, PosMine, ClusterMine; |Y_pos|, overlap and F1."""
    b = run.bench
    t = mean_over_sets(run.table(METHODS), OOD_SETS).drop(columns="sets")
    rows = []
    for _, r in t.iterrows():
        row = {**r.to_dict(), "corpus": corpus_label, "corpus_size": len(b.corpus), "n_pos": np.nan,
               "overlap": np.nan, "f1": np.nan}
        if r["method"] in ("PosMine", "ClusterMine"):
            mined = run.mined(r["method"])
            q = analysis.label_set_quality(mined.names, b.class_names)
            row.update(n_pos=len(mined), overlap=q["overlap"], f1=q["f1"])
        rows.append(row)
    return pd.DataFrame(rows)


def table3(cfg: Config, corpora=CORPORA, pos_corpus_file: str | None = None,
           pos_corpus_name: str = "POS-NA") -> pd.DataFrame:
    """Table 3: one row per (corpus, method). POS corpora cannot be shipped: with ``pos_corpus_file``
    (one concept per line, or ``word,pos`` CSV) the file and the file ∪ Y_GT are added."""
    from ..corpus import load_corpus_file

    parts = [table3_row(Runner.from_config(open_benchmark(cfg, corpus=c), cfg), paper.CORPUS_NAMES.get(c, c))
             for c in corpora]
    if pos_corpus_file:
        pos = load_corpus_file(pos_corpus_file, name=pos_corpus_name)
        for corp, label in ((pos, pos_corpus_name), (None, f"{pos_corpus_name}+GT")):
            if corp is None:
                corp = pos.union(open_benchmark(cfg).class_names, name=f"{pos_corpus_name}+GT")
            parts.append(table3_row(Runner.from_config(open_benchmark(cfg, corpus=corp), cfg), label))
    return pd.concat(parts, ignore_index=True)


def table3_compare(t3: pd.DataFrame) -> pd.DataFrame:
    cmp = paper.compare(t3, paper.table3(), on=("corpus", "method"), values=("auroc", "overlap", "f1"))
    cmp.insert(2, "|Y_pos|", t3["n_pos"].values)
    return cmp
