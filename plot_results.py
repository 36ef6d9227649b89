"""Charts, a summary table and significance tests from every results file.

    python plot_results.py [--results_dir results]

Reads every DIR/*.json, skips (and names) any that is unreadable or not a completed run, and writes
DIR/figures/*.png, DIR/summary.md and DIR/summary.json. Several runs of one method show as
mean ± std with a 95 % confidence interval; each method is tested against full fine-tuning with
McNemar's exact test on the dev predictions of the same seed.
"""

import argparse
import os
import statistics
import sys

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402

from methods import METHODS  # noqa: E402
from results import load_results  # noqa: E402
from significance import mcnemar_exact, mean_std_ci  # noqa: E402
from utils import write_json_atomic  # noqa: E402

# One colour per method, the same in every figure.
COLOURS = {name: plt.get_cmap("tab10")(i % 10) for i, name in enumerate(METHODS)}
ALPHA = 0.05

# key: (row title, axis label, getter, scale to display units, cell format)
QUANTITIES = {
    "accuracy": ("Accuracy", "dev accuracy (%)", lambda r: r["metrics"]["eval_accuracy"], 100, "{:.2f} %"),
    "train_loss": ("Train Loss", "mean training loss", lambda r: r["metrics"]["train_loss"], 1, "{:.4f}"),
    "trainable": (
        "Trainable Params",
        "trainable parameters (millions)",
        lambda r: r["params"]["trainable"],
        1e-6,
        "{:.3g}M",
    ),
    "trainable_percent": (
        "Trainable %",
        "trainable parameters (%)",
        lambda r: r["params"]["trainable_percent"],
        1,
        "{:.3g} %",
    ),
    "memory": (
        "Max GPU Memory",
        "peak GPU memory allocated (MB)",
        lambda r: r["efficiency"]["peak_memory_mb"],
        1,
        "{:.0f} MB",
    ),
    "time": ("Training Time", "training time (s)", lambda r: r["efficiency"]["train_time_s"], 1, "{:.0f} s"),
    "adapter": ("Adapter Size", "size on disk to reuse (MB)", lambda r: r.get("adapter_size_mb"), 1, "{:.3g} MB"),
    "inference": (
        "Inference Speed",
        "dev sentences per second",
        lambda r: r["efficiency"].get("inference_samples_per_s"),
        1,
        "{:.0f}/s",
    ),
}
FIXED_BY_METHOD = {"trainable", "trainable_percent", "adapter"}  # no spread across seeds to show
ORIGINAL_ROWS = ("accuracy", "train_loss", "trainable", "memory", "time")  # the original's table, in its order


# What makes two runs of one method different experiments: averaging across these would hide it.
DISTINGUISHING = {
    "lr": lambda r: r.get("config", {}).get("training_arguments", {}).get("learning_rate"),
    "recipe": lambda r: r.get("config", {}).get("recipe"),
}


def group_by_method(records):
    """{label: [records]} in the registry's order, unknown methods last.

    The label is the method, followed by "@ lr X, recipe Y" for whatever varies among its runs.
    """
    order = {name: i for i, name in enumerate(METHODS)}
    varies = {}
    for record in records:
        for key, get in DISTINGUISHING.items():
            varies.setdefault((record["method"], key), set()).add(get(record))
    groups = {}
    for record in sorted(records, key=lambda r: (order.get(r["method"], len(order)), r["method"], r["run_name"])):
        parts = [
            f"{key} {get(record):g}" if isinstance(get(record), float) else f"{key} {get(record)}"
            for key, get in DISTINGUISHING.items()
            if len(varies[record["method"], key]) > 1
        ]
        label = record["method"] + (" @ " + ", ".join(parts) if parts else "")
        groups.setdefault(label, []).append(record)
    return groups


def colour(label):
    return COLOURS.get(label.split(" @ ")[0], "grey")


def summarise(groups):
    """{method: {quantity: {mean, std, ci95, runs}}} in display units."""
    table = {}
    for method, runs in groups.items():
        table[method] = {}
        for key, (_, _, get, scale, _) in QUANTITIES.items():
            values = [get(r) * scale for r in runs if get(r) is not None]
            mean, std, half = mean_std_ci(values)
            table[method][key] = {"mean": mean, "std": std, "ci95": half, "runs": len(values)}
    return table


