"""What a simulation writes: a CSV of every trained model, a plot of Dice against the fraction annotated.

The plot is drawn with matplotlib's Agg canvas (no GUI backend, so it works
headless and never touches napari's Qt event loop).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np

from napari_segloop.core.active.simulate import STRATEGIES, SimulationRow
from napari_segloop.core.io.atomic import atomic_path

__all__ = ["curves", "plot_rows", "summary_lines", "write_csv"]

_COLOURS = {"uncertainty": "#D55E00", "random": "#0072B2"}  # Okabe-Ito vermillion and blue


def _finite_mean(values: list[float]) -> float:
    """Mean of the finite values, NaN (without a warning) when there are none."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def write_csv(rows: Sequence[SimulationRow], path: str | os.PathLike) -> Path:
    """Write one line per trained model (atomically; the previous file survives a failure)."""
    names = [f.name for f in fields(SimulationRow)]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in asdict(row).items()})
    final = Path(path)
    with atomic_path(final) as tmp:
        tmp.write_text(text.getvalue(), encoding="utf-8")
    return final


def curves(rows: Sequence[SimulationRow]) -> dict[str, dict[str, np.ndarray]]:
    """Per strategy: ``fraction``, ``regions``, ``mean`` and ``std`` of the Dice over seeds, per round."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for strategy in STRATEGIES:
        mine = [r for r in rows if r.strategy == strategy]
        rounds = sorted({r.round for r in mine})
        if not rounds:
            continue
        dice = [[r.dice for r in mine if r.round == k] for k in rounds]
        out[strategy] = {
            "round": np.array(rounds),
            "regions": np.array([np.mean([r.regions for r in mine if r.round == k]) for k in rounds]),
            "fraction": np.array([np.mean([r.fraction for r in mine if r.round == k]) for k in rounds]),
            "mean": np.array([np.mean(d) for d in dice]),
            "std": np.array([np.std(d) for d in dice]),
            "spearman": np.array([_finite_mean([r.spearman for r in mine if r.round == k]) for k in rounds]),
        }
    return out


def summary_lines(rows: Sequence[SimulationRow]) -> list[str]:
    """A plain-text table: per round, the annotated fraction and each strategy's mean Dice +- sd."""
    table = curves(rows)
    if not table:
        return []
    seeds = len({r.seed for r in rows})
    header = "round  annotated  " + "  ".join(f"{s:>22}" for s in table)
    lines = [f"Dice on the held-out part (mean +- sd over {seeds} seed(s))", header]
    first = next(iter(table.values()))
    for i, k in enumerate(first["round"]):
        cells = [f"{c['mean'][i]:.3f} +- {c['std'][i]:.3f}" for c in table.values()]
        lines.append(f"{k:>5}  {first['fraction'][i]:>9.1%}  " + "  ".join(f"{c:>22}" for c in cells))
    return lines


def plot_rows(rows: Sequence[SimulationRow], path: str | os.PathLike, title: str = "") -> Path:
    """Plot Dice against the fraction annotated (mean and each seed) and write a PNG atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    table = curves(rows)
    fig = Figure(figsize=(6.4, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for strategy, c in table.items():
        colour = _COLOURS.get(strategy, "black")
        for seed in sorted({r.seed for r in rows}):
            mine = sorted((r for r in rows if r.strategy == strategy and r.seed == seed),
                          key=lambda r: r.round)
            ax.plot([r.fraction for r in mine], [r.dice for r in mine], color=colour, alpha=0.25, lw=0.8)
        ax.errorbar(c["fraction"], c["mean"], yerr=c["std"], color=colour, marker="o", lw=2, capsize=3,
                    label=f"{strategy} (mean +- sd)")
    ax.set_xlabel("fraction of the pool annotated")
    ax.set_ylabel("Dice on the held-out part")
    ticks = sorted({round(float(f), 4) for c in table.values() for f in c["fraction"]})
    ax.set_xticks(ticks, [f"{t:.1%}" for t in ticks])
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    final = Path(path)
    with atomic_path(final) as tmp:
        with open(tmp, "wb") as fh:
            fig.savefig(fh, format="png")
    return final
