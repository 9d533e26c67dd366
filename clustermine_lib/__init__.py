"""clustermine_lib: label-free visual OOD detection by concept mining from text corpora (ClusterMine, WACV).

The README's "Layout" table lists every module; notebooks call ``artifacts/<notebook>.py``, which calls
the library (``mining``, ``scoring``, ``dense``, ``clustering``, ``metrics``, ...).

Reproducibility across CPUs: MKL and ATen pick other kernels on other processors (Intel vs AMD, AVX-512
vs AVX2), and TEMI amplifies the last-bit differences of a matrix multiply into other clusters.
``MKL_CBWR=AVX2`` (MKL's conditional numerical reproducibility) is set here, before torch first calls MKL,
unless the environment sets it; it is not enough. Measured 2026-12-02 on an Intel Xeon (AVX-512): the
simulated benchmark's files are byte-identical with ATen's AVX-512 and AVX2 kernels
(``ATEN_CPU_CAPABILITY=avx2``), but ClusterMine's Table 5 SSB-hard AUROC is 88.81 and 88.42 with them,
against 90.02 on an AMD EPYC; MaxLogit moves in the 5th digit. The demo's numbers are therefore the same
on every run on one CPU model; the README names the CPU the committed notebook outputs come from.
"""
import os as _os

_os.environ.setdefault("MKL_CBWR", "AVX2")

__version__ = "0.1.0"
