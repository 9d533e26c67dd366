"""The simulated benchmark: a CLIP-like feature space built from real WordNet. SIMULATED, not CLIP.

No CLIP weights or ImageNet images can be had on the machines this project is tested on, so the
embedded default replaces them by a generative model whose *semantics* are real (WordNet 3.0's
hypernym graph, the real ImageNet-1K synsets and class names, real ImageNet-21K / plant / texture
concepts) and whose *geometry* is calibrated to published statistics of real CLIP features that
involve no OOD method (``scripts/calibrate_simulation.py``, ``docs/simulation.md``). Numbers it
produces say how methods behave on this model; they are not expected to match the paper's.

Generative model, version 6 (every random draw is seeded; ``SimConfig`` holds every constant):

1. Semantics (``semantic.SemanticSpace``): a random walk down WordNet gives each synset s a unit
   vector m(s) (parent weight λ), so concepts close in WordNet are close in the space.
2. Text features. A concept name n of synset s under a prompt set P of J templates is
   t(n) = normalize(√ρ_t · u_T + √(1-ρ_t) · normalize(m(s) + ν z_n + α u_P + β/√J z_{n,P})),
   u_T the text modality direction, z_n a name-specific perturbation (synonyms and homographs
   differ), u_P a prompt-set direction and noise that shrinks with the templates averaged (Fig. 8).
3. Class geometry (seeded per synset, so a class looks the same in every subset of classes):
   the visual direction w(s) = normalize(√a · m(s) + √(1-a) · r(s)), r(s) from a second walk over the
   same graph with a larger parent weight λ_v > λ: what no text describes, and through which sibling
   classes look more alike than their names do (dog breeds); 1..M visual modes
   c_{s,j} = normalize(w(s) + κ ζ_{s,j}) (ζ half random, half a WordNet neighbour's vector) with
   Dirichlet(1) weights (a polymorphic class has several); and P_s, r_p class-specific unit directions
   of pose / shape variation (anisotropic, and a different covariance per class).
4. Image features. An image of class s is
   x = normalize(√ρ_i · u_I + √(1-ρ_i) · normalize(h)),
   h = √σ_s · c_{s,j} + τ · (√π · P_s u/√r_p + √b · N (√v ⊙ z) + √e · ξ) + ω · m(o),
   u ~ N(0, I_{r_p}), z ~ N(0, I_R), ξ ~ N(0, I/D): class signal (σ_s = 1 on clean images), pose
   (variance π), *shared nuisance* (variance b) along R directions N common to all classes and OOD
   concepts (backgrounds, lighting, viewpoint, photo style: each half the vector of a background /
   scene concept of WordNet, half a direction no word describes) with variances v_r ∝ r^-δ, and
   isotropic noise (variance e). τ = √((d-2)/χ²_d) (E τ² = 1) makes the non-class part heavy-tailed
   (Student-t with d degrees of freedom; d = 0: τ = 1): most images show their class clearly, a few
   are dominated by clutter. ω ~ U(0, γ) mixes in a random co-occurring noun o. u_I, u_T span the
   two last axes, orthogonal to all content, at cosine μ to each other (CLIP's modality gap).
5. Covariate shifts move images along the nuisance: a set with severity s ∈ [0, 1) keeps the classes,
   scales the class signal by (1 - s) and the nuisance by (1 + 2 s) and adds its style with weight s
   (ImageNetV2: none; ImageNet-Sketch: sketch; ImageNet-R: cartoon, painting, sculpture, origami,
   tattoo, toy; ImageNet-A: the direction from the class to a WordNet sibling (m(sib) - m(s)), i.e.
   towards a confuser; ImageNet-C: one of 15 corruption directions at
   a random strength). s per set is fitted to CLIP's published zero-shot drop on that set, so every
   shifted set is harder than the clean test set.
6. Sets. ID = a seeded subset of the real ImageNet-1K synsets (Y_GT = open_clip's class names).
   Semantic OOD sets at controlled WordNet distance (concepts never ID classes, nor their ancestors
   or descendants), named after the paper's sets they stand for (``semantic.ood_pools``); their
   images come from the same model (same nuisance), with their own class geometry.

What it cannot represent is listed in docs/simulation.md.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F

from .benchmark import Benchmark, FeatureSet
from .corpus import DEFAULT_PREPROCESS, clean, load_corpus
from .prompts import DEFAULT_PROMPTS, get_prompts
from .semantic import (SCENE_ID_SHARE, Embedded, SemanticSpace, _wnid_subset, hash_int, imagenet_classnames,
                       imagenet_synsets, ood_pools, semantic_space)

__all__ = ["SIM_VERSION", "SimConfig", "Simulator", "make_benchmark", "imagenet_synsets",
           "imagenet_classnames", "SemanticSpace", "id_sets"]

SIM_VERSION = 6
STYLES = {
    "ImageNet-Sketch": ["sketch.n.01"],
    "ImageNet-R": ["cartoon.n.01", "painting.n.01", "sculpture.n.01", "origami.n.01", "tattoo.n.02", "toy.n.02"],
}
SHIFTED = ("ImageNet-Sketch", "ImageNet-R", "ImageNet-A", "ImageNetV2", "ImageNet-C")
SUBSET_200 = ("ImageNet-R", "ImageNet-A")  # published on 200 of the 1000 classes
# backgrounds, places, materials, light: half of each shared nuisance direction is one of these
NUISANCE_ROOTS = ("room.n.01", "building.n.01", "geological_formation.n.01", "tract.n.01",
                  "body_of_water.n.01", "vegetation.n.01", "material.n.01", "light.n.02",
                  "weather.n.01", "furniture.n.01")


# Fig. 3 stand-ins: clutter (pose, nuisance, noise variances) x factor, each factor fitted by bisection
# to that model's 1000-way ImageNet zero-shot top-1 (scripts/calibrate_simulation.py profiles):
# B/16 openai 0.683, L/14 openai 0.755, H/14 laion2b 0.780, L/14 DataComp 0.792; the demo is dfn5b (0.834).
MODEL_CLUTTER = {"clip-b16-openai": 1.993, "clip-l14-openai": 1.501, "clip-h14-laion2b": 1.337,
                 "clip-l14-datacomp": 1.255}


@dataclass(frozen=True)
class SimConfig:
    """All constants of the generative model (module docstring). Frozen after calibration.

    Variances (pose, nuisance, noise) are relative to the class signal's (1): the image is normalised,
    so only ratios matter.
    """

    n_classes: int = 200
    train_per_class: int = 64
    test_per_class: int = 10
    ood_size: int = 1000
    shifted_size: int = 1000
    dim: int = 256
    lam: float = 0.893  # λ: parent weight of the semantic walk
    lam_visual: float = 0.962  # λ_v: parent weight of the walk of what text does not describe
    align: float = 0.625  # a: share of a class's visual direction that its text describes
    rho_text: float = 0.375  # text modality share
    rho_image: float = 0.424  # image modality share
    visual_dims: int = 64  # V: axes no text reaches (r(s), part of the nuisance)
    modality_cos: float = 0.164  # cos(u_I, u_T): images and texts are not opposite cones in CLIP
    name_noise: float = 0.3  # ν
    prompt_shift: float = 0.1  # α
    prompt_noise: float = 0.6  # β
    modes: int = 4  # M: at most this many visual modes per class (1..M, seeded)
    mode_spread: float = 0.5  # κ
    pose: float = 0.202  # π: class-specific anisotropic variance
    pose_rank: int = 6  # r_p
    nuisance: float = 1.032  # b: shared nuisance variance
    nuisance_rank: int = 24  # R
    nuisance_decay: float = 1.0  # δ
    nuisance_text: float = 0.325  # share of each nuisance direction that is a background concept's m(s)
    noise: float = 3.457  # e: isotropic variance
    tail: int = 3  # d: Student-t degrees of freedom of the per-image clutter scale (0: Gaussian)
    context: float = 0.5  # γ: max weight of a co-occurring concept in an image
    logit_scale: float = 100.0
    shift_v2: float = 0.124  # severities of the covariate shifts (fitted to CLIP's zero-shot drops)
    shift_sketch: float = 0.134
    shift_r: float = 0.134
    shift_a: float = 0.099
    shift_c: float = 0.134

    @classmethod
    def profile(cls, name: str) -> "SimConfig":
        """Named configurations: 'demo' (the notebooks'; stands for ViT-H-14 dfn5b, the paper's model),
        'tiny' (tests), 'imagenet-1k' (all 1000 classes, test images only), and the Fig. 3 stand-ins
        for weaker CLIPs in ``MODEL_CLUTTER`` (the demo with its clutter variances scaled)."""
        if name in ("demo", "clip-h14-dfn5b"):
            return cls()
        if name == "tiny":
            return cls(n_classes=20, train_per_class=24, test_per_class=10, ood_size=120, shifted_size=120, dim=128,
                       visual_dims=32)
        if name == "imagenet-1k":
            return cls(n_classes=1000, train_per_class=0, test_per_class=10, shifted_size=10_000)
        if name in MODEL_CLUTTER:
            d, f = cls(), MODEL_CLUTTER[name]
            return cls(pose=d.pose * f, nuisance=d.nuisance * f, noise=d.noise * f)
        raise ValueError(f"Unknown simulated profile {name!r}; choose one of "
                         f"{['demo', 'tiny', 'imagenet-1k', 'clip-h14-dfn5b', *MODEL_CLUTTER]}.")

    @classmethod
    def from_dict(cls, d: dict) -> "SimConfig":
        """Inverse of ``asdict`` (a benchmark's ``meta['config']``); unknown keys are an error."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"Not SimConfig fields: {unknown} (a benchmark of another SIM_VERSION?)")
        return cls(**d)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1)


