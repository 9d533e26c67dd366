"""clustermine_lib: label-free visual OOD detection by concept mining from text corpora (ClusterMine, WACV).

The README's "Layout" table lists every module; notebooks call ``artifacts/<notebook>.py``, which calls
the library (``mining``, ``scoring``, ``dense``, ``clustering``, ``metrics``, ...).

Reproducibility across CPUs: MKL picks other kernels on other processors (Intel vs AMD), and TEMI
amplifies the last-bit differences of a matrix multiply into other clusters (the committed demo outputs,
made on an Intel Xeon, did not reproduce on an AMD EPYC: ClusterMine's mean AUROC 89.96 vs 89.72, the
same code). ``MKL_CBWR=AVX2`` (MKL's conditional numerical reproducibility) selects one code path on
every AVX2 processor; it is set here, before torch first calls MKL, unless the environment sets it.
"""
import os as _os

_os.environ.setdefault("MKL_CBWR", "AVX2")

__version__ = "0.1.0"
