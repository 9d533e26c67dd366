"""WordNet for the simulated benchmark: the synset graph, seeded semantic vectors over it, and the
ImageNet / OOD concept pools. SIMULATED geometry on REAL semantics (see ``simulate``).

``SemanticSpace(dim, lam, seed)``: one vector per noun/adjective synset of WordNet 3.0, from a random
walk down the hypernym graph, v(s) = λ · mean_{p ∈ parents(s)} v(p) + g_s, g_s ~ N(0, I)
(parents = hypernyms and instance hypernyms; a head adjective's parents are its attribute nouns, a
satellite adjective's parent is its head), m(s) = v(s)/|v(s)|. For deep synsets
cos(m(s), m(sibling)) ≈ λ², cousins ≈ λ⁴ …: concepts close in WordNet are close in the space.
The walk runs level by level (a synset's level is one more than its deepest parent's), one sparse
product per level, so a space of 100K synsets takes well under a second.
"""
from __future__ import annotations

import hashlib
import math

import numpy as np
import torch
import torch.nn.functional as F

from .fileio import atomic_write

DTD_TEXTURES = (
    "banded blotchy braided bubbly bumpy chequered cobwebbed cracked crosshatched crystalline dotted "
    "fibrous flecked freckled frilly gauzy grid grooved honeycombed interlaced knitted lacelike lined "
    "marbled matted meshed paisley perforated pitted pleated polka-dotted porous potholed scaly smeared "
    "spiralled sprinkled stained stratified striped studded swirly veined waffled woven wrinkled zigzagged"
).split()
GRAPH_FILE = "wordnet-graph-v2.json"


