"""Figures, and the summary beside them, from every results file in a folder.

    python plot_results.py [--results_dir results]

Reads every DIR/*.json, skips (and names) any that is unreadable or not a completed run, and writes
DIR/figures/*.png, with DIR/summary.md and DIR/summary.json from summary.py (mean ± std with a 95 %
confidence interval per method, and McNemar's exact test against full fine-tuning). A folder of
learning-curve runs (compare.py --train_sizes) gets dev accuracy against the number of training sentences.
A folder holding gpu_report.py's gpu_report.json (results/ does) also gets DIR/gpu_report.png, its benchmark
against the GPU issue's targets.
The same runs give byte-identical files (tests/test_plot_results.py).
"""

import argparse
import math
import os
import statistics
import sys

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402

from methods import METHODS  # noqa: E402
from results import load_results, measured_with, read_json  # noqa: E402
from summary import (  # noqa: E402
    QUANTITIES,
    all_paired,
    at_majority_class,
    counted,
    group_by_method,
    learning_curve,
    mcnemar_against_full,
    summarise,
    train_size_of,
    write_curve_summary,
    write_summary,
)

# One colour per method, the same in every figure.
COLOURS = {name: plt.get_cmap("tab10")(i % 10) for i, name in enumerate(METHODS)}


def colour(label):
    return COLOURS.get(label.split(" @ ")[0], "grey")


# Quantities that span decades: full fine-tuning trains 1,000 times the parameters of a prompt.
LOG_SCALE = {"trainable"}


def bar_label(value):
    """Three significant digits, trailing zeros kept: 71.0 beside 88.8 reads as the same precision, not 71."""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:#.3g}".rstrip(".")


def bar_panel(axis, table, groups, key):
    title, label, get, scale, _ = QUANTITIES[key]
    methods = list(table)
    means = [table[m][key]["mean"] for m in methods]
    # No error bar where there is no spread: a single run (None), or runs that agree, e.g. parameter counts.
    stds = [table[m][key]["std"] or None for m in methods]
    if all(mean is None for mean in means):  # e.g. GPU memory of runs on a CPU
        axis.text(0.5, 0.5, "not measured\n(runs on a CPU)", transform=axis.transAxes, ha="center", va="center")
        axis.set_yticks([])
        axis.set_xlim(-0.5, len(methods) - 0.5)  # the names under where the bars would be, as in the next panel
    else:
        colours = [colour(m) for m in methods]
        spread = [math.nan if std is None else std for std in stds] if any(s is not None for s in stds) else None
        bars = axis.bar(range(len(methods)), [m or 0 for m in means], yerr=spread, capsize=4, color=colours)
        for i, (bar, method, mean, std) in enumerate(zip(bars, methods, means, stds)):
            values = [get(run) * scale for run in groups[method] if get(run) is not None]
            if len(set(values)) > 1:  # each run as a dot: mean ± std cannot show a seed that collapsed
                offsets = [0.5 * bar.get_width() * (k / (len(values) - 1) - 0.5) for k in range(len(values))]
                axis.plot([i + o for o in offsets], values, "o", color="black", alpha=0.6, markersize=3.5, label="_run")
            text = "n/a" if mean is None else bar_label(mean)
            top = max([bar.get_height() + (std or 0), *values])  # above the error bar and the dots
            axis.annotate(
                text, (i, top), ha="center", va="bottom", xytext=(0, 3), textcoords="offset points", fontsize=8
            )
        if key in LOG_SCALE:
            axis.set_yscale("log")
            axis.margins(y=0.3)  # room for the labels above the bars, in decades
        else:
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


def bar_figure(table, groups, keys, title):
    fig, axes = plt.subplots(1, len(keys), figsize=(4.4 * len(keys), 4.4))
    for axis, key in zip(axes, keys):
        bar_panel(axis, table, groups, key)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


MARKERS, LINES = "osD^v", ("-", "--", ":", "-.")


def variant_counter():
    """Numbers each method's variants (other rates, recipes) 0, 1, ...: they share its colour, and differ in
    marker and line, so that two rates of one method stay apart."""
    seen = {}

    def variant(label):
        base = label.split(" @ ")[0]
        seen[base] = seen.get(base, -1) + 1
        return seen[base]

    return variant


