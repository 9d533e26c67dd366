"""Figures of the notebooks (matplotlib + seaborn), sized for the paper (7 in wide, 8-9 pt text).

Every function takes the tidy DataFrame of the matching ``artifacts`` function and returns a
``matplotlib.figure.Figure`` (closed for pyplot, so a notebook shows it once: as the cell's value).
``save(fig, directory, name)`` writes ``name.png`` (200 dpi) and ``name.pdf`` atomically.
Colours and markers per method are shared by all figures (``METHOD_STYLE``, from the ``methods`` registry).
"""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib

if not os.environ.get("MPLBACKEND") and "ipykernel" not in __import__("sys").modules:
    matplotlib.use("Agg")  # scripts and tests; notebooks keep their inline backend
import matplotlib.lines  # noqa: E402
import matplotlib.patches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .fileio import atomic_write  # noqa: E402
from .methods import REGISTRY  # noqa: E402

WIDTH = 7.0  # inches: a two-column paper figure
_PALETTE = sns.color_palette("colorblind", 10)


def _registry_color(style):
    """A registry style (palette index or None, marker[, desaturation]) -> a colour."""
    index, desaturate = style[0], (style[2] if len(style) > 2 else None)
    if index is None:
        return "0.4"
    return sns.desaturate(_PALETTE[index], desaturate) if desaturate else _PALETTE[index]


METHOD_STYLE = {m.name: (_registry_color(m.style), m.style[1]) for m in REGISTRY.values()}


def color(method: str):
    """A method's colour; variants ('PosMine + neg. mining ...', 'MCM (Y_GT ∪ Y_aug)') take a lighter
    shade of their base method's."""
    if method in METHOD_STYLE:
        return METHOD_STYLE[method][0]
    for base, (c, _) in sorted(METHOD_STYLE.items(), key=lambda kv: -len(kv[0])):
        if method.startswith(base):
            return sns.light_palette(c, 4)[2]
    return "0.4"


def marker(method: str) -> str:
    for base, (_, m) in sorted(METHOD_STYLE.items(), key=lambda kv: -len(kv[0])):
        if method.startswith(base):
            return m
    return "o"


def setup():
    """Paper-sized defaults (seaborn 'paper' context, white grid)."""
    sns.set_theme(context="paper", style="whitegrid", font_scale=1.0,
                  rc={"figure.dpi": 100, "savefig.dpi": 200, "axes.titlesize": 9, "axes.labelsize": 8.5,
                      "legend.fontsize": 7.5, "xtick.labelsize": 7.5, "ytick.labelsize": 7.5,
                      "pdf.fonttype": 42, "axes.titleweight": "bold"})


setup()


def _finish(fig, title: str | None = None, simulated: bool = False, legend=None):
    """tight_layout, then the title on top and ``legend = (handles, labels, ncol)`` below the axes."""
    fig.tight_layout()
    if title or simulated:
        text = (title or "") + ("\n[SIMULATED benchmark: not CLIP, not ImageNet]" if simulated else "")
        fig.suptitle(text.strip(), fontsize=9, y=1.02, va="bottom")
    if legend is not None:
        handles, labels, ncol = legend
        fig.legend(handles, labels, loc="upper center", ncol=ncol, frameon=False, bbox_to_anchor=(0.5, 0.0),
                   columnspacing=1.2, handlelength=1.6)
    plt.close(fig)
    return fig


def save(fig, directory, name: str) -> list[Path]:
    """``<directory>/<name>.png`` and ``.pdf``, each written atomically (``fileio.atomic_write``)."""
    out = []
    for ext in ("png", "pdf"):
        meta = {"CreationDate": None} if ext == "pdf" else {"Software": None}
        out.append(atomic_write(Path(directory) / f"{name}.{ext}", lambda tmp: fig.savefig(
            tmp, format=ext, bbox_inches="tight", metadata=meta)))
    return out


def _value_axis(ax, axis: str, lo: float, hi: float | None, label: str) -> None:
    """Limits of a bar chart's value axis; a bar axis that does not start at zero says where it starts
    (bars are read by their length)."""
    lo = max(0.0, float(lo))
    (ax.set_xlim if axis == "x" else ax.set_ylim)(lo, hi)
    (ax.set_xlabel if axis == "x" else ax.set_ylabel)(label + (f" (axis starts at {lo:.0f})" if lo > 0 else ""))