def seed_of(record):
    return record.get("config", {}).get("training_arguments", {}).get("seed")


def mcnemar_against_full(groups):
    """{label: [{seed, only_full_right, only_method_right, p, verdict}]} over runs paired by seed.

    The reference for a seed is full fine-tuning's run with that seed (the newest, if there are several).
    """
    full_runs = [r for label, runs in groups.items() if is_full(label) for r in runs if "predictions" in r]
    full = {seed_of(r): r for r in sorted(full_runs, key=lambda r: r.get("created_at", ""))}
    tests = {}
    for method, runs in groups.items():
        if is_full(method):
            continue
        for run in runs:
            reference = full.get(seed_of(run))
            if reference is None or "predictions" not in run or run.get("labels") != reference.get("labels"):
                continue
            b, c, p = mcnemar_exact(reference["predictions"], run["predictions"], run["labels"])
            verdict = "no significant difference" if p >= ALPHA else ("full better" if b > c else f"{method} better")
            tests.setdefault(method, []).append(
                {"seed": seed_of(run), "only_full_right": b, "only_method_right": c, "p_value": p, "verdict": verdict}
            )
    return tests


def is_full(label):
    return label.split(" @ ")[0] == "full"


def format_cell(cell, template, with_ci=False, with_spread=True):
    if cell["mean"] is None:
        return "n/a"
    text = template.format(cell["mean"])
    if cell["std"] is not None and with_spread:
        unit = template.format(cell["std"])
        text += " ± " + unit.split(" ")[0].rstrip("M/s")
        if with_ci:
            text += f" (95 % CI ± {template.format(cell['ci95']).split(' ')[0]})"
    return text


def write_summary(table, tests, folder):
    methods = list(table)
    runs = {m: max(cell["runs"] for cell in table[m].values()) for m in methods}
    lines = [
        "| | " + " | ".join(f"{m} ({runs[m]} run{'s' * (runs[m] != 1)})" for m in methods) + " |",
        "|---|" + "---|" * len(methods),
    ]
    for key in (*ORIGINAL_ROWS, *(k for k in QUANTITIES if k not in ORIGINAL_ROWS)):
        title, _, _, _, template = QUANTITIES[key]
        cells = [
            format_cell(table[m][key], template, with_ci=key == "accuracy", with_spread=key not in FIXED_BY_METHOD)
            for m in methods
        ]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Mean ± sample standard deviation over runs; the accuracy's 95 % confidence interval uses "
        "Student's t. Memory is n/a for runs on a CPU.",
    ]
    if tests:
        lines += [
            "",
            f"## Against full fine-tuning: McNemar's exact test (two-sided, α = {ALPHA})",
            "",
            "| method | seed | only full right | only method right | p | verdict |",
            "|---|---|---|---|---|---|",
        ]
        for method, rows in tests.items():
            for row in rows:
                lines.append(
                    f"| {method} | {row['seed']} | {row['only_full_right']} | {row['only_method_right']} | "
                    f"{row['p_value']:.3g} | {row['verdict']} |"
                )
    with open(os.path.join(folder, "summary.md"), "w") as handle:
        handle.write("\n".join(lines) + "\n")
    write_json_atomic(os.path.join(folder, "summary.json"), {"methods": table, "mcnemar_vs_full": tests})


