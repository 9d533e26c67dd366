"""One module per notebook, named after it: the code behind each table and figure of the paper.

``notebooks/01_table1_main_results.ipynb`` calls ``artifacts/table1_main_results.py``, and so on; each
function takes a ``runner.Runner`` (or a ``notebook.Config`` when the artifact varies the benchmark
itself) and returns a tidy DataFrame in the long format of ``tables.COLUMNS``. The comparison with the
paper's numbers is ``paper.compare``; plots are in ``plots``.

``demo_variants`` lists every simulated benchmark the demo notebooks load, so ``make data`` can build
them once (the demo's ``make features``).
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
