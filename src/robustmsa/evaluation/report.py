"""Tables from tidy result rows: mean ± std over seeds, robustness summaries, Markdown and CSV."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from robustmsa.data.io import atomic_write_bytes
from robustmsa.evaluation.robustness import auilc, mean_over_rates


def _numeric(values: list[str]) -> list[float] | None:
    try:
        return [float(v) for v in values]
    except ValueError:
        return None


def summary_table(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Rows = methods, columns = protocol parameter values (in first-seen order), cells =
    'mean ± std' over seeds; for numeric sweeps also the mean over rates and AUILC (both
    computed per seed, then mean ± std)."""
    data = rows[rows["metric"] == metric]
    params = list(dict.fromkeys(data["param"]))
    methods = list(dict.fromkeys(data["method"]))
    rates = _numeric(params)
    table = {}
    for method in methods:
        mine = data[data["method"] == method]
        per_seed = mine.pivot_table(index="seed", columns="param", values="value", aggfunc="mean")[params]
        cells = {p: _mean_std(per_seed[p].to_numpy()) for p in params}
        if rates is not None and len(rates) > 1:
            curves = per_seed.to_numpy()
            cells["mean"] = _mean_std(np.array([mean_over_rates(rates, c) for c in curves]))
            cells["AUILC"] = _mean_std(np.array([auilc(rates, c) for c in curves]))
        table[method] = cells
    frame = pd.DataFrame.from_dict(table, orient="index")
    frame.index.name = "method"
    return frame


def _mean_std(values: np.ndarray) -> str:
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.3f}" if abs(values[0]) < 10 else f"{values[0]:.2f}"
    digits = 3 if np.abs(values).max() < 10 else 2
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub-Markdown table (no tabulate dependency)."""
    header = [table.index.name or ""] + [str(c) for c in table.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for index, row in table.iterrows():
        lines.append("| " + " | ".join([str(index)] + [str(v) for v in row.tolist()]) + " |")
    return "\n".join(lines)


def write_csv(rows: pd.DataFrame, path: str | Path) -> Path:
    buffer = io.StringIO()
    rows.to_csv(buffer, index=False)
    path = Path(path)
    atomic_write_bytes(path, buffer.getvalue().encode())
    return path