def _legend(ax, ncol: int | None = None):
    """(handles, labels, ncol) of an axis, for a legend below the figure; removes the axis' own legend."""
    h, l = ax.get_legend_handles_labels()
    if ax.get_legend() is not None:
        ax.get_legend().remove()
    return h, l, ncol or min(len(l), 6)


# ---------------------------------------------------------------------------------------- generic
def compare_bars(cmp: pd.DataFrame, by: str = "method", value: str = "auroc", title: str | None = None,
                 simulated: bool = False, hue: str | None = None):
    """Horizontal bars of our value per row (``by``), the paper's value as a black tick beside each."""
    d = cmp.reset_index(drop=True)
    labels = d[by].astype(str) if hue is None else d[hue].astype(str) + " · " + d[by].astype(str)
    fig, ax = plt.subplots(figsize=(WIDTH * 0.62, 0.26 * len(d) + 0.9))
    y = np.arange(len(d))
    ax.barh(y, d[value], color=[color(m) for m in d[by]], height=0.7)
    handles = [matplotlib.patches.Patch(color="0.6", label="ours")]
    if f"{value}_paper" in d:
        p = d[f"{value}_paper"]
        ok = p.notna()
        ax.scatter(p[ok], y[ok], marker="|", s=160, color="black", linewidths=2, zorder=3)
        handles.append(matplotlib.lines.Line2D([], [], color="black", marker="|", ls="", ms=10, mew=2, label="paper"))
    for yi, v in zip(y, d[value]):
        ax.text(v - 0.25, yi, f"{v:.1f}", va="center", ha="right", fontsize=6.8, color="white", fontweight="bold")
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    lo = np.nanmin(np.r_[d[value].values, d.get(f"{value}_paper", d[value]).values])
    _value_axis(ax, "x", round(lo - 8), 101 if value == "auroc" else None,
                {"auroc": "mean AUROC (%)", "fpr95": "mean FPR95 (%)"}.get(value, value))
    return _finish(fig, title, simulated, legend=(handles, [h.get_label() for h in handles], 2))


# ---------------------------------------------------------------------------------------- 00 quickstart
def score_histograms(scores: pd.DataFrame, simulated: bool = False):
    """One panel per method: distribution of the score on the ID test set and on OOD sets."""
    methods = list(dict.fromkeys(scores["method"]))
    fig, axes = plt.subplots(1, len(methods), figsize=(WIDTH, 2.3))
    axes = np.atleast_1d(axes)
    sets = list(dict.fromkeys(scores["set"]))
    pal = dict(zip(sets, ["0.25"] + sns.color_palette("Set2", len(sets) - 1)))
    for ax, m in zip(axes, methods):
        g = scores[scores.method == m]
        lo, hi = np.percentile(g["score"], [0.5, 99.5])
        bins = np.linspace(lo, hi, 40)
        for s in sets:
            v = g[g.set == s]["score"].clip(lo, hi)
            ax.hist(v, bins=bins, density=True, histtype="stepfilled" if s == sets[0] else "step",
                    alpha=0.35 if s == sets[0] else 1.0, lw=1.4, color=pal[s], label=f"{s} ({'ID' if s == sets[0] else 'OOD'})")
        ax.set_title(m)
        ax.set_xlabel("score (higher = more ID)")
        ax.set_yticks([])
    axes[0].set_ylabel("density")
    return _finish(fig, "Scores of ID test images vs OOD images", simulated, legend=_legend(axes[0], len(sets)))


def folder_scores(scores, threshold: float, title: str | None = None):
    """``clustermine score``: the histogram of one folder's scores with the detector's threshold
    (left of it: flagged OOD)."""
    v = np.asarray(scores, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(WIDTH / 2, 2.3))
    lo, hi = min(v.min(), threshold), max(v.max(), threshold)
    pad = 0.05 * (hi - lo) or 1.0
    bins = np.linspace(lo - pad, hi + pad, 30)
    ax.hist(v[v >= threshold], bins=bins, color=_PALETTE[0], alpha=0.8, label=f"ID ({int((v >= threshold).sum())})")
    ax.hist(v[v < threshold], bins=bins, color=_PALETTE[3], alpha=0.8, label=f"flagged OOD ({int((v < threshold).sum())})")
    ax.axvline(threshold, color="0.2", lw=1, ls="--", label=f"threshold {threshold:.3g}")
    ax.set_xlabel("score (Eq. 1 log-odds; higher = more ID)")
    ax.set_ylabel("images")
    return _finish(fig, title or f"Scores of {len(v)} images", legend=_legend(ax, 3))