def bar_panel(axis, table, key):
    title, label, *_ = QUANTITIES[key]
    methods = list(table)
    means = [table[m][key]["mean"] for m in methods]
    stds = [table[m][key]["std"] or 0 for m in methods]
    if all(mean is None for mean in means):  # e.g. GPU memory of runs on a CPU
        axis.text(0.5, 0.5, "not measured\n(runs on a CPU)", transform=axis.transAxes, ha="center", va="center")
        axis.set_yticks([])
    else:
        colours = [colour(m) for m in methods]
        bars = axis.bar(range(len(methods)), [m or 0 for m in means], yerr=stds, capsize=4, color=colours)
        for bar, mean, std in zip(bars, means, stds):
            text = "n/a" if mean is None else (f"{mean:.3g}" if abs(mean) < 1000 else f"{mean:,.0f}")
            top = (bar.get_x() + bar.get_width() / 2, bar.get_height() + std)  # above the error bar
            axis.annotate(text, top, ha="center", va="bottom", xytext=(0, 3), textcoords="offset points", fontsize=8)
        axis.margins(y=0.15)
    crowded = len(methods) > 4  # eight methods side by side: slanted names do not overlap
    names = [m.replace(" @ ", "\n") for m in methods]
    axis.set_xticks(
        range(len(methods)),
        names,
        rotation=35 if crowded else 0,
        ha="right" if crowded else "center",
        fontsize=8 if crowded else 9,
    )
    axis.set_title(title)
    axis.set_ylabel(label)


def bar_figure(table, keys, path, title):
    fig, axes = plt.subplots(1, len(keys), figsize=(4.4 * len(keys), 4.4))
    for axis, key in zip(axes, keys):
        bar_panel(axis, table, key)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def pareto(table, path):
    """Accuracy against trainable parameters (log scale): what each method buys per parameter."""
    fig, axis = plt.subplots(figsize=(7, 4.6))
    variants = {}  # a method's variants (other rates, recipes) share its colour and differ in marker
    for method, row in table.items():
        x, y = row["trainable"]["mean"], row["accuracy"]["mean"]
        if x is None or y is None:
            continue
        variant = variants[method.split(" @ ")[0]] = variants.get(method.split(" @ ")[0], -1) + 1
        axis.errorbar(
            x * 1e6,
            y,
            yerr=row["accuracy"]["std"] or 0,
            fmt="osD^v"[variant % 5],
            capsize=4,
            markersize=7,
            color=colour(method),
            label=f"{method} ({row['accuracy']['runs']})",
        )
    axis.set_xscale("log")
    axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # labelled minor ticks collide
    axis.set_xlabel("trainable parameters (log scale)")
    axis.set_ylabel("dev accuracy (%)")
    axis.set_title("Accuracy vs trainable parameters (mean ± std over runs)")
    axis.grid(alpha=0.3, which="both")
    axis.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, title="method (runs)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def learning_curves(groups, path):
    fig, axis = plt.subplots(figsize=(7, 4.6))
    for method, runs in groups.items():
        by_epoch = {}
        for run in runs:
            for row in run["history"]:
                if row.get("eval_accuracy") is not None:
                    by_epoch.setdefault(row["epoch"], []).append(100 * row["eval_accuracy"])
        epochs = sorted(by_epoch)
        if epochs:
            axis.plot(
                epochs,
                [statistics.fmean(by_epoch[e]) for e in epochs],
                marker="o",
                color=colour(method),
                label=f"{method} ({len(runs)})",
            )
    axis.set_xlabel("epoch")
    axis.set_ylabel("dev accuracy (%)")
    axis.set_title("Dev accuracy per epoch (mean over runs)")
    axis.grid(alpha=0.3)
    axis.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, title="method (runs)")
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
        print(
            f"error: no completed runs in {args.results_dir}/*.json; train one first (python train_finetune.py).",
            file=sys.stderr,
        )
        return 1

    groups = group_by_method(records)
    table = summarise(groups)
    figures = os.path.join(args.results_dir, "figures")
    os.makedirs(figures, exist_ok=True)
    bar_figure(
        table,
        ["accuracy", "train_loss", "trainable"],
        os.path.join(figures, "accuracy_loss_params.png"),
        "Accuracy, loss and trainable parameters",
    )
    bar_figure(
        table, ["memory", "time"], os.path.join(figures, "memory_time.png"), "Cost: peak GPU memory and training time"
    )
    learning_curves(groups, os.path.join(figures, "accuracy_per_epoch.png"))
    pareto(table, os.path.join(figures, "accuracy_vs_parameters.png"))
    write_summary(table, mcnemar_against_full(groups), args.results_dir)
    print(
        f"{len(records)} runs of {len(groups)} methods -> {figures}/*.png, "
        f"{os.path.join(args.results_dir, 'summary.md')}, summary.json"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