def what_marks(groups, mean="mean over runs"):
    """The title's word on what a mark is: with one run per method, no mean and no faint run to speak of."""
    return "one run each" if all(len(runs) == 1 for runs in groups.values()) else f"{mean}; faint: each run"


def pareto(table, groups):
    """Accuracy against trainable parameters (log scale): what each method buys per parameter."""
    fig, axis = plt.subplots(figsize=(7, 4.6))
    variant_of = variant_counter()
    for method, row in table.items():
        x, y = row["trainable"]["mean"], row["accuracy"]["mean"]
        if x is None or y is None:
            continue
        variant = variant_of(method)
        axis.errorbar(
            x * 1e6,
            y,
            yerr=row["accuracy"]["std"] or None,  # no spread (one run, or runs that agree): no bar
            fmt=MARKERS[variant % len(MARKERS)],
            capsize=4,
            markersize=7,
            color=colour(method),
            label=f"{method} ({row['accuracy']['runs']})",
        )
        runs = [(run["params"]["trainable"], 100 * run["metrics"]["eval_accuracy"]) for run in groups[method]]
        if len({accuracy for _, accuracy in runs}) > 1:  # each run, faint, as in the other figures
            marker = MARKERS[variant % len(MARKERS)]
            axis.plot(*zip(*runs), marker, color=colour(method), alpha=0.35, markersize=4, label="_run")
    axis.set_xscale("log")
    axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # labelled minor ticks collide
    show_two_decades(axis)
    axis.set_xlabel("trainable parameters (log scale)")
    axis.set_ylabel("dev accuracy (%)")
    axis.set_title(f"Accuracy vs trainable parameters\n({what_marks(groups, 'mean ± std over runs')})", fontsize=11)
    axis.grid(alpha=0.3, which="both")
    axis.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, title="method (runs)")
    fig.tight_layout()
    return fig


def show_two_decades(axis):
    """Widens a log x axis, on the nearer side each time, until two labelled powers of ten are inside: full
    fine-tuning and prefix tuning of BERT-base (109M and 14.8M) would otherwise be read against 10^8 alone."""
    low, high = axis.get_xlim()
    while math.floor(math.log10(high)) - math.ceil(math.log10(low)) < 1:
        below, above = 10 ** math.floor(math.log10(low)), 10 ** math.ceil(math.log10(high))
        if math.log10(low / below) <= math.log10(above / high):
            low = below / 1.2
        else:
            high = above * 1.2
    axis.set_xlim(low, high)


def accuracy_per_epoch(groups):
    fig, axis = plt.subplots(figsize=(7, 4.6))
    last, variant_of = 0, variant_counter()
    for method, runs in groups.items():
        curves = [
            [
                (row["epoch"], 100 * row["eval_accuracy"])
                for row in run["history"]
                if row.get("eval_accuracy") is not None
            ]
            for run in runs
        ]
        by_epoch = {}
        for epoch, accuracy in (point for curve in curves for point in curve):
            by_epoch.setdefault(epoch, []).append(accuracy)
        epochs = sorted(by_epoch)
        if epochs:
            means = [statistics.fmean(by_epoch[e]) for e in epochs]
            variant = variant_of(method)
            style = {"marker": MARKERS[variant % len(MARKERS)], "linestyle": LINES[variant % len(LINES)]}
            axis.plot(epochs, means, **style, color=colour(method), label=f"{method} ({len(runs)})")
            if len(runs) > 1:  # each run as well: a mean (or a band around it) hides a seed that collapsed
                for curve in curves:
                    x, y = zip(*curve) if curve else ((), ())
                    axis.plot(
                        x, y, **style, color=colour(method), alpha=0.35, linewidth=0.8, markersize=3, label="_run"
                    )
            last = max(last, epochs[-1])
    axis.set_xlim(0, last * 1.05 if last else 1)  # from the start of training, even for a single epoch
    axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axis.set_xlabel("epoch")
    axis.set_ylabel("dev accuracy (%)")
    axis.set_title(f"Dev accuracy per epoch ({what_marks(groups)})")
    axis.grid(alpha=0.3)
    axis.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, title="method (runs)")
    fig.tight_layout()
    return fig


CONTROL = "head"  # the head-only control: dashed, the line every method must clear


