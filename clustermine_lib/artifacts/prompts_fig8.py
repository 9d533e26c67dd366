"""Notebook 12, Fig. 8: the effect of the context prompts (appendix D's five prompt sets)."""
from __future__ import annotations

import pandas as pd

from .. import paper
from ..benchmark import OOD_SETS
from ..notebook import Config, open_benchmark
from ..prompts import DEFAULT_PROMPTS, PROMPT_SETS
from ..runner import Runner
from ..tables import with_means

METHODS = ("MCM", "NegLabel", "PosMine", "ClusterMine")
PROMPT_NAMES = ("basic", "openai-80", "ming-5", "nice", "simple-7")  # Fig. 8's order (prompts.PROMPT_SETS)


def fig8_data(cfg: Config, prompt_sets=None, methods=METHODS) -> pd.DataFrame:
    parts = []
    for p in prompt_sets or PROMPT_NAMES:
        t = with_means(Runner.from_config(open_benchmark(cfg, prompts=p), cfg).table(methods), OOD_SETS)
        t["prompts"], t["n_templates"] = p, len(PROMPT_SETS[p])
        parts.append(t)
    return pd.concat(parts, ignore_index=True)


def fig8_reference(f8: pd.DataFrame) -> pd.DataFrame:
    """The paper tabulates only its default prompts, simple-7 (Table 1); Fig. 8's other bars are in the figure."""
    m = f8[(f8.ood_set == "mean")][["prompts", "method", "ood_set", "auroc", "fpr95"]].reset_index(drop=True)
    ref = paper.table1().assign(prompts=DEFAULT_PROMPTS)
    return paper.compare(m, ref, on=("prompts", "method", "ood_set")).drop(columns="ood_set")