# ---------------------------------------------------------------------------------------- Fig. 3
def fig3_models(f3: pd.DataFrame, simulated: bool = False):
    d = f3[f3.ood_set == "mean"]
    models = list(dict.fromkeys(d["model"]))
    fig, ax = plt.subplots(figsize=(WIDTH, 2.8))
    x = np.arange(len(models))
    for m in dict.fromkeys(d["method"]):
        g = d[d.method == m].set_index("model").reindex(models)
        ax.plot(x, g["auroc"], marker=marker(m), color=color(m), label=m, lw=1.3, ms=6)
    ax.set_xticks(x, models, rotation=30 if len(models) > 4 else 0, ha="right" if len(models) > 4 else "center")
    ax.set_ylabel("mean AUROC (%)")
    ax.set_xlabel("simulated feature space (NOT CLIP weights)" if simulated else "CLIP weights (sorted by ClusterMine)")
    return _finish(fig, "Fig. 3: OOD detection across models", simulated, legend=_legend(ax, 4))


# ---------------------------------------------------------------------------------------- Fig. 4
def fig4_bars(f4: pd.DataFrame, simulated: bool = False):
    """Mean AUROC per ID set (x) and method (hue); the relative change vs ImageNet printed on each bar."""
    id_sets = list(dict.fromkeys(f4["id_set"]))
    methods = list(dict.fromkeys(f4["method"]))
    fig, ax = plt.subplots(figsize=(WIDTH, 3.0))
    w = 0.8 / len(methods)
    x = np.arange(len(id_sets))
    for j, m in enumerate(methods):
        g = f4[f4.method == m].set_index("id_set").reindex(id_sets)
        xs = x - 0.4 + w * (j + 0.5)
        ax.bar(xs, g["auroc"], width=w * 0.95, color=color(m), label=m)
        for xi, s, v, r in zip(xs, id_sets, g["auroc"], g["relative_change_pct"]):
            if np.isfinite(v):
                ax.text(xi, v + 0.4, "ref." if s == id_sets[0] else f"{r:+.1f}%", ha="center", va="bottom",
                        fontsize=6.3, rotation=90)
    lo, hi = np.nanmin(f4["auroc"]), np.nanmax(f4["auroc"])
    _value_axis(ax, "y", round(lo - 10), hi + 9, "mean AUROC (%)")
    limits = ax.get_ylim()
    ax.set_yticks([t for t in ax.get_yticks() if t <= 100])
    ax.set_ylim(limits)  # set_yticks may widen the axis to a tick below its start
    ax.set_xticks(x, id_sets)
    return _finish(fig, "Fig. 4: mean AUROC per ID test set; on the bars: relative change vs ImageNet", simulated,
                   legend=_legend(ax, len(methods)))


# ---------------------------------------------------------------------------------------- Fig. 5
def fig5_histograms(f5: pd.DataFrame, simulated: bool = False):
    methods = list(dict.fromkeys(f5["method"]))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(WIDTH, 2.6))
    lo = np.floor(f5["similarity"].min() * 20) / 20
    bins = np.linspace(lo, 1.0, int(round((1.0 - lo) / 0.025)) + 1)
    for m in methods:
        g = f5[f5.method == m]
        a1.hist(g["similarity"], bins=bins, weights=np.full(len(g), 100 / len(g)), histtype="step", lw=1.6,
                color=color(m), label=f"{m} (|Y_pos|={len(g)})")
    a1.set_xlabel("top-1 text-text cosine similarity to Y_GT")
    a1.set_ylabel("% of mined labels")
    a1.set_title("Similarity to the closest GT label")
    hops = f5.assign(h=f5["hops"].clip(upper=8))
    cats = list(range(0, 9))
    w = 0.8 / len(methods)
    for j, m in enumerate(methods):
        g = hops[hops.method == m]
        share = [100 * (g["h"] == c).mean() for c in cats]
        a2.bar(np.array(cats) - 0.4 + w * (j + 0.5), share, width=w * 0.95, color=color(m), label=m)
        na = 100 * g["h"].isna().mean()
        a2.bar(9.2 - 0.4 + w * (j + 0.5), na, width=w * 0.95, color=color(m), hatch="//", alpha=0.6)
    a2.set_xticks(cats + [9.2], [str(c) for c in cats[:-1]] + ["8+", "none"])
    a2.set_xlabel("WordNet hops to the closest GT synset")
    a2.set_ylabel("% of mined labels")
    a2.set_title("Shortest WordNet path to Y_GT")
    return _finish(fig, "Fig. 5: quality of the mined labels", simulated, legend=_legend(a1, len(methods)))


