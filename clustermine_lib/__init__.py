"""clustermine_lib: label-free visual OOD detection by concept mining from text corpora (ClusterMine, WACV).

Modules: ``corpus`` (Y_corpus), ``prompts``, ``simulate`` (the SIMULATED CPU benchmark), ``features``
(real CLIP features), ``clustering`` (TEMI), ``mining`` (PosMine, ClusterMine), ``scoring`` (Eq. 1 and
baselines), ``metrics`` (AUROC, FPR95), ``analysis`` (label and cluster quality), ``detector``.
"""
__version__ = "0.1.0"