def _hashed_noise(keys: list[str], table: torch.Tensor) -> torch.Tensor:
    """A deterministic N(0, I/D)-like vector per key, from two rows of a seeded table."""
    h = torch.tensor([hash_int(k) for k in keys], dtype=torch.int64)
    n = table.shape[0]
    return (table[h % n] + table[(h // n) % n]) / math.sqrt(2)


@dataclass
class Geometry:
    """Class geometry of K concepts: mode centres (K, M, D), mode weights (K, M), pose (K, r_p, D)."""

    centres: torch.Tensor
    weights: torch.Tensor
    pose: torch.Tensor


class Simulator:
    """Builds text and image features of the simulated CLIP (see module docstring).

    Axes of the D-dim space: [0, S) the text-visible block (semantic vectors m(s) and all text
    content live only here), [S, D-2) the visual-only block (r(s) and part of the nuisance: what no
    text describes), D-2 and D-1 the modality offsets; S = D - 2 - ``visual_dims``.
    """

    def __init__(self, config: SimConfig, seed: int = 0):
        self.cfg, self.seed = config, seed
        c = config
        d, v = c.dim, c.visual_dims
        if not 0 <= v < d - 3:
            raise ValueError(f"visual_dims={v} must be in [0, dim - 3 = {d - 3}).")
        self.text_dims = d - 2 - v
        self.space = Embedded(semantic_space(self.text_dims + 2, c.lam, seed), 0, self.text_dims, d, full=True)
        self.visual = Embedded(semantic_space(v + 2, c.lam_visual, seed + 7919), self.text_dims, v, d,
                                full=False) if v else None
        gen = torch.Generator().manual_seed(seed + 1)
        eye = torch.eye(d)
        self.u_text = eye[d - 2]
        self.u_image = c.modality_cos * eye[d - 2] + math.sqrt(1 - c.modality_cos**2) * eye[d - 1]
        self.noise_table = self.semantic_noise(1 << 16, gen, block="text")
        self.nuisance_dirs, self.nuisance_var = self._nuisance(torch.Generator().manual_seed(seed + 5))

    def semantic_noise(self, n: int, gen: torch.Generator, block: str = "all") -> torch.Tensor:
        """(n, D) isotropic noise of norm ≈ 1 in the content axes (``block``: 'all', 'text' or
        'visual'), zero in the modality axes."""
        lo, hi = {"all": (0, self.cfg.dim - 2), "text": (0, self.text_dims),
                  "visual": (self.text_dims, self.cfg.dim - 2)}[block]
        out = torch.zeros(n, self.cfg.dim)
        out[:, lo:hi] = torch.randn(n, hi - lo, generator=gen) / math.sqrt(max(1, hi - lo))
        return out

    def _nuisance(self, gen: torch.Generator):
        """R shared nuisance directions (R, D) and their variances (R,), summing to 1."""
        c = self.cfg
        wn = self.space.wn
        pool = set()
        for root in NUISANCE_ROOTS:
            pool.update(d.name() for d in wn.synset(root).closure(lambda x: x.hyponyms()))
        pool = sorted(pool & self.space.index.keys())
        pick = [pool[i] for i in torch.randperm(len(pool), generator=gen)[: c.nuisance_rank].tolist()]
        hidden = _unit(self.semantic_noise(len(pick), gen, block="visual" if c.visual_dims else "all"))
        dirs = _unit(math.sqrt(c.nuisance_text) * self.space.m[self.space.rows(pick)]
                     + math.sqrt(1 - c.nuisance_text) * hidden)
        var = torch.arange(1, len(pick) + 1, dtype=torch.float32) ** -c.nuisance_decay
        return dirs, var / var.sum()

    # --- text
    def semantic(self, names: list[str], synsets: list[str]) -> torch.Tensor:
        """m(s) per concept; names without a known synset use their first WordNet sense or noise."""
        wn, idx = self.space.wn, self.space.index
        rows = []
        for n, s in zip(names, synsets):
            if s not in idx:
                cands = [c.name() for c in wn.synsets(n.replace(" ", "_")) if c.name() in idx]
                s = cands[0] if cands else ""
            rows.append(idx.get(s, -1))
        rows_t = torch.tensor(rows, dtype=torch.long)
        out = self.space.m[rows_t.clamp(min=0)].clone()
        unknown = (rows_t < 0).nonzero().flatten()
        if len(unknown):
            out[unknown] = _unit(_hashed_noise([f"unk:{names[i]}" for i in unknown.tolist()], self.noise_table))
        return out

    def text_features(self, names: list[str], synsets: list[str], prompts: str = DEFAULT_PROMPTS) -> torch.Tensor:
        """t(n) for each concept name under a prompt set, (K, D) unit rows."""
        c = self.cfg
        n_templates = len(get_prompts(prompts))
        u_p = _unit(_hashed_noise([f"prompt:{prompts}"], self.noise_table))[0]
        sem = self.semantic(names, synsets)
        keys = [clean(n) for n in names]  # CLIP's tokenizer lower-cases: "Saluki" = "saluki"
        z_name = _hashed_noise([f"name:{k}" for k in keys], self.noise_table)
        z_prompt = _hashed_noise([f"prompt:{prompts}:{k}" for k in keys], self.noise_table)
        content = _unit(sem + c.name_noise * z_name + c.prompt_shift * u_p
                        + c.prompt_noise / math.sqrt(n_templates) * z_prompt)
        return _unit(math.sqrt(c.rho_text) * self.u_text + math.sqrt(1 - c.rho_text) * content)

    # --- images
    def geometry(self, synsets: list[str], keys: list[str] | None = None) -> Geometry:
        """Class geometry of each synset; ``keys`` seed it (default: the synset), so one class gets
        the same geometry in every subset of classes."""
        c = self.cfg
        wn, index = self.space.wn, self.space.index
        keys = synsets if keys is None else keys
        centres = torch.zeros(len(synsets), c.modes, c.dim)
        weights = torch.zeros(len(synsets), c.modes)
        pose = torch.zeros(len(synsets), c.pose_rank, c.dim)
        for k, (s, key) in enumerate(zip(synsets, keys)):
            gen = torch.Generator().manual_seed(hash_int(f"{self.seed}:class:{key}") % (1 << 62))
            hidden = self.visual.vector(s) if self.visual is not None else 0.0
            base = _unit(math.sqrt(c.align) * self.space.vector(s) + math.sqrt(1 - c.align) * hidden)
            syn = wn.synset(s)
            # sorted: nltk keeps pointers in a set, whose order changes with Python's hash seed
            neigh = sorted({n.name() for n in syn.hyponyms() + syn.hypernyms()} & index.keys())
            n_modes = 1 + int(torch.randint(c.modes, (1,), generator=gen))
            for j in range(n_modes):
                zeta = _unit(self.semantic_noise(1, gen)[0])
                if neigh:
                    zeta = _unit(zeta + self.space.vector(neigh[int(torch.randint(len(neigh), (1,), generator=gen))]))
                centres[k, j] = _unit(base + c.mode_spread * zeta)
            w = -torch.rand(n_modes, generator=gen).clamp_min(1e-12).log()  # Dirichlet(1)
            weights[k, :n_modes] = w / w.sum()
            pose[k] = _unit(self.semantic_noise(c.pose_rank, gen))
        return Geometry(centres, weights, pose)

    def images(self, geo: Geometry, labels: torch.Tensor, gen: torch.Generator, signal: float = 1.0,
               nuisance_scale: float = 1.0, style: torch.Tensor | None = None,
               style_weight: torch.Tensor | float = 0.0, chunk: int = 8192) -> torch.Tensor:
        """Images of the concepts ``labels`` (indices into ``geo``), (n, D) unit rows.

        signal scales the class signal's amplitude, nuisance_scale the shared nuisance's; ``style``
        (n, D) unit rows are added with ``style_weight`` times the content's typical norm.
        """
        c = self.cfg
        n = len(labels)
        mode = torch.multinomial(geo.weights[labels], 1, generator=gen).squeeze(1)
        u = torch.randn(n, c.pose_rank, generator=gen)
        z = torch.randn(n, len(self.nuisance_var), generator=gen) * self.nuisance_var.sqrt()
        xi = self.semantic_noise(n, gen)
        if c.tail:
            chi2 = torch.randn(n, c.tail, generator=gen).pow(2).sum(1, keepdim=True)
            tau = ((c.tail - 2) / chi2).sqrt() if c.tail > 2 else (1.0 / chi2).sqrt()
        else:
            tau = torch.ones(n, 1)
        ctx = self.space.m[torch.randint(self.space.n_nouns, (n,), generator=gen)]
        omega = c.context * torch.rand(n, 1, generator=gen)
        pose = torch.empty(n, c.dim)
        order = labels.argsort(stable=True)
        classes, counts = labels[order].unique_consecutive(return_counts=True)
        for k, rows in zip(classes.tolist(), order.split(counts.tolist())):  # one small matmul per class
            pose[rows] = u[rows] @ geo.pose[k]
        pose /= math.sqrt(c.pose_rank)
        out = torch.empty(n, c.dim)
        for s in range(0, n, chunk):
            sl = slice(s, s + chunk)
            lab = labels[sl]
            clutter = (math.sqrt(c.pose) * pose[sl] + math.sqrt(c.nuisance) * nuisance_scale * (z[sl] @ self.nuisance_dirs)
                       + math.sqrt(c.noise) * xi[sl])
            h = signal * geo.centres[lab, mode[sl]] + tau[sl] * clutter + omega[sl] * ctx[sl]
            if style is not None:
                typical = math.sqrt(1 + c.pose + c.nuisance * nuisance_scale**2 + c.noise)
                w = style_weight[sl] if torch.is_tensor(style_weight) else style_weight
                h = h + typical * w * style[sl]
            out[sl] = _unit(math.sqrt(c.rho_image) * self.u_image + math.sqrt(1 - c.rho_image) * _unit(h))
        return out


# ----------------------------------------------------------------------------- ID and shifted sets
def _pick_classes(cfg: SimConfig, seed: int) -> list[int]:
    gen = torch.Generator().manual_seed(seed + 2)
    if cfg.n_classes >= 1000:
        return list(range(1000))
    return torch.randperm(1000, generator=gen)[: cfg.n_classes].sort().values.tolist()


def id_sets(sim: Simulator, seed: int = 0, shifted: bool = True) -> dict:
    """The ID part of a benchmark: class ids/names/synsets, class geometry, train / test / shifted
    image sets (``FeatureSet``). No corpus, no OOD set: what the calibration statistics read."""
    cfg = sim.cfg
    pick = _pick_classes(cfg, seed)
    all_ids, all_names = imagenet_synsets(), imagenet_classnames()
    id_syn, names = [all_ids[i] for i in pick], [all_names[i] for i in pick]
    geo = sim.geometry(id_syn)
    k = len(id_syn)

    def split(per_class: int, s: int, name: str) -> FeatureSet:
        y = torch.arange(k).repeat_interleave(per_class)
        return FeatureSet(name, sim.images(geo, y, torch.Generator().manual_seed(seed + s)) if len(y) else
                          torch.zeros(0, cfg.dim), y)

    out = dict(class_synsets=id_syn, class_names=names, geometry=geo,
               train=split(cfg.train_per_class, 3, "train"), test=split(cfg.test_per_class, 4, "ImageNet"))
    out["shifted"] = _shifted_sets(sim, seed, id_syn, geo) if shifted else {}
    return out


def _shifted_sets(sim: Simulator, seed: int, id_syn: list[str], geo: Geometry, names=SHIFTED) -> dict:
    cfg = sim.cfg
    wn = sim.space.wn
    n_cls = len(id_syn)
    r_classes = _wnid_subset("imagenet_r_synsets.txt")
    sub200 = [c for c in range(n_cls) if id_syn[c] in r_classes] or list(range(n_cls))
    severity = {"ImageNet-Sketch": cfg.shift_sketch, "ImageNet-R": cfg.shift_r, "ImageNet-A": cfg.shift_a,
                "ImageNetV2": cfg.shift_v2, "ImageNet-C": cfg.shift_c}
    out = {}
    for k, name in enumerate(SHIFTED):
        if name not in names:
            continue
        g = torch.Generator().manual_seed(seed + 200 + k)
        classes = sub200 if name in SUBSET_200 else list(range(n_cls))
        per = max(1, cfg.shifted_size // len(classes))
        y = torch.tensor(classes).repeat_interleave(per)
        n, s = len(y), severity[name]
        style, weight = None, s
        if name in STYLES:
            styles = torch.stack([_unit(sim.space.vector(x) + 0.5 * _unit(sim.semantic_noise(1, g)[0]))
                                  for x in STYLES[name]])
            style = styles[torch.randint(len(styles), (n,), generator=g)]
        elif name == "ImageNet-A":  # adversarially filtered: drift from the class towards a WordNet sibling
            sib = []
            for c in classes:
                syn = wn.synset(id_syn[c])
                cands = sorted({d.name() for a in syn.hypernyms() for d in a.hyponyms()} - {syn.name()})
                cands = [x for x in cands if x in sim.space.index] or [syn.name()]
                other = sim.space.vector(cands[int(torch.randint(len(cands), (1,), generator=g))])
                sib.append(_unit(other - sim.space.vector(syn.name())) if cands != [syn.name()] else other)
            style = torch.stack(sib).repeat_interleave(per, 0)
        elif name == "ImageNet-C":  # 15 corruption types, a random strength each image (5 severities)
            corr = _unit(sim.semantic_noise(15, g))
            style = corr[torch.randint(15, (n,), generator=g)]
            weight = s * (torch.randint(1, 6, (n, 1), generator=g).float() / 3.0)
        x = sim.images(geo, y, g, signal=1.0 - s, nuisance_scale=1.0 + 2.0 * s, style=style, style_weight=weight)
        out[name] = FeatureSet(name, x, y)
    return out


# ----------------------------------------------------------------------------- the benchmark
def make_benchmark(size: str = "demo", seed: int = 0, corpus: str = "wordnet-na",
                   preprocess: str = DEFAULT_PREPROCESS, prompts: str = DEFAULT_PROMPTS,
                   config: SimConfig | None = None, cache: bool = True) -> Benchmark:
    """The SIMULATED benchmark (module docstring) as a ``Benchmark``; deterministic for a seed.

    Cached under ``.cache/simulated`` keyed by every input, so notebooks load it in a second. A cache
    file that is truncated or was built from other inputs is rebuilt (with a warning).
    """
    cfg = config or SimConfig.profile(size)
    key = dict(size=size, seed=seed, corpus=corpus, preprocess=preprocess, prompts=prompts,
               version=SIM_VERSION, **asdict(cfg))
    from . import simcache

    path = simcache.cache_file(key) if cache else None
    if path is not None and path.exists():
        bench = simcache.load(path, key)
        if bench is not None:
            return bench
    bench = _build(cfg, size, seed, corpus, preprocess, prompts)
    if path is not None:
        simcache.save(bench, path, key)
    return bench


def _build(cfg: SimConfig, size, seed, corpus_name, preprocess, prompts) -> Benchmark:
    from .corpus import in21k_synsets

    sim = Simulator(cfg, seed)
    wn = sim.space.wn
    ids = id_sets(sim, seed)
    id_syn, class_names = ids["class_synsets"], ids["class_names"]
    corpus = load_corpus(corpus_name, preprocess)
    corpus_text = sim.text_features(list(corpus.names), list(corpus.synsets), prompts)
    class_text = sim.text_features(class_names, id_syn, prompts)

    in21k = {s.name() for s in in21k_synsets()}
    pools = ood_pools(wn, id_syn, in21k)
    ood = {}
    for k, (name, pool) in enumerate(pools.items()):
        g = torch.Generator().manual_seed(seed + 100 + k)
        n_concepts = min(len(pool), max(8, cfg.ood_size // 16))
        chosen = [pool[i] for i in torch.randperm(len(pool), generator=g)[:n_concepts].tolist()]
        geo = sim.geometry(chosen, [f"ood:{s}" for s in chosen])
        if name in SCENE_ID_SHARE:  # scenes that also show an ID object (Places overlaps ImageNet)
            for j in range(n_concepts):
                if torch.rand(1, generator=g).item() < SCENE_ID_SHARE[name]:
                    mix = sim.space.vector(id_syn[int(torch.randint(len(id_syn), (1,), generator=g))])
                    geo.centres[j] = _unit(geo.centres[j] + 0.8 * mix) * (geo.weights[j] > 0)[:, None]
        y = torch.arange(n_concepts).repeat_interleave(cfg.ood_size // n_concepts)
        y = torch.cat([y, torch.arange(cfg.ood_size - len(y))]).sort().values
        ood[name] = FeatureSet(name, sim.images(geo, y, g), torch.full((cfg.ood_size,), -1, dtype=torch.long))

    meta = dict(simulated=True, size=size, seed=seed, prompts=prompts, preprocess=preprocess,
                config=asdict(cfg), version=SIM_VERSION, ood_concepts={k: len(v) for k, v in pools.items()})
    return Benchmark(
        name=f"simulated-{size}", simulated=True, train=ids["train"], test=ids["test"], ood=ood,
        shifted=ids["shifted"], class_names=class_names, class_text=class_text, class_synsets=id_syn,
        corpus=corpus, corpus_text=corpus_text, logit_scale=cfg.logit_scale, meta=meta)
