"""Tables from tidy result rows: mean ± std over seeds, robustness summaries, Markdown and CSV."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from robustmsa.data.io import atomic_write_bytes
from robustmsa.data.schema import MODALITY_ALIASES
from robustmsa.evaluation.robustness import auilc, mean_over_rates


# Columns that hold ids or labels, never numbers: a config hash like 7721618e2741 parses as inf.
TEXT_COLUMNS = ("method", "protocol", "param", "realised", "metric", "split", "checkpoint", "dataset", "variant",
                "data_sha256", "config_hash", "job")
LOWER_IS_BETTER = {"mae"}
ACC2_NOTE = ("acc2_non0 / f1_non0: binary accuracy / weighted F1 (%) of positive vs negative sentiment over the "
             "samples whose label is not 0; acc2_has0 / f1_has0 split >= 0 vs < 0 over all samples")
AUILC_NOTE = ("AUILC: area under the metric-vs-rate curve divided by the rate range (trapezoid rule), "
              "so a flatter curve at the same start scores higher")


def read_results(path: str | Path) -> pd.DataFrame:
    """Tidy result rows from a CSV written by `write_csv`: id-like columns as text, values as floats."""
    header = pd.read_csv(path, nrows=0).columns
    rows = pd.read_csv(path, dtype={c: str for c in TEXT_COLUMNS if c in header}, keep_default_na=False)
    rows["value"] = pd.to_numeric(rows["value"].replace("", np.nan)).astype(float)
    return rows


def direction(metric: str) -> str:
    return "lower is better" if metric in LOWER_IS_BETTER else "higher is better"


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
        cells = {p: mean_std(per_seed[p].to_numpy()) for p in params}
        if rates is not None and len(rates) > 1:
            curves = per_seed.to_numpy()
            cells["mean"] = mean_std(np.array([mean_over_rates(rates, c) for c in curves]))
            cells["AUILC"] = mean_std(np.array([auilc(rates, c) for c in curves]))
        table[method] = cells
    frame = pd.DataFrame.from_dict(table, orient="index")
    frame.index.name = "method"
    return frame.rename(columns=_column_labels(data, params))


def _column_labels(data: pd.DataFrame, params: list[str]) -> dict[str, str]:
    """Parameters as a reader should see them: a subset by its modality names ({text,audio},
    not l,a) and a modality rate with the rate it realises when that differs (0.7 (0.667))."""
    labels = {}
    realised = data.drop_duplicates("param").set_index("param")["realised"] if "realised" in data else {}
    for param, protocol in data.drop_duplicates("param")[["param", "protocol"]].itertuples(index=False):
        if protocol == "subset":
            labels[param] = "{" + ",".join(MODALITY_ALIASES.get(m, m) for m in param.split(",")) + "}"
        elif protocol == "modality" and isinstance(realised.get(param), str) and realised[param]:
            labels[param] = f"{param} ({realised[param]})"
    return labels


def mean_std(values: np.ndarray) -> str:
    """A table cell: mean ± sample std of the finite values; a lone value as is; "n/a" when none."""
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


def _subset_average(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    """FSRF-style 'Avg' column: per seed, the mean over the incomplete kept sets."""
    data = rows[(rows["metric"] == metric) & (rows["protocol"] == "subset")]
    per_seed = data.groupby(["method", "seed"])["value"].mean().reset_index()
    return per_seed.groupby("method")["value"].apply(lambda v: mean_std(v.to_numpy())).rename("Avg").to_frame()


def protocol_table(rows: pd.DataFrame, protocol: str, metric: str) -> pd.DataFrame:
    """Summary table of one protocol family; subset tables get Avg and the complete set, disrupt
    tables the undisrupted column."""
    table = summary_table(rows[rows["protocol"] == protocol], metric)
    if protocol == "subset":
        table = table.join(_subset_average(rows, metric))
    if protocol in ("subset", "disrupt") and (rows["protocol"] == "none").any():
        label = "complete" if protocol == "subset" else "no disruption"
        complete = summary_table(rows[rows["protocol"] == "none"].assign(param=label), metric)
        table = complete.join(table) if protocol == "disrupt" else table.join(complete)
    return table


def plot_curves(rows: pd.DataFrame, protocol: str, metric: str, path: str | Path, title: str = "") -> Path:
    """Metric vs rate, one line per method with a ±1 std band over seeds; PNG written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = rows[(rows["protocol"] == protocol) & (rows["metric"] == metric)].copy()
    data["rate"] = data["param"].astype(float)
    seeds = data["seed"].nunique()
    figure, axes = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    colours = plt.get_cmap("tab10")
    for index, (method, mine) in enumerate(data.groupby("method", sort=False)):
        stats = mine.groupby("rate")["value"].agg(["mean", "std"]).fillna(0.0)
        style = "--" if _is_baseline(method) else "-"  # seven curves stay apart: baselines dashed
        axes.plot(stats.index, stats["mean"], style, marker="os^vDP*X"[index % 8], color=colours(index % 10),
                  label=method + (" (baseline)" if style == "--" else ""))
        axes.fill_between(stats.index, stats["mean"] - stats["std"], stats["mean"] + stats["std"], alpha=0.12,
                          color=colours(index % 10))
    rates = sorted(set(data["param"]), key=float)
    labels = _column_labels(data, rates)
    if labels:  # the realised rate under the one asked for, as in the tables
        axes.set_xticks([float(r) for r in rates], [labels.get(r, r).replace(" (", "\n(") for r in rates])
    axes.set_xlabel(f"{protocol} missing rate")
    axes.set_ylabel(f"{metric} ({direction(metric)})")
    axes.set_title((title or f"{metric} under the {protocol} protocol")
                   + f"\nline: mean over {seeds} seed(s); band: ±1 std over seeds", fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    path = Path(path)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _is_baseline(method: str) -> bool:
    """A method defined among the baselines (late_fusion, mean_impute, mult_lite, misa)."""
    from robustmsa.methods.base import method_class

    try:
        return method_class(method.split(" [")[0]).__module__.endswith(".baselines")
    except KeyError:  # an ablation variant label or a name from elsewhere
        return False


def bench_report(rows: pd.DataFrame, grid, out: str | Path, command: str = "") -> tuple[str, list[Path]]:
    """The Markdown report of a bench grid (tables, summaries, provenance) and its PNG plots."""
    from robustmsa.evaluation.metrics import METRICS_VERSION

    out = Path(out)
    lines = [f"# robustmsa bench: {grid.name}", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += [
        f"- seeds: {sorted(set(rows['seed']))}; cells are mean ± std over seeds (sample std)",
        f"- model selection: validation split only; tables on the `{rows['split'].iloc[0]}` split",
        f"- metric definitions: {METRICS_VERSION}; "
        + "; ".join([*([ACC2_NOTE] if "acc2_non0" in set(rows["metric"]) else []), AUILC_NOTE,
                     "mae: mean absolute error (lower is better)"]),
    ]
    for column, what in (("selection", "checkpoint selected on"), ("budget", "optimizer steps per epoch")):
        if column in rows:  # the fair-comparison rules every method of the table ran under
            lines.append(f"- {what}: {'; '.join(sorted(set(rows[column].dropna().astype(str))))}")
    if "torch_threads" in rows:  # same seed gives the same numbers only at the same thread count
        lines.append(f"- torch threads per training run: {sorted(set(rows['torch_threads']))}")
    if grid.skipped_methods:
        lines.append(f"- not registered, so not run: {', '.join(grid.skipped_methods)}")
    if getattr(grid, "variant_rows", False):  # an ablation: the variants are the rows of one table
        rows = rows.assign(method=[v if len(grid.methods) == 1 else f"{m} [{v}]" for m, v in zip(rows["method"], rows["variant"])],
                           variant="")
    plots = []
    for dataset, by_data in rows.groupby("dataset", sort=False):
        lines += ["", f"## Dataset `{dataset}`", "", f"sha256 `{by_data['data_sha256'].iloc[0]}`", ""]
        hashes = by_data.groupby(["method", "variant"], sort=False)["config_hash"].first()
        lines += ["Config hashes: " + ", ".join(f"{m}{' [' + v + ']' if v else ''} `{h}`" for (m, v), h in hashes.items())]
        lines += ["", collapsed_runs(by_data)]
        family = metric_family_of(by_data)
        for variant, part in by_data.groupby("variant", sort=False):
            heading = f"training variant `{variant}`" if variant else "default training"
            for protocol in dict.fromkeys(p for p in part["protocol"] if p != "none" or set(part["protocol"]) == {"none"}):
                present = set(part["metric"])
                for metric in [m for m in grid.metrics.get(family, sorted(present)) if m in present]:
                    lines += ["", f"### {metric} ({direction(metric)}), protocol `{protocol}`, {heading}", ""]
                    lines.append(to_markdown(protocol_table(part, protocol, metric)))
                    if protocol in ("modality", "frame"):
                        name = _slug(f"{Path(dataset).stem}-{variant}-{protocol}-{metric}") + ".png"
                        plots.append(plot_curves(part, protocol, metric, out / "plots" / name,
                                                 f"{metric} vs {protocol} rate ({Path(dataset).name}{', ' + variant if variant else ''})"))
                        lines += ["", f"![{metric} vs {protocol} rate](plots/{name})"]
    return "\n".join(lines) + "\n", plots


def collapsed_runs(rows: pd.DataFrame) -> str:
    """One line naming every run whose selected model looked collapsed (training/collapse.py)."""
    if "collapsed" not in rows:
        return "Collapsed runs: not recorded"
    runs = rows[rows["collapsed"].fillna("").astype(str) != ""].drop_duplicates(["method", "variant", "seed"])
    if runs.empty:
        return "Collapsed runs: none"
    shown = [f"{m}{' [' + v + ']' if v else ''} seed {s} ({why})"
             for m, v, s, why in runs[["method", "variant", "seed", "collapsed"]].itertuples(index=False)]
    return "**Collapsed runs** (near-constant validation predictions or no improvement after the first epoch): " + "; ".join(shown)


def metric_family_of(rows: pd.DataFrame) -> str:
    names = set(rows["metric"])
    return "mosi" if "acc2_non0" in names else "sims" if "acc3" in names else "classification"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip("_")
