"""Dense steps over CLIP features, chunked or tiled so memory never holds an N x K similarity matrix.

Features are the image/text embeddings *after* CLIP's projection (the shared space where h·z is
CLIP's zero-shot logit before the logit scale), unit-normalised (``validation.check_features``).
Work over the corpus is chunked over images so memory holds at most ``rows x K`` similarities, never
``N x K`` (``rows = max(1, budget // K)``, ``budget`` elements; default 2**26 = 256 MiB of float32,
one buffer reused for every chunk: smaller chunks leave the matrix multiply well below its rate, see
benchmarks/). Corpus-wide reductions that merge across columns (top-1, logsumexp: ``zero_shot_top1``,
``lse_rows``, ``lse_tiles``) use ``similarity_tiles`` instead: on the CPU, 512 x 4096 tiles that stay
in cache.

What is here: the chunk / tile iterators (``similarity_chunks``, ``similarity_tiles``,
``rows_per_chunk``, ``normalized_rows``), the corpus-wide reductions built on them
(``zero_shot_top1``, ``lse_rows`` / ``lse_tiles``, the in-place floored logsumexp ``lse_``), and
``row_stat`` / ``quantile_rows``, a per-row statistic of text-to-text similarities (what NegLabel /
CLIPScope / Y_aug mining rank candidates by, ``mining``). The scores themselves are in ``scoring``.
"""
from __future__ import annotations

import math
from typing import Iterator

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .validation import as_tensor, check_features, check_ids, check_matrix, check_positive

DEFAULT_BUDGET = 2**26
TILE_ROWS, TILE_COLS = 512, 4096  # CPU tile of ``similarity_tiles`` (measured best of 256-2000 x 2048-16384)
LSE_FLOOR = -80.0  # exp(-80) ≈ 1.8e-35: still a normal float32, and negligible beside exp(0) = 1
TAU_HINT = "the default is scoring.default_tau(logit_scale)"