def accuracy_vs_train_size(curve, records):
    """Dev accuracy against training sentences (log axis): mean over seeds, band: its 95 % interval, and each
    seed's run as a faint dot. A method at a single size has no band to draw, so it gets an error bar. The
    methods sit side by side around each size, so that their bars and dots do not hide one another."""
    fig, axis = plt.subplots(figsize=(7.4, 4.8))
    sizes = list(curve["sizes"])
    groups = {size: group_by_method([r for r in records if train_size_of(r) == size]) for size in sizes}
    methods = list(dict.fromkeys(m for entry in curve["sizes"].values() for m in entry["methods"]))
    single = set()
    for index, method in enumerate(methods):
        points = [
            (s, curve["sizes"][s]["methods"][method]["accuracy"])
            for s in sizes
            if method in curve["sizes"][s]["methods"]
        ]
        if len(points) == 1:
            single.add(method)
        shift = 1.04 ** (index - (len(methods) - 1) / 2)  # along the log axis: the same gap at every size
        xs, means = [s * shift for s, _ in points], [cell["mean"] for _, cell in points]
        runs = max(cell["runs"] for _, cell in points)
        style = "--" if method.split(" @ ")[0] == CONTROL else "-"
        axis.plot(xs, means, style, marker="o", color=colour(method), label=f"{method} ({runs})")
        halves = [cell["ci95"] for _, cell in points]
        if any(h is not None for h in halves):
            halves = [h or 0.0 for h in halves]
            if method in single:
                axis.errorbar(xs, means, yerr=halves, fmt="none", ecolor=colour(method), capsize=3)
            else:
                low, high = [m - h for m, h in zip(means, halves)], [m + h for m, h in zip(means, halves)]
                axis.fill_between(xs, low, high, color=colour(method), alpha=0.12, linewidth=0)
        runs = [
            (x, 100 * run["metrics"]["eval_accuracy"]) for (s, _), x in zip(points, xs) for run in groups[s][method]
        ]
        axis.plot(*zip(*runs), "o", color=colour(method), alpha=0.35, markersize=3, label="_run")
    if curve["majority_class"] is not None:
        axis.axhline(curve["majority_class"], color="black", linestyle=":", linewidth=1)
        axis.annotate(
            f"majority class {curve['majority_class']:.1f} %",
            (sizes[0], curve["majority_class"]),
            xytext=(0, 3),
            textcoords="offset points",
            fontsize=8,
        )
    axis.set_xscale("log")
    axis.set_xticks(sizes, [f"{s:,}" for s in sizes])
    axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axis.set_xlabel("training sentences (log scale)")
    axis.set_ylabel("dev accuracy (%)")
    axis.set_title(
        f"Dev accuracy vs training data\n{curve['budget']}\n"
        f"{interval_marks(len(single), len(methods))}: 95 % CI over seeds; faint dots: each seed",
        fontsize=10,
    )
    axis.grid(alpha=0.3, which="both")
    axis.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, title="method (seeds)")
    fig.tight_layout()
    return fig


def interval_marks(single, methods) -> str:
    """How accuracy_vs_train_size draws the intervals, for its title."""
    return "bars" if single == methods else "band" if not single else "band (a bar at a method's only size)"


def draw_figures(groups, table) -> dict:
    """{file name: figure}, drawn from the summary table, and each run's own mark from the runs."""
    return {
        "accuracy_loss_params.png": bar_figure(
            table, groups, ["accuracy", "train_loss", "trainable"], "Accuracy, loss and trainable parameters"
        ),
        "memory_time.png": bar_figure(table, groups, ["memory", "time"], "Cost: peak GPU memory and training time"),
        "accuracy_per_epoch.png": accuracy_per_epoch(groups),
        "accuracy_vs_parameters.png": pareto(table, groups),
    }


