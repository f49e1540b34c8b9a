"""Writing results: a JSON document and a PNG chart per command, and tables on the terminal."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.table import Table


def write_json(path: Path, document: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, sort_keys=False, allow_nan=False) + "\n")
    return path


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, never a window
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - the bench extra installs it
        raise RuntimeError("charts need matplotlib: pip install -e '.[bench]'") from exc
    return plt


def bar_chart(
    path: Path,
    title: str,
    labels: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    unit: str,
    log_scale: bool = False,
    note: str = "",
) -> Path:
    """Horizontal grouped bars: one group per label, one bar per series."""
    plt = _pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    height = max(3.0, 0.5 * len(labels) * max(1, len(series)) ** 0.5 + 1.5)
    fig, ax = plt.subplots(figsize=(10, height))
    count = max(1, len(series))
    width = 0.8 / count
    for index, (name, values) in enumerate(series.items()):
        positions = [i + (index - (count - 1) / 2) * width for i in range(len(labels))]
        clean = [v if v is not None and v > 0 else 0 for v in values]
        bars = ax.barh(positions, clean, height=width, label=name)
        for bar, value in zip(bars, values, strict=True):
            if value is not None:
                ax.annotate(
                    _short(value),
                    (bar.get_width(), bar.get_y() + bar.get_height() / 2),
                    xytext=(3, 0),
                    textcoords="offset points",
                    va="center",
                    fontsize=7,
                )
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    if log_scale:
        ax.set_xscale("log")
    ax.set_xlabel(unit)
    ax.set_title(title, fontsize=10)
    if len(series) > 1:
        ax.legend(fontsize=8, loc="best")
    if note:
        fig.text(0.01, 0.01, note, fontsize=7, color="grey")
    fig.tight_layout(rect=(0, 0.03 if note else 0, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def line_chart(
    path: Path,
    title: str,
    series: Mapping[str, Sequence[tuple[float, float | None, str]]],
    x_label: str,
    y_label: str,
    note: str = "",
) -> Path:
    """Lines on log-log axes, one per series of (x, y, label) points; a label is written beside its point."""
    plt = _pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(10, 6))
    for name, points in series.items():
        shown = [(x, y) for x, y, _ in points if y is not None and y > 0]
        if not shown:
            continue
        style = "--" if name.endswith("p99") else "-"
        (line,) = ax.plot([x for x, _ in shown], [y for _, y in shown], style, marker="o", label=name)
        for x, y, label in points:
            if label and y is not None and y > 0:
                ax.annotate(
                    label, (x, y), xytext=(4, 4), textcoords="offset points", fontsize=7, color=line.get_color()
                )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    if note:
        fig.text(0.01, 0.01, note, fontsize=7, color="grey")
    fig.tight_layout(rect=(0, 0.03 if note else 0, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _short(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def ratio_table(ratios: dict[str, Any], targets: dict[str, tuple[str, float]]) -> Table:
    """Each ratio beside its target and whether it holds."""
    table = Table(title="ratios", title_justify="left")
    table.add_column("name")
    table.add_column("measured", justify="right")
    table.add_column("target", justify="right")
    table.add_column("holds")
    for name, value in ratios.items():
        comparison, bound = targets.get(name, ("", 0.0))
        if value is None or not comparison:
            holds = "?"
        else:
            holds = "yes" if (value <= bound if comparison == "<=" else value >= bound) else "NO"
        shown = "n/a" if value is None else f"{value:g}"
        table.add_row(name, shown, f"{comparison} {bound:g}" if comparison else "", holds)
    return table


def ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
