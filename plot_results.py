"""Charts and a summary table from every results file.

    python plot_results.py [--results_dir results]

Reads every DIR/*.json, skips (and names) any that is unreadable or not a completed run,
and writes DIR/figures/*.png and DIR/summary.md. Several runs of one method show as mean ± std.
"""

import argparse
import os
import statistics
import sys

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402

from methods import METHODS  # noqa: E402
from results import load_results  # noqa: E402

# One colour per method, the same in every figure.
COLOURS = {name: plt.get_cmap("tab10")(i % 10) for i, name in enumerate(METHODS)}


def mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def group_by_method(records):
    """{method: [records]} in the registry's order, unknown methods last."""
    order = {name: i for i, name in enumerate(METHODS)}
    groups = {}
    for record in sorted(records, key=lambda r: (order.get(r["method"], len(order)), r["method"])):
        groups.setdefault(record["method"], []).append(record)
    return groups


# (title, unit label, getter, scale, format of a cell in summary.md)
QUANTITIES = {
    "accuracy": ("Accuracy", "dev accuracy (%)", lambda r: r["metrics"]["eval_accuracy"], 100, "{:.2f} %"),
    "train_loss": ("Train Loss", "mean training loss", lambda r: r["metrics"]["train_loss"], 1, "{:.4f}"),
    "trainable": ("Trainable Params", "trainable parameters (millions)", lambda r: r["params"]["trainable"], 1e-6, "{:.2f}M"),
    "memory": ("Max GPU Memory", "peak GPU memory allocated (MB)", lambda r: r["efficiency"]["peak_memory_mb"], 1, "{:.0f} MB"),
    "time": ("Training Time", "training time (s)", lambda r: r["efficiency"]["train_time_s"], 1, "{:.0f} s"),
}


def summarise(groups):
    """{method: {quantity: (mean, std, runs)}} in display units."""
    table = {}
    for method, runs in groups.items():
        table[method] = {}
        for key, (_, _, get, scale, _) in QUANTITIES.items():
            values = [get(r) * scale if get(r) is not None else None for r in runs]
            mean, std = mean_std(values)
            table[method][key] = (mean, std, len([v for v in values if v is not None]))
    return table


def format_cell(mean, std, runs, template):
    if mean is None:
        return "n/a"
    cell = template.format(mean)
    if runs > 1:
        cell += " ± " + template.format(std).split(" ")[0].rstrip("M")
    return cell


def write_summary(table, path):
    methods = list(table)
    run_counts = {m: max(v[2] for v in table[m].values()) for m in methods}
    lines = [
        "| | " + " | ".join(f"{m} ({run_counts[m]} run{'s' * (run_counts[m] != 1)})" for m in methods) + " |",
        "|---|" + "---|" * len(methods),
    ]
    for key, (title, _, _, _, template) in QUANTITIES.items():
        lines.append(f"| {title} | " + " | ".join(format_cell(*table[m][key], template) for m in methods) + " |")
    lines.append("")
    lines.append("Mean ± standard deviation over runs. Memory is n/a for runs on a CPU.")
    with open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")


def bar_panel(axis, table, key):
    title, label, *_ = QUANTITIES[key]
    methods = list(table)
    means = [table[m][key][0] for m in methods]
    stds = [table[m][key][1] or 0 for m in methods]
    positions = range(len(methods))
    heights = [m if m is not None else 0 for m in means]
    bars = axis.bar(positions, heights, yerr=stds, capsize=4, color=[COLOURS.get(m, "grey") for m in methods])
    for bar, mean in zip(bars, means):
        text = "n/a" if mean is None else (f"{mean:.3g}" if abs(mean) < 1000 else f"{mean:,.0f}")
        axis.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom",
                      xytext=(0, 3), textcoords="offset points", fontsize=8)
    axis.set_xticks(list(positions), methods, rotation=30 if len(methods) > 4 else 0, ha="right" if len(methods) > 4 else "center")
    axis.set_title(title)
    axis.set_ylabel(label)
    axis.margins(y=0.15)


def figure(table, keys, path, title):
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 4.2))
    for axis, key in zip(axes, keys):
        bar_panel(axis, table, key)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def learning_curves(groups, path):
    fig, axis = plt.subplots(figsize=(6.5, 4.2))
    for method, runs in groups.items():
        by_epoch = {}
        for run in runs:
            for row in run["history"]:
                by_epoch.setdefault(row["epoch"], []).append(100 * row["eval_accuracy"])
        epochs = sorted(by_epoch)
        if not epochs:
            continue
        means = [statistics.fmean(by_epoch[e]) for e in epochs]
        axis.plot(epochs, means, marker="o", label=f"{method} ({len(runs)} run{'s' * (len(runs) != 1)})",
                  color=COLOURS.get(method, "grey"))
    axis.set_xlabel("epoch")
    axis.set_ylabel("dev accuracy (%)")
    axis.set_title("Dev accuracy per epoch (mean over runs)")
    axis.grid(alpha=0.3)
    axis.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results_dir", default="results", help="folder with the runs' JSON files")
    args = parser.parse_args(argv)

    records, skipped = load_results(args.results_dir)
    for path, reason in skipped:
        print(f"skipped {path}: {reason}")
    if not records:
        print(f"error: no completed runs in {args.results_dir}/*.json; train one first "
              "(python train_finetune.py).", file=sys.stderr)
        return 1

    groups = group_by_method(records)
    table = summarise(groups)
    figures = os.path.join(args.results_dir, "figures")
    os.makedirs(figures, exist_ok=True)
    outputs = [
        os.path.join(figures, "accuracy_loss_params.png"),
        os.path.join(figures, "memory_time.png"),
        os.path.join(figures, "accuracy_per_epoch.png"),
        os.path.join(args.results_dir, "summary.md"),
    ]
    figure(table, ["accuracy", "train_loss", "trainable"], outputs[0], "Accuracy, loss and trainable parameters")
    figure(table, ["memory", "time"], outputs[1], "Cost: peak GPU memory and training time")
    learning_curves(groups, outputs[2])
    write_summary(table, outputs[3])
    print(f"{len(records)} runs of {len(groups)} methods -> " + ", ".join(outputs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