# ---------------------------------------------------------------------------------------- Fig. 6
def _twin_pos(ax, x, n_pos, label="|Y_pos|"):
    t = ax.twinx()
    t.plot(x, n_pos, ls="--", color="0.35", marker=".", lw=1.1, label=label)
    t.set_ylabel(label, color="0.35")
    t.tick_params(axis="y", colors="0.35")
    t.grid(False)
    return t


def fig6_curves(k_df: pd.DataFrame, m_df: pd.DataFrame, c_df: pd.DataFrame, simulated: bool = False):
    """Left: AUROC vs K per method; center: PosMine AUROC and |Y_pos| vs M; right: ClusterMine vs C."""
    fig, axes = plt.subplots(1, 3, figsize=(WIDTH, 2.5))
    a1, a2, a3 = axes
    k = k_df[k_df.ood_set == "mean"]
    order = ["NegLabel", "PosMine", "ClusterMine"]
    labels = sorted(dict.fromkeys(k["K_label"]), key=lambda l: (l == "all", float(l[:-1]) if l != "all" else 0))
    pos = {l: i for i, l in enumerate(labels)}
    for m in [m for m in order if m in set(k.method)] + [m for m in dict.fromkeys(k.method) if m not in order]:
        g = k[k.method == m]
        g = g.assign(x=g["K_label"].map(pos)).sort_values("x")
        a1.plot(g["x"], g["auroc"], marker=marker(m), color=color(m), label=m, lw=1.3)
    a1.set_xticks(range(len(labels)), labels)
    a1.set_xlabel("negative labels K")
    a1.set_ylabel("mean AUROC (%)")
    a1.set_title("Negatives K (all methods)")
    m = m_df[m_df.ood_set == "mean"].sort_values("M")
    a2.plot(m["M"], m["auroc"], marker=marker("PosMine"), color=color("PosMine"), lw=1.3, label="AUROC")
    a2.set_xscale("log", base=2)
    a2.set_xticks(m["M"], [str(v) for v in m["M"]])
    a2.set_xlabel("M (min. images per label)")
    a2.set_title("PosMine: M")
    _twin_pos(a2, m["M"], m["n_pos"])
    c = c_df[c_df.ood_set == "mean"].sort_values("C")
    a3.plot(c["C"], c["auroc"], marker=marker("ClusterMine"), color=color("ClusterMine"), lw=1.3, label="AUROC")
    a3.set_xscale("log")
    a3.set_xticks(c["C"], [str(v) for v in c["C"]])
    a3.minorticks_off()
    a3.set_xlabel("C (clusters)")
    a3.set_title("ClusterMine: C")
    _twin_pos(a3, c["C"], c["n_pos"])
    for ax in axes:
        ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%.1f"))
    h, l, n = _legend(a1)
    h += [matplotlib.lines.Line2D([], [], ls="--", color="0.35", marker=".")]
    l += ["|Y_pos| (right axes)"]
    return _finish(fig, "Fig. 6: sensitivity to K (left), M (center) and C (right)", simulated, legend=(h, l, 4))


# ---------------------------------------------------------------------------------------- Fig. 7
def fig7_panels(f7: pd.DataFrame, proposal: int | None = None, simulated: bool = False, note: str | None = None):
    """The four cluster statistics vs C; the label-free proposal as a dotted line, or ``note`` (why there is
    none) in the title."""
    cols = [("purity_pct", "%", "Purity"), ("entropy", "nats", "Entropy (top-1 concepts)"),
            ("redundancy_pct", "%", "Redundancy ratio"), ("pos_per_cluster_pct", "%", "|Y_pos| / C")]
    fig, axes = plt.subplots(1, 4, figsize=(WIDTH, 2.2))
    d = f7.sort_values("C")
    for ax, (col, ylabel, title) in zip(axes, cols):
        ax.plot(d["C"], d[col], marker="o", color=color("ClusterMine"), lw=1.4)
        ax.set_xscale("log")
        ax.set_xticks(d["C"], [str(v) for v in d["C"]])
        ax.minorticks_off()
        ax.set_xlabel("C (clusters)")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=8)
        if proposal is not None:
            ax.axvline(proposal, ls=":", color="0.3", lw=1)
    return _finish(fig, "Fig. 7: ClusterMine's clusters vs C" + (
        f" (dotted: label-free elbow proposal, C={proposal})" if proposal else f" ({note})" if note else ""), simulated)


