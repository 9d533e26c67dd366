"""One-off calibration of the simulated benchmark (kept for the record; not run by make).

Two constants of ``SimConfig`` were chosen here, each against a target that involves no OOD method
but the MCM baseline: the per-image noise η by the same-class / other-class cosine of the centred
image features (CLIP image features of one class are tight), then the image-text alignment a by
MCM's mean AUROC over the six OOD sets with the true class names (target ≈ 90, real CLIP ViT-H:
92.46). Nothing else is looked at, so no method is favoured.

    .venv/bin/python scripts/calibrate_simulation.py [eta,align,context ...]

Record (demo profile, seed 0; per set = NINCO IN-O OpenImage-O iNat IN-OOD Textures43):
1. An isotropic-noise-only model (η = 0.88) reached MCM 91.5 but its images did not cluster
   (k-means ARI 0.04), unlike CLIP's; η was set to 0.5 (same-class cosine ≈ 0.3 of centred features).
2. Difficulty from random co-occurring concepts (γ up to 1.4) was rejected as unrealistic: with γ
   that large most images are mostly "another object" (top-1 = context), not ImageNet-like.
3. Final knob: the WordNet walk's λ (how alike related concepts are), with η = 0.5, a = 0.5, γ = 0.5:
       λ=0.90: 96.55    λ=0.94: 92.16 (frozen; real CLIP ViT-H: 92.46)    λ=0.95: 89.98
   (λ=0.94 gives 92.36 since Y_GT names are encoded case-insensitively, as CLIP's tokenizer does.)
"""
import sys
from dataclasses import replace

import torch

from clustermine_lib import metrics, scoring
from clustermine_lib.benchmark import OOD_SETS
from clustermine_lib.simulate import SimConfig, make_benchmark


def class_cosines(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    x = torch.nn.functional.normalize(x - x.mean(0), dim=1)
    sim = x @ x.T
    same = y[:, None] == y[None, :]
    same.fill_diagonal_(False)
    other = y[:, None] != y[None, :]
    return sim[same].mean().item(), sim[other].mean().item()


if __name__ == "__main__":
    grid = [tuple(map(float, p.split(","))) for p in sys.argv[1:]] or [(0.5, 0.5, 0.5, lam) for lam in (0.9, 0.94, 0.95)]
    for eta, align, context, lam in grid:
        cfg = replace(SimConfig.profile("demo"), noise=eta, align=align, context=context, lam=lam)
        b = make_benchmark("demo", config=cfg, cache=False)
        same, other = class_cosines(b.test.features, b.test.labels)
        s_id = scoring.mcm_score(b.test.features, b.class_text)
        aur = [metrics.evaluate(s_id, scoring.mcm_score(b.ood[n].features, b.class_text))["auroc"] for n in OOD_SETS]
        print(f"eta={eta:.2f} align={align:.2f} context={context:.2f} lam={lam:.2f}  same-class cos {same:.2f} other {other:.2f}  "
              f"MCM mean AUROC {sum(aur) / 6:.2f}  per set " + " ".join(f"{a:.1f}" for a in aur), flush=True)