def hash_int(text: str) -> int:
    """A 56-bit hash of ``text`` that, unlike ``hash()``, does not change with PYTHONHASHSEED."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=7).digest(), "little")


def wordnet_graph() -> dict:
    """Noun + adjective synsets of WordNet with their parents, in a topological order.

    Parents: hypernyms and instance hypernyms (nouns), the head (satellite adjectives), the attribute
    nouns (head adjectives). Read once (~15 s) and cached as JSON under the project cache.
    """
    import json

    from .wordnet import cache_dir, wordnet

    path = cache_dir() / "simulated" / GRAPH_FILE
    if path.exists():
        try:
            return json.loads(path.read_text())
        except ValueError:  # a truncated file from an older, non-atomic writer: rebuild it
            pass
    wn = wordnet()
    synsets = list(wn.all_synsets("n")) + list(wn.all_synsets("a"))
    index = {x.name(): i for i, x in enumerate(synsets)}

    def parents(x):
        ps = (x.hypernyms() + x.instance_hypernyms() if x.pos() == "n"
              else x.similar_tos() if x.pos() == "s" else x.attributes())
        return sorted(index[p.name()] for p in ps if p.name() in index)  # nltk's order is hash-seeded

    par = [parents(x) for x in synsets]
    order, state = [], [0] * len(synsets)  # 0 new, 1 on the stack, 2 done
    for root in range(len(synsets)):
        if state[root]:
            continue
        stack = [(root, iter(par[root]))]
        state[root] = 1
        while stack:
            node, it = stack[-1]
            nxt = next((p for p in it if state[p] == 0), None)
            if nxt is None:
                stack.pop()
                state[node] = 2
                order.append(node)
            else:
                state[nxt] = 1
                stack.append((nxt, iter(par[nxt])))
        # parents still on the stack (a cycle) are simply ignored by the walk below
    graph = {"names": [x.name() for x in synsets], "pos": [x.pos() for x in synsets], "parents": par,
             "order": order}
    atomic_write(path, json.dumps(graph))
    return graph


class SemanticSpace:
    """m(s) for every noun/adjective synset of WordNet, in a fixed order (seeded; module docstring).

    ``m`` is (S, dim) float32 with the last two columns zero: they carry the modality offsets.
    """

    def __init__(self, dim: int, lam: float, seed: int):
        from scipy import sparse

        graph = wordnet_graph()
        self.names = graph["names"]
        self.index = {n: i for i, n in enumerate(self.names)}
        self.n_nouns = sum(1 for p in graph["pos"] if p == "n")
        n = len(self.names)
        gen = torch.Generator().manual_seed(seed)
        g = torch.randn(n, dim - 2, generator=gen, dtype=torch.float64).numpy()
        # parents that come before a synset in the order (a parent on a cycle is ignored)
        done = np.zeros(n, dtype=bool)
        level = np.zeros(n, dtype=np.int64)
        rows, cols = [], []
        parents = graph["parents"]
        for i in graph["order"]:
            if done[i]:  # graphs cached by an older writer list a few synsets twice
                continue
            ps = [p for p in parents[i] if done[p]]
            if ps:
                level[i] = 1 + max(level[p] for p in ps)
                rows += [i] * len(ps)
                cols += ps
            done[i] = True
        counts = np.bincount(np.asarray(rows, dtype=np.int64), minlength=n)
        weights = 1.0 / counts[rows] if rows else []
        mean_of_parents = sparse.csr_matrix((weights, (rows, cols)), shape=(n, n))
        v = np.zeros_like(g)
        roots = level == 0
        v[roots] = g[roots] / math.sqrt(1 - lam**2)  # the walk's stationary scale
        for lv in range(1, int(level.max()) + 1):
            at = np.flatnonzero(level == lv)
            v[at] = lam * (mean_of_parents[at] @ v) + g[at]
        m = torch.from_numpy(v / np.linalg.norm(v, axis=1, keepdims=True)).float()
        self.m = F.pad(m, (0, 2))

    @property
    def wn(self):
        from .wordnet import wordnet

        return wordnet()

    def vector(self, synset: str) -> torch.Tensor:
        return self.m[self.index[synset]]

    def rows(self, synsets) -> torch.Tensor:
        return torch.tensor([self.index[s] for s in synsets], dtype=torch.long)


class Embedded:
    """A ``SemanticSpace`` placed in ``width`` axes starting at ``offset`` of the D-dim feature space."""

    def __init__(self, space: SemanticSpace, offset: int, width: int, dim: int, full: bool):
        self._space, self._offset, self._width, self._dim = space, offset, width, dim
        self.index, self.n_nouns = space.index, space.n_nouns
        self.m = self._place(space.m) if full else None

    def _place(self, v: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(*v.shape[:-1], self._dim)
        out[..., self._offset:self._offset + self._width] = v[..., :self._width]
        return out

    @property
    def wn(self):
        return self._space.wn

    def vector(self, synset: str) -> torch.Tensor:
        return self.m[self.index[synset]] if self.m is not None else self._place(self._space.vector(synset))

    def rows(self, synsets) -> torch.Tensor:
        return torch.tensor([self.index[x] for x in synsets], dtype=torch.long)


_SPACES: dict = {}


def semantic_space(dim: int, lam: float, seed: int) -> SemanticSpace:
    """``SemanticSpace`` memoised per process (a space of 100K x 256 floats is ~100 MB)."""
    key = (dim, float(lam), seed)
    if key not in _SPACES:
        if len(_SPACES) >= 6:  # the calibration sweeps many λ: keep memory bounded
            _SPACES.pop(next(iter(_SPACES)))
        _SPACES[key] = SemanticSpace(dim, lam, seed)
    return _SPACES[key]


# ----------------------------------------------------------------------------- concept pools
def imagenet_synsets() -> list[str]:
    """The 1000 ImageNet-1K synsets as WordNet names, in the standard class order."""
    from .corpus import _timm_synset_list
    from .wordnet import wordnet

    wn = wordnet()
    return [wn.synset_from_pos_and_offset("n", int(w[1:])).name() for w in _timm_synset_list("imagenet_synsets.txt")]


def imagenet_classnames() -> list[str]:
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    return list(IMAGENET_CLASSNAMES)


def _wnid_subset(filename: str) -> set[str]:
    from .corpus import _timm_synset_list
    from .wordnet import wordnet

    wn = wordnet()
    return {wn.synset_from_pos_and_offset("n", int(w[1:])).name() for w in _timm_synset_list(filename)}


def _related(wn, ids: list[str]) -> set[str]:
    """ID synsets with all their ancestors and descendants: never OOD."""
    out = set()
    for name in ids:
        s = wn.synset(name)
        out.add(name)
        out.update(a.name() for path in s.hypernym_paths() for a in path)
        out.update(d.name() for d in s.closure(lambda x: x.hyponyms() + x.instance_hyponyms()))
    return out


def _up(s, k):
    """Ancestors exactly k hypernym steps above s (all paths)."""
    level = {s}
    for _ in range(k):
        level = {p for x in level for p in x.hypernyms() + x.instance_hypernyms()}
    return level


def _down(s, k):
    level = {s}
    for _ in range(k):
        level = {c for x in level for c in x.hyponyms() + x.instance_hyponyms()}
    return level


def ood_pools(wn, id_synsets: list[str], in21k: set[str]) -> dict[str, list[str]]:
    """Candidate concepts of every simulated OOD set (sorted lists; sampled later with a seed)."""
    banned = _related(wn, id_synsets)
    by_dist = {1: set(), 2: set(), 3: set()}
    for name in id_synsets:
        s = wn.synset(name)
        for k in (1, 2, 3):
            for a in _up(s, k):
                by_dist[k].update(d.name() for d in _down(a, k))
    sib = sorted((by_dist[1] & in21k) - banned)
    cousin = sorted((by_dist[2] & in21k) - banned - set(sib))
    far_cousin = sorted((by_dist[3] & in21k) - banned - set(sib) - set(cousin))
    near = set(sib) | set(cousin) | set(far_cousin)
    plants = {d.name() for d in wn.synset("plant.n.02").closure(lambda x: x.hyponyms())}
    scenes = set()
    for root in ("room.n.01", "building.n.01", "geological_formation.n.01", "area.n.05", "tract.n.01"):
        scenes.update(d.name() for d in wn.synset(root).closure(lambda x: x.hyponyms()))
    textures = []
    for word in DTD_TEXTURES:
        cands = [c for c in wn.synsets(word.replace("-", "_")) + wn.synsets(word.replace("-", ""))
                 if c.pos() in "nas"]
        if cands:
            textures.append(cands[0].name())
    half = len(cousin) // 2
    return {
        "IN-OOD": sib,
        "NINCO": cousin[::2],
        "IN-O": far_cousin,
        "OpenImage-O": sorted(in21k - banned - near - plants),
        "iNat": sorted((plants & in21k) - banned),
        "Textures43": textures[:43],
        "SSB": sib[::-1],
        "NINCOv2": cousin[1::2] if half else cousin,
        "Texture": textures,
        "Places": sorted((scenes & in21k) - banned),
        "SUN": sorted((scenes & in21k) - banned)[::-1],
    }


# share of scene concepts whose images also show an ID concept (Places overlaps ImageNet by ~60 %)
SCENE_ID_SHARE = {"Places": 0.5, "SUN": 0.25}