# ---------------------------------------------------------------------------------------- Fig. 8 / 11
def grouped_bars(d: pd.DataFrame, x: str, title: str, xlabel: str, simulated: bool = False, value: str = "auroc"):
    """Mean AUROC bars: ``x`` groups, one bar per method (hue), value printed on each bar."""
    d = d[d.ood_set == "mean"] if "ood_set" in d else d
    groups = list(dict.fromkeys(d[x]))
    methods = list(dict.fromkeys(d["method"]))
    fig, ax = plt.subplots(figsize=(WIDTH, 2.9))
    w = 0.8 / len(methods)
    xs0 = np.arange(len(groups))
    for j, m in enumerate(methods):
        g = d[d.method == m].set_index(x).reindex(groups)
        xs = xs0 - 0.4 + w * (j + 0.5)
        ax.bar(xs, g[value], width=w * 0.95, color=color(m), label=m,
               hatch="//" if "neg. mining" in m else None, edgecolor="white" if "neg. mining" in m else None)
        for xi, v in zip(xs, g[value]):
            if np.isfinite(v):
                ax.text(xi, v + 0.2, f"{v:.1f}", ha="center", va="bottom", fontsize=5.8, rotation=90)
    lo, hi = np.nanmin(d[value]), np.nanmax(d[value])
    _value_axis(ax, "y", round(lo - 8), min(101, hi + 6), "mean AUROC (%)")
    ax.set_xticks(xs0, groups)
    if xlabel:
        ax.set_xlabel(xlabel)
    return _finish(fig, title, simulated, legend=_legend(ax, min(len(methods), 3)))


def fig8_bars(f8: pd.DataFrame, simulated: bool = False):
    return grouped_bars(f8, "prompts", "Fig. 8: context prompt sets", "", simulated)


def fig11_bars(f11: pd.DataFrame, simulated: bool = False):
    return grouped_bars(f11, "id_set", "Fig. 11: negative mining on covariate-shifted ID sets", "", simulated)


# ---------------------------------------------------------------------------------------- Fig. 9 / 10
def fig9_curves(f9: pd.DataFrame, simulated: bool = False):
    d = f9[f9.ood_set == "mean"]
    corpus = d["corpus"].iloc[0] if "corpus" in d else ""
    labels = sorted(dict.fromkeys(d["K_label"]), key=lambda l: (l == "all", float(l[:-1]) if l != "all" else 0))
    pos = {l: i for i, l in enumerate(labels)}
    fig, ax = plt.subplots(figsize=(WIDTH * 0.55, 2.6))
    for m in dict.fromkeys(d["method"]):
        g = d[d.method == m].assign(x=lambda t: t["K_label"].map(pos)).sort_values("x")
        ax.plot(g["x"], g["auroc"], marker=marker(m), color=color(m), label=m, lw=1.3)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_xlabel("negative labels K")
    ax.set_ylabel("mean AUROC (%)")
    ax.legend(fontsize=7)
    return _finish(fig, f"Fig. 9: negative mining, corpus {corpus}", simulated)


def fig10_curves(f10: pd.DataFrame, simulated: bool = False):
    d = f10[f10.ood_set == "mean"]
    fig, ax = plt.subplots(figsize=(WIDTH * 0.55, 2.6))
    for m in dict.fromkeys(d["method"]):
        g = d[d.method == m].sort_values("group_size")
        ax.plot(g["group_size"], g["auroc"], marker=marker(m), color=color(m), lw=1.3,
                label=f"{m} (K={int(g['K'].iloc[0]):,})")
    ax.set_xscale("log")
    ax.set_xlabel("group size (labels per group; rightmost = no grouping)")
    ax.set_ylabel("mean AUROC (%)")
    ax.legend(fontsize=7)
    return _finish(fig, "Fig. 10: NegLabel's negative grouping", simulated)
