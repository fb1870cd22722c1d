"""The evidence package's pictures, one function per plot; each writes a PNG of exactly
`WIDTH` x `HEIGHT` pixels (8 x 5 inches at 100 dpi, no tight bounding box) and returns its path.

Matplotlib is used through its object API (`Figure` + the Agg canvas): no pyplot, no global
backend switch, nothing shared between threads. It is imported inside each function: it costs
about a second, which `retrainer report` (which only reads a package) should not pay.

When the data for a plot does not exist (no test rows, no drift report, no per-check evidence),
`placeholder` writes an image of the same size that says so, so a package always has every file.
"""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

WIDTH, HEIGHT, DPI = 800, 500, 100
COLORS = {"champion": "#1f77b4", "challenger": "#d62728"}
_METADATA = {"Software": None}  # no matplotlib version in the file: same data, same bytes


def _figure(rows: int = 1, cols: int = 1, **kw):
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 - heavy: matplotlib
    from matplotlib.figure import Figure  # noqa: PLC0415 - heavy: matplotlib

    fig = Figure(figsize=(WIDTH / DPI, HEIGHT / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, **kw)
    return fig, axes


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    fig.savefig(path, dpi=DPI, format="png", metadata=_METADATA)
    return path


def placeholder(path: str | Path, title: str, message: str) -> Path:
    """An image that says why the plot is missing (e.g. "no drift report")."""
    fig, ax = _figure()
    ax.set_axis_off()
    ax.text(0.5, 0.62, title, ha="center", va="center", fontsize=16, weight="bold", transform=ax.transAxes)
    ax.text(0.5, 0.42, message, ha="center", va="center", fontsize=11, wrap=True, transform=ax.transAxes)
    return _save(fig, path)


def _color(label: str, i: int) -> str:
    for key, c in COLORS.items():
        if label.startswith(key):
            return c
    return f"C{i}"


def roc_plot(path: str | Path, y: Sequence[int], scores: Mapping[str, Sequence[float]], *, title: str) -> Path:
    """ROC curves of every model in `scores` (label -> scores of the same rows `y`), with their AUC."""
    from sklearn.metrics import roc_auc_score, roc_curve  # noqa: PLC0415 - heavy: scikit-learn

    y = np.asarray(y).astype(int)
    fig, ax = _figure()
    for i, (label, s) in enumerate(scores.items()):
        fpr, tpr, _ = roc_curve(y, np.asarray(s, dtype=float))
        auc = roc_auc_score(y, np.asarray(s, dtype=float))
        ax.plot(fpr, tpr, color=_color(label, i), lw=1.8, label=f"{label} (AUC {auc:.4f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="chance")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.subplots_adjust(left=0.09, right=0.97, top=0.91, bottom=0.11)
    return _save(fig, path)


def reliability(y: Sequence[int], s: Sequence[float], n_bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean score, observed rate, rows) per group of equal size by rank of the score: the
    reliability diagram's points, grouped as the Hosmer-Lemeshow check groups them."""
    y = np.asarray(y, dtype=float)
    s = np.asarray(s, dtype=float)
    order = np.argsort(s, kind="stable")
    groups = [g for g in np.array_split(order, min(n_bins, len(s))) if len(g)]
    return (np.array([s[g].mean() for g in groups]), np.array([y[g].mean() for g in groups]),
            np.array([len(g) for g in groups]))


def calibration_plot(path: str | Path, y: Sequence[int], scores: Mapping[str, Sequence[float]], *, title: str,
                     n_bins: int = 10) -> Path:
    """Reliability diagram: observed readmission rate against mean predicted risk in `n_bins`
    equal-size risk groups, per model, with the diagonal of perfect calibration and each model's
    expected calibration error (ECE) over the same groups."""
    fig, ax = _figure()
    top = 0.0
    for i, (label, s) in enumerate(scores.items()):
        mean_s, rate, n = reliability(y, s, n_bins)
        ece = float(np.sum(n * np.abs(mean_s - rate)) / np.sum(n))
        ax.plot(mean_s, rate, marker="o", color=_color(label, i), lw=1.5, label=f"{label} (ECE {ece:.4f})")
        top = max(top, float(mean_s.max()), float(rate.max()))
    top = min(1.0, top * 1.1 + 0.02)
    ax.plot([0, top], [0, top], color="grey", lw=1, ls="--", label="perfectly calibrated")
    ax.set(xlim=(0, top), ylim=(0, top), xlabel=f"mean predicted risk ({n_bins} equal-size groups)",
           ylabel="observed readmission rate", title=title)
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    fig.subplots_adjust(left=0.09, right=0.97, top=0.91, bottom=0.11)
    return _save(fig, path)


def psi_plot(path: str | Path, features: Sequence[Mapping[str, Any]], *, threshold: float, title: str,
             subtitle: str = "", max_features: int = 30) -> Path:
    """PSI per feature as horizontal bars (highest first, at most `max_features`), the PSI
    threshold as a dashed line and each feature's noise floor (its family-wise floor, else its
    95% floor) as a dotted line through the bars; drifted features in red."""
    rows = sorted(features, key=lambda r: float(r.get("psi") or 0.0), reverse=True)[:max_features][::-1]
    fig, ax = _figure()
    ypos = np.arange(len(rows))
    psi = np.array([float(r.get("psi") or 0.0) for r in rows])
    floors = [r.get("family_floor", r.get("noise_floor")) for r in rows]
    drifted = [r.get("status") == "drift" or (r.get("status") is None and p > threshold) for r, p in zip(rows, psi)]
    ax.barh(ypos, psi, color=["#d62728" if d else "#7f7f7f" for d in drifted], height=0.7)
    ax.axvline(threshold, color="black", ls="--", lw=1.2, label=f"threshold {threshold:g}")
    if any(f is not None for f in floors):
        fx = np.array([np.nan if f is None else float(f) for f in floors])
        ax.plot(fx, ypos, color="#1f77b4", ls=":", marker="|", markersize=12, lw=1.2, label="noise floor (family-wise)")
    names = [f"{r.get('feature')}{' (score)' if r.get('role') == 'score' else ''}" for r in rows]
    ax.set_yticks(ypos, names, fontsize=7 if len(rows) > 15 else 9)
    ax.set(xlabel="PSI")
    ax.set_title(title, fontsize=11)
    if subtitle:
        fig.text(0.5, 0.955, textwrap.shorten(subtitle, 120, placeholder=" ..."), ha="center", fontsize=7,
                 color="#555555")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.subplots_adjust(left=0.24, right=0.97, top=0.9, bottom=0.1)
    return _save(fig, path)


def canary_plot(path: str | Path, checks: Sequence[Mapping[str, Any]], *, title: str) -> Path:
    """The canary's metrics per check over elapsed hours: candidate error rate (with its lower
    bound) and p95 latency (with its lower bound) against their guardrail limits, and ΔAUC on
    matured labels with its interval against -tolerance."""
    fig, axes = _figure(3, 1, sharex=True)
    h = np.array([float(c["hours"]) for c in checks])

    def series(key):
        return np.array([np.nan if c.get(key) is None else float(c[key]) for c in checks])

    def limit(ax, key, label):
        lims = [c.get(key) for c in checks if c.get(key) is not None]
        if lims:
            ax.axhline(float(lims[-1]), color="black", ls="--", lw=1, label=label)

    ax = axes[0]
    ax.plot(h, 100 * series("error_rate"), marker="o", color="#d62728", label="error rate")
    ax.plot(h, 100 * series("error_bound"), marker="v", ls=":", color="#d62728", label="lower bound")
    lims = [c.get("error_limit") for c in checks if c.get("error_limit") is not None]
    if lims:
        ax.axhline(100 * float(lims[-1]), color="black", ls="--", lw=1, label="guardrail")
    ax.set_ylabel("error %")
    ax = axes[1]
    ax.plot(h, series("p95"), marker="o", color="#9467bd", label="p95 latency")
    ax.plot(h, series("p95_bound"), marker="v", ls=":", color="#9467bd", label="lower bound")
    limit(ax, "p95_limit", "guardrail")
    ax.set_ylabel("p95 ms")
    ax = axes[2]
    d, lo, hi = series("delta"), series("low"), series("high")
    ok = ~np.isnan(d)
    if ok.any():
        err = np.vstack([np.where(np.isnan(lo), 0, d - lo), np.where(np.isnan(hi), 0, hi - d)])
        ax.errorbar(h[ok], d[ok], yerr=err[:, ok], fmt="o", color="#2ca02c", capsize=3, label="ΔAUC (interval)")
    else:
        ax.text(0.5, 0.5, "no ΔAUC on matured labels yet", ha="center", va="center", transform=ax.transAxes)
    tols = [c.get("tolerance") for c in checks if c.get("tolerance") is not None]
    if tols:
        ax.axhline(-float(tols[-1]), color="black", ls="--", lw=1, label=f"-tolerance {-float(tols[-1]):g}")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_ylabel("ΔAUC")
    ax.set_xlabel("hours since the start")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left", fontsize=7, ncol=3)
    axes[0].set_title(title)
    fig.subplots_adjust(left=0.1, right=0.97, top=0.93, bottom=0.1, hspace=0.25)
    return _save(fig, path)


def traffic_plot(path: str | Path, series: Mapping[str, Any], *, title: str) -> Path:
    """The candidate's traffic share over elapsed hours: the plan's stages as a step line, the
    shares the rollout journal recorded, and the share each decision set."""
    fig, ax = _figure()
    planned = series.get("planned") or []
    if planned:
        x, y = zip(*planned)
        ax.step(x, [100 * v for v in y], where="post", color="grey", lw=7, alpha=0.35, label="plan")
    journal = series.get("journal") or []
    if journal:
        x, y, ev = zip(*journal)
        ax.step(x, [100 * v for v in y], where="post", color="#1f77b4", lw=1.5, marker="o", label="journal")
        for xi, yi, e in journal:
            ax.annotate(e, (xi, 100 * yi), textcoords="offset points", xytext=(3, 5), fontsize=7)
    dec = series.get("decisions") or []
    if dec:
        x, y, act = zip(*dec)
        ax.scatter(x, [100 * v for v in y], color="#d62728", zorder=3, s=25, label="decisions")
    ax.set(xlabel="hours since the start", ylabel="candidate share of traffic (%)", ylim=(-3, 105), title=title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left")
    else:
        ax.text(0.5, 0.5, "no stages or traffic recorded", ha="center", va="center", transform=ax.transAxes)
    ax.grid(alpha=0.3)
    fig.subplots_adjust(left=0.09, right=0.97, top=0.91, bottom=0.11)
    return _save(fig, path)
