"""One module per notebook, named after it: the code behind each table and figure of the paper.

``notebooks/01_table1_main_results.ipynb`` calls ``artifacts/table1_main_results.py``, and so on; each
function takes a ``runner.Runner`` (or a ``notebook.Config`` when the artifact varies the benchmark
itself) and returns a tidy DataFrame in the long format of ``tables.COLUMNS``. The comparison with the
paper's numbers is ``paper.compare``; plots are in ``plots``.

``demo_variants`` lists every simulated benchmark the demo notebooks load and ``demo_clusterings`` every
TEMI clustering they use, so ``make data`` can build them once (the demo's ``make features`` and
clustering run).
"""
from __future__ import annotations


def demo_variants(cfg) -> list[dict]:
    """``notebook.open_benchmark`` keyword sets of every simulated benchmark the demo notebooks load: the
    default, the corpora of Table 3, the pre-processings of Table 6, the prompt sets of Fig. 8 and the
    simulated models of Fig. 3."""
    from ..corpus import DEFAULT_PREPROCESS
    from ..simulate import SimConfig
    from .corpora_table3 import CORPORA
    from .model_scaling_fig3 import DEMO_MODEL, SIM_MODELS
    from .prompts_fig8 import PROMPT_NAMES
    from .text_preprocessing_table6 import VARIANTS

    out = [{}]
    out += [dict(corpus=c) for c in CORPORA if c != cfg.corpus]
    out += [dict(preprocess=v) for v in VARIANTS if v != DEFAULT_PREPROCESS]
    out += [dict(prompts=p) for p in PROMPT_NAMES if p != cfg.prompts]
    out += [dict(sim_config=SimConfig.profile(m)) for m in SIM_MODELS if m != DEMO_MODEL]
    return out


def demo_clusterings(cfg) -> list[tuple[dict, int]]:
    """``(open_benchmark keywords, C)`` of every TEMI clustering the demo notebooks run: the sweep of Fig. 6 /
    Fig. 7 (which holds the default C), Table 4's C = 1.2 x the classes, and Fig. 3's simulated models at
    the default C. The images, hence the clusters, do not depend on the corpus, prompts or pre-processing."""
    from ..experiments import C_PER_CLASS
    from ..simulate import SimConfig
    from .equal_size_positives_table4 import C_SMALL_PER_CLASS
    from .model_scaling_fig3 import DEMO_MODEL, SIM_MODELS

    n_classes = SimConfig.profile("demo").n_classes
    default_c = C_PER_CLASS * n_classes
    sweep = sorted(set(cfg.sweep("c_values")) | {default_c, round(C_SMALL_PER_CLASS * n_classes)})
    return [({}, c) for c in sweep] + [(dict(sim_config=SimConfig.profile(m)), default_c)
                                       for m in SIM_MODELS if m != DEMO_MODEL]
