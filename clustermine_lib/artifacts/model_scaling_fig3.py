"""Notebook 07, Fig. 3: the methods across CLIP models (demo: SIMULATED models, not CLIP weights)."""
from __future__ import annotations

import pandas as pd

from .. import paper
from ..benchmark import OOD_SETS
from ..notebook import Config, open_benchmark
from ..runner import Runner
from ..tables import with_means

METHODS = ("MCM", "NegLabel", "PosMine", "ClusterMine")
# demo: SIMULATED "models" = ``SimConfig`` profiles whose image clutter is scaled so that zero-shot top-1
# matches each real CLIP model's published value (``simulate.MODEL_CLUTTER``, docs/simulation.md). They
# stand in for CLIP weights of different quality; they are NOT CLIP weights.
SIM_MODELS = ("clip-b16-openai", "clip-l14-openai", "clip-h14-dfn5b")  # weakest, middle, the demo (of simulate.MODEL_CLUTTER)
DEMO_MODEL = "clip-h14-dfn5b"  # the demo benchmark itself (stands for the paper's ViT-H-14 dfn5b)


def fig3_models(cfg: Config) -> list[str]:
    """The models of Fig. 3: the notebook's ``models`` parameter, else ``SIM_MODELS`` (demo) or
    ``models.FIG3_MODELS`` (paper)."""
    if cfg.demo:
        return list(cfg.extra.get("models") or SIM_MODELS)
    from ..models import FIG3_MODELS

    return list(cfg.extra.get("models") or FIG3_MODELS)


def check_fig3_features(cfg: Config, models=None) -> list[str]:
    """The models of Fig. 3; paper: first raise one ``FileNotFoundError`` listing, for every model, the
    missing image features with the ``make features`` command of each (text features are checked when
    each model is loaded)."""
    if cfg.demo:
        unknown = [m for m in models or () if m not in SIM_MODELS]
        if unknown:
            raise ValueError(f"Unknown simulated models {unknown}; the demo has {list(SIM_MODELS)}.")
        return list(models or fig3_models(cfg))
    from .. import feature_check
    from ..datasets import GROUPS

    missing = []
    for key in models or fig3_models(cfg):
        try:
            feature_check.check_cached(key, datasets=GROUPS["paper"], cache_dir=cfg.cache_dir, data_root=cfg.data_root)
        except FileNotFoundError as e:
            missing.append(str(e))
    if missing:
        raise FileNotFoundError("Cached image features are missing for Fig. 3 (docs/gpu_workflow.md):\n"
                                + "\n".join(missing))
    return list(models or fig3_models(cfg))


def fig3(cfg: Config, models=None, methods=METHODS) -> pd.DataFrame:
    """Fig. 3: mean AUROC over the 6 OOD sets per model and method (models sorted by ClusterMine).
    demo: SIMULATED models (``SIM_MODELS``: the demo with its clutter fitted to each model's zero-shot
    accuracy), NOT CLIP weights."""
    from ..simulate import SimConfig

    parts = []
    for name in models or fig3_models(cfg):
        if cfg.demo:
            sim = None if name == DEMO_MODEL else SimConfig.profile(name)
            bench, kind = open_benchmark(cfg, sim_config=sim), "simulated"
        else:
            bench, kind = open_benchmark(cfg, model=name, pretrained=None), "CLIP"
        t = with_means(Runner.from_config(bench, cfg).table(methods), OOD_SETS)
        t["model"], t["kind"] = name, kind
        parts.append(t)
        del bench
    out = pd.concat(parts, ignore_index=True)
    cm = out[(out.method == "ClusterMine") & (out.ood_set == "mean")].set_index("model")["auroc"]
    rank = {m: i for i, m in enumerate(cm.sort_values().index)}
    return out.assign(_r=out["model"].map(rank)).sort_values(["_r"], kind="stable").drop(columns="_r").reset_index(drop=True)


def fig3_reference(f3: pd.DataFrame) -> pd.DataFrame:
    """Mean AUROC per model and method; the paper's only tabulated point is ViT-H-14/dfn5b (Table 1)."""
    m = f3[f3.ood_set == "mean"][["model", "method", "ood_set", "auroc", "fpr95"]].reset_index(drop=True)
    ref = paper.table1().assign(model="ViT-H-14/dfn5b")
    return paper.compare(m, ref, on=("model", "method", "ood_set")).drop(columns="ood_set")