# The GPU issue's targets for the fast recipe on BERT-base (#11), per method: its step at least this many times
# as fast as the original recipe's, its peak allocated memory at most this many (decimal) GB, and the original's
# protocol (ten epochs with an evaluation after each) projected in at most this many minutes.
GPU_TARGETS = {"full": (6, 1.9, 5), "prefix": (4, 0.9, 4)}
# What the original experiment reported for its ten epochs on its own GPU (the README's first table).
ORIGINAL_EXPERIMENT = {"full": {"memory_mb": 2526, "time_s": 8632}, "prefix": {"memory_mb": 1495, "time_s": 6864}}
GPU_BARS = (  # (label, hatch, alpha) of the bars in a method's group, left to right
    ("original recipe (fp32, eager), measured", "", 0.45),
    ("fast recipe, measured", "", 1.0),
    ("the original experiment, as it reported (its GPU)", "//", 0.25),
)
TARGET_LABEL = "the target for the fast recipe"
LABEL_BOX = {"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.8}  # over lines


def gpu_panels(method, original, fast):
    """Per panel of the GPU figure: (title, y label, the bars' values (the original recipe's, the fast recipe's,
    the original experiment's; None: no bar), the fast recipe's target, its label)."""
    speedup, peak_gb, minutes = GPU_TARGETS[method]
    reported = ORIGINAL_EXPERIMENT[method]
    protocol = lambda row: row and row.get("projected_protocol_s")  # noqa: E731  (None: no row, or none projected)
    return (
        (
            "Time per training step",
            "ms per step (batch 16)",
            (original and original["ms_per_step"], fast["ms_per_step"], None),
            original and original["ms_per_step"] / speedup,  # a multiple of the original recipe's step
            f"{speedup}× target",
        ),
        (
            "Peak allocated GPU memory",
            "MiB",
            (original and original["peak_memory_mb"], fast["peak_memory_mb"], reported["memory_mb"]),
            peak_gb * 1e9 / 2**20,
            f"{peak_gb} GB target",
        ),
        (
            "The original's protocol (10 epochs), projected",
            "minutes (log scale)",
            tuple(None if s is None else s / 60 for s in (protocol(original), protocol(fast), reported["time_s"])),
            minutes,
            f"{minutes} min target",
        ),
    )


def gpu_report_figure(report):
    """gpu_report.json's benchmark drawn: per method, the step time, the peak allocated memory and the original's
    protocol projected, under the original and the fast recipe, beside what the original experiment reported,
    each against the issue's target for the fast recipe (a dashed line). Rows of variants are left out; None
    when the report has no fast row to draw."""
    rows = {(r["method"], r["recipe"]): r for r in report.get("bench", []) if not r.get("variant") and "error" not in r}
    methods = [m for m in GPU_TARGETS if (m, "fast") in rows]
    if not methods:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(14.5, 4.9))
    width = 0.27
    for i, method in enumerate(methods):
        fast = rows[method, "fast"]
        panels = gpu_panels(method, rows.get((method, "original")), fast)
        for axis, (title, label, heights, goal, goal_label) in zip(axes, panels):
            for k, ((name, hatch, alpha), height) in enumerate(zip(GPU_BARS, heights)):  # one legend entry each
                if height is None:
                    continue
                x = i + (k - 1) * width
                axis.bar(x, height, width, color=colour(method), alpha=alpha, hatch=hatch, edgecolor="black",
                         linewidth=0.5, label=name if i == 0 else "_")  # fmt: skip
                axis.annotate(bar_label(height), (x, height), ha="center", va="bottom", xytext=(0, 2),
                              textcoords="offset points", fontsize=7.5, bbox=LABEL_BOX, zorder=4)  # fmt: skip
            if goal:  # the step's target needs the original recipe's row
                axis.hlines(goal, i - 1.6 * width, i + 1.6 * width, colors="black", linestyles="--", linewidth=1.2,
                            label=TARGET_LABEL if i == 0 else "_")  # fmt: skip
                axis.annotate(goal_label, (i + 1.6 * width, goal), ha="right", va="top", xytext=(0, -2),
                              textcoords="offset points", fontsize=7.5, bbox=LABEL_BOX, zorder=4)  # fmt: skip
            axis.set_title(title)
            axis.set_ylabel(label)
        if fast.get("speedup"):
            axes[0].annotate(f"{fast['speedup']}×", (i, fast["ms_per_step"] / 2), ha="center", va="center",
                             fontsize=8, color="white", fontweight="bold")  # fmt: skip
    axes[2].set_yscale("log")  # 144 minutes beside 5: decades
    for axis in axes:
        axis.margins(y=0.25 if axis is axes[2] else 0.12)
        axis.set_xticks(range(len(methods)), [f"{m} {'fine-tuning' if m == 'full' else 'tuning'}" for m in methods])
    if not any(row.get("peak_memory_mb") for row in rows.values()):  # a report made on a CPU (--use_cpu)
        axes[1].text(0.5, 0.45, "none measured here\n(a run on a CPU)", transform=axes[1].transAxes, ha="center",
                     va="center", bbox=LABEL_BOX)  # fmt: skip
    entries = {}  # the legend's, from every panel: a CPU's report has no measured bar in the memory panel
    for axis in axes:
        for handle, name in zip(*axis.get_legend_handles_labels()):
            entries.setdefault(name, handle)
    names = [name for name in [*(bar[0] for bar in GPU_BARS), TARGET_LABEL] if name in entries]
    fig.legend([entries[n] for n in names], names, loc="lower center", ncol=len(names), fontsize=8, frameon=False)
    machines = {}  # the card, torch and commit of each method's rows: parts may come from different windows
    for row in rows.values():
        env = measured_with(report, row)
        methods_there = machines.setdefault((env["device"], env["torch"], str(env.get("git_commit"))[:12]), [])
        if row["method"] not in methods_there:
            methods_there.append(row["method"])
    quick = any("--quick" in command.split() for command in report.get("commands", {}).values())
    model = "A small BERT (--quick, the script check)" if quick else "BERT-base, random init"
    if len(machines) == 1:
        ((device, torch_version, commit),) = machines
        fig.suptitle(
            f"{model} on {device}: the original recipe against the fast one (torch {torch_version}, commit {commit})"
        )
    else:
        fig.suptitle(
            f"{model}: the original recipe against the fast one\n"
            + "; ".join(f"{', '.join(m)} on {d} (torch {t}, commit {c})" for (d, t, c), m in machines.items())
        )
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def draw_gpu_report(folder):
    """DIR/gpu_report.png from DIR/gpu_report.json, gpu_report.py's report, where the folder holds one with
    benchmark rows: the figure's path, or None."""
    path = os.path.join(folder, "gpu_report.json")
    if not os.path.exists(path):
        return None
    try:
        report = read_json(path)
    except (OSError, ValueError):
        return None  # load_results names it among the files it skipped
    figure = gpu_report_figure(report) if isinstance(report, dict) and report.get("kind") == "gpu_report" else None
    if figure is None:
        return None
    drawn = os.path.join(folder, "gpu_report.png")
    figure.savefig(drawn, dpi=120)
    plt.close(figure)
    print(f"{path} -> {drawn}")
    return drawn


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results_dir", default="results", help="folder with the runs' JSON files")
    args = parser.parse_args(argv)

    gpu_figure = draw_gpu_report(args.results_dir)
    records, skipped = load_results(args.results_dir)
    for path, reason in skipped:
        print(f"skipped {path}: {reason}")
    if not records and gpu_figure:  # a fresh clone's results/: the committed GPU report, and no runs yet
        print(
            f"no completed runs in {args.results_dir}/*.json to draw beside it: train one (python train_finetune.py)."
        )
        return 0
    if not records:
        print(
            f"error: no completed runs in {args.results_dir}/*.json; train one first (python train_finetune.py), "
            "or draw a committed set (python plot_results.py --results_dir results/reference/compare-minilm-4000).",
            file=sys.stderr,
        )
        return 1

    figures = os.path.join(args.results_dir, "figures")
    os.makedirs(figures, exist_ok=True)
    if any(train_size_of(r) for r in records):  # a learning curve: sizes, not methods, side by side
        curve = learning_curve(records)
        drawn = {"accuracy_vs_train_size.png": accuracy_vs_train_size(curve, records)}
        write_curve_summary(curve, args.results_dir)
        what = counted(len(curve["sizes"]), "training-set size")
    else:
        groups = group_by_method(records)
        table = summarise(groups)
        drawn = draw_figures(groups, table)
        tests, paired, stalled = mcnemar_against_full(groups), all_paired(groups), at_majority_class(groups)
        write_summary(table, tests, args.results_dir, paired, stalled)
        for row in stalled:  # a mean over seeds hides these: say so where the user looks
            print(f"note: {row['run_name']} ({row['method']}, seed {row['seed']}): {row['what']}, see summary.md")
        what = counted(len(groups), "method")
    for name, fig in drawn.items():
        fig.savefig(os.path.join(figures, name), dpi=120)
        plt.close(fig)
    print(
        f"{counted(len(records), 'run')} of {what} -> {figures}/*.png, "
        f"{os.path.join(args.results_dir, 'summary.md')}, summary.json"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