def rows_per_chunk(n_cols: int, budget: int = DEFAULT_BUDGET) -> int:
    return max(1, budget // max(1, n_cols))


def normalized_rows(*named: tuple[torch.Tensor, str]) -> torch.Tensor:
    """Validate (``check_matrix``) several ``(features (n_i, D), name)`` and L2-normalise them into ONE
    new (sum n_i, D) float32 matrix: no intermediate copies, unlike ``torch.cat`` of normalised parts."""
    dim, parts = None, []
    for p, name in named:
        parts.append(check_matrix(p, name, dim))
        dim = parts[-1].shape[1]
    out = torch.empty(sum(p.shape[0] for p in parts), dim, device=parts[0].device)
    start = 0
    for p in parts:
        F.normalize(p.float(), dim=-1, out=out[start:start + p.shape[0]])
        start += p.shape[0]
    return out


def similarity_chunks(image: torch.Tensor, text: torch.Tensor, budget: int = DEFAULT_BUDGET,
                      device=None, scale: float | None = None) -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield ``(rows, scale · image[rows] @ text.T)`` chunks of cosine similarities, shape (r, K).

    Both inputs must already be normalised (``check_features``). ``device`` defaults to the text's.
    ``scale`` multiplies the (r, D) image chunk, not the (r, K) result (K/D times less work).
    Every chunk is written into the same buffer: it is valid until the next iteration and may be
    overwritten in place by the caller.
    """
    for rows, _, sim in _blocks(image, text, budget, device, scale, tiled=False):
        yield rows, sim


def similarity_tiles(image: torch.Tensor, text: torch.Tensor, budget: int = DEFAULT_BUDGET,
                     device=None, scale: float | None = None,
                     progress: str | None = None) -> Iterator[tuple[slice, slice, torch.Tensor]]:
    """Yield ``(rows, cols, scale · image[rows] @ text[cols].T)`` tiles, shape (r, c), covering all pairs.

    For reductions over a whole corpus row (top-1, logsumexp) that can be merged across column blocks.
    On the CPU a tile is at most ``TILE_ROWS x TILE_COLS`` (8 MiB), so the reduction's passes over it
    run in cache instead of re-reading a (rows x K) chunk from memory: corpus-wide logsumexp and top-1
    ~1.5-2x faster on the 2-core machine (benchmarks/results/findings-2026-11-23.md). On other devices
    a tile is a whole ``similarity_chunks`` chunk (all columns). Same inputs and buffer rule as there.
    ``progress``: a description to show a tqdm bar over the images (None: no bar).
    """
    return _blocks(image, text, budget, device, scale, tiled=True, progress=progress)


def _blocks(image, text, budget, device, scale, tiled: bool, progress: str | None = None):
    image, text = as_tensor(image, "image features"), as_tensor(text, "text features")
    device = torch.device(device or text.device)
    text_t = text.to(device).T
    n, k = image.shape[0], text.shape[0]
    tiled = tiled and device.type == "cpu"
    width = min(k, TILE_COLS) if tiled else k
    step = min(rows_per_chunk(width, budget), TILE_ROWS if tiled else n)
    buf = torch.empty(min(step, n), width, device=device)
    for start in tqdm(range(0, n, step), desc=progress, disable=progress is None, leave=False):
        rows = slice(start, min(start + step, n))
        chunk = image[rows].to(device, non_blocking=True)
        if scale is not None:
            chunk = chunk * scale
        for col in range(0, k, width):
            cols = slice(col, min(col + width, k))
            yield rows, cols, torch.mm(chunk, text_t[:, cols], out=buf[: chunk.shape[0], : cols.stop - col])


def zero_shot_top1(image: torch.Tensor, text: torch.Tensor, budget: int = DEFAULT_BUDGET,
                   device=None, progress: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-shot top-1 concept of each image: ``(index (N,) long, cosine (N,) float)``.

    image: (N, D), text: (K, D). Argmax of the cosine = argmax of any softmax over the same texts.
    Over column tiles only the row maxima are kept (``amax``: ~8x cheaper than ``max`` with indices
    on the CPU); the argmax is then taken inside each row's best tile, a product of 1 / (number of
    tiles) of the work. ``progress``: a tqdm description (None: no bar).
    """
    text = check_features(text, "text features")
    image = check_features(image, "image features", text.shape[1])
    n, k = image.shape[0], text.shape[0]
    idx = torch.empty(n, dtype=torch.long)
    val = torch.full((n,), -math.inf)
    best_tile = torch.zeros(n, dtype=torch.long)
    width = k
    for rows, cols, sim in similarity_tiles(image, text, budget, device, progress=progress):
        if cols.stop - cols.start == k:  # the tile is the whole row
            v, i = sim.max(dim=1)
            idx[rows], val[rows] = i.cpu(), v.cpu()
            continue
        width = cols.stop - cols.start if cols.start == 0 else width
        v = sim.amax(dim=1).cpu()
        better = v > val[rows]
        val[rows] = torch.where(better, v, val[rows])
        best_tile[rows] = torch.where(better, cols.start, best_tile[rows])
    if width < k:
        for start in best_tile.unique().tolist():
            sel = (best_tile == start).nonzero().squeeze(1)
            for rows, sim in similarity_chunks(image[sel], text[start:start + width], budget, device):
                v, i = sim.max(dim=1)
                idx[sel[rows]], val[sel[rows]] = i.cpu() + start, v.cpu()
    return idx, val


def lse_rows(image: torch.Tensor, text: torch.Tensor, tau: float, budget: int = DEFAULT_BUDGET,
             device=None, progress: str | None = None) -> torch.Tensor:
    """(N,) ``log Σ_k exp(h·z_k/τ)`` over all rows of ``text`` (K, D): the ``neg_lse`` of ``eq1_logit``.

    Label sets that share most of their negatives (PosMine and ClusterMine at every M and C share
    the corpus minus the candidate concepts) compute this big part once per image set. ``progress``: a tqdm description.
    """
    tau = check_positive(tau, "tau", TAU_HINT)
    text = check_features(text, "text features")
    return lse_tiles(check_features(image, "image features", text.shape[1]), text, tau, budget, device, progress)


def lse_tiles(image: torch.Tensor, text: torch.Tensor, tau: float, budget: int = DEFAULT_BUDGET,
              device=None, progress: str | None = None) -> torch.Tensor:
    """(N,) logsumexp of ``image @ text.T / tau`` (both already normalised, tau checked), merged across
    column tiles (CPU): ``lse_rows`` without its validation, for callers that validated once."""
    out = torch.full((image.shape[0],), -math.inf)
    for rows, _, logits in similarity_tiles(image, text, budget, device, scale=1.0 / tau, progress=progress):
        out[rows] = torch.logaddexp(out[rows], lse_(logits).cpu())
    return out


def lse_(x: torch.Tensor) -> torch.Tensor:
    """Logsumexp over the last dim that overwrites ``x`` (a view is fine): (..., K) -> (...).

    Terms more than 80 below the row's max are floored at exp(-80): they change the sum by less than
    1e-30 relative, and it keeps exp out of float32's denormal range, where it is ~6x slower on CPU
    (with τ = 0.001 most of a corpus row lies hundreds below its max; see benchmarks/).
    """
    m = x.amax(dim=-1, keepdim=True)
    return x.sub_(m).clamp_min_(LSE_FLOOR).exp_().sum(dim=-1).log_().add_(m.squeeze(-1))


def row_stat(rows_text: torch.Tensor, cols_text: torch.Tensor, reduce, budget: int = DEFAULT_BUDGET,
             device=None, index=None) -> torch.Tensor:
    """``reduce(normalise(rows_text[chunk]) @ cols_text.T)`` per chunk of rows: (R,) float32 on the CPU.

    cols_text (P, D) must be normalised already; ``index`` (R,) selects rows of ``rows_text`` (Q, D)
    (default: all) and is applied chunk by chunk, so a (R, D) copy of a 270K-concept corpus is never
    made (each chunk is validated, ``check_features``, as it is taken).
    """
    rows_text = as_tensor(rows_text, "corpus text features")
    if index is None:
        index = torch.arange(rows_text.shape[0])
    else:
        index = check_ids(index, "index", upper=rows_text.shape[0])
    dev = device or cols_text.device
    cols = cols_text.to(dev)
    step = rows_per_chunk(cols.shape[0], budget)
    out = torch.empty(len(index))
    buf = torch.empty(min(step, len(index)), cols.shape[0], device=dev)
    for s in range(0, len(index), step):
        chunk = check_features(rows_text[index[s:s + step]], "corpus text features", cols.shape[1]).to(dev)
        out[s:s + step] = reduce(torch.mm(chunk, cols.T, out=buf[: len(chunk)])).cpu()
    return out


def quantile_rows(s: torch.Tensor, q: float) -> torch.Tensor:
    """``torch.quantile(s, q, dim=1)`` (linear interpolation) from a partial ``topk``, (R, P) -> (R,).

    Same value up to float rounding; torch.quantile sorts every row completely, which costs more than
    the matrix multiply that produced ``s`` (benchmarks/).
    """
    p = s.shape[1]
    rank = q * (p - 1)
    lo, hi = math.floor(rank), math.ceil(rank)
    top = s.topk(p - lo, dim=1, sorted=True).values  # top[:, j] = j-th largest = ascending[p - 1 - j]
    return torch.lerp(top[:, p - 1 - lo], top[:, p - 1 - hi], rank - lo)
