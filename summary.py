"""The summary of a folder of runs: runs grouped by method, mean ± std with a 95 % interval per quantity,
and McNemar's exact test of each method against full fine-tuning. Written as summary.md and summary.json.
"""

import os

from methods import METHODS
from results import write_json_atomic
from significance import mcnemar_exact, mean_std_ci

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
