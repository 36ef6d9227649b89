"""The summary of a folder of runs: runs grouped by method, mean ± std with a 95 % interval per quantity,
and McNemar's exact test of each method against full fine-tuning (and, where a method ran under both
recipes or both precisions, of the fast recipe against the original and bf16 against fp32, seed by seed), and
the runs that fell back to the majority class or never left it. Written as summary.md and summary.json.

A learning curve (runs with --train_size, from compare.py --train_sizes) is summarised the same way at each
number of training sentences, as a table with a row per size and a column per method.
"""

import os

from methods import METHODS
from results import flag_value, write_json_atomic
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
    "precision": lambda r: precision_text(r.get("config", {})),
    "batch": lambda r: batch_text(r.get("config", {}).get("training_arguments", {})),
    "optimizer": lambda r: chosen_optimizer(r),
}


def chosen_optimizer(record) -> str:
    """The optimizer where the command chose it, else "the recipe's": a recipe's own (fused AdamW, or the
    original's adamw_torch) goes with the recipe, which already tells the runs apart."""
    if flag_value((record.get("command") or "").split(), "--optim") is not None:
        return record.get("config", {}).get("training_arguments", {}).get("optim")
    return "the recipe's"


def precision_text(config) -> str:
    """'fp32'; 'bf16' for bf16 autocast with the frozen weights stored in bf16 (the fast recipe's, on a GPU);
    'bf16, frozen fp32' where they stayed in fp32 (--bf16_frozen_weights False); or 'fp16' (the fast recipe's
    on a GPU without native bf16)."""
    arguments = config.get("training_arguments", {})
    if arguments.get("fp16"):
        return "fp16"
    if not arguments.get("bf16"):
        return "fp32"
    return "bf16, frozen fp32" if config.get("bf16_frozen_weights") is False else "bf16"  # unrecorded: bf16


def batch_text(arguments) -> str:
    """'16', or '8x2' for 8 sentences a step and 2 steps of accumulation: the same batch, computed otherwise."""
    size, steps = arguments.get("per_device_train_batch_size"), arguments.get("gradient_accumulation_steps", 1)
    return f"{size}x{steps}" if steps and steps > 1 else f"{size}"


# Settings that compute the same step up to rounding: runs under both values, paired by seed, show whether
# they also learn the same. {setting: (one value, the value it is measured against, summary.json's key)}
PAIRED = {"recipe": ("fast", "original", "recipes_paired"), "precision": ("bf16", "fp32", "precision_paired")}


def counted(number, noun) -> str:
    """'1 run', '2 runs'."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def setting(key, value):
    """'lr 0.0005', 'recipe fast': one distinguishing setting, as group labels show it."""
    return f"{key} {value:g}" if isinstance(value, float) else f"{key} {value}"


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
            setting(key, get(record)) for key, get in DISTINGUISHING.items() if len(varies[record["method"], key]) > 1
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


def fell(history, labels) -> bool:
    """Whether evaluation accuracy came back to the majority class after the run had learned something: after an
    epoch more than 5 points above it, one within half a point of it: on a sweep's 200 held-out sentences, 10
    sentences and one."""
    majority = majority_class([{"labels": labels}]) / 100
    accuracy = [row["eval_accuracy"] for row in history if row.get("eval_accuracy") is not None]
    learned = next((i for i, value in enumerate(accuracy) if value > majority + 0.05), len(accuracy))
    return any(value <= majority + 0.005 for value in accuracy[learned:])


def at_majority_class(groups) -> list[dict]:
    """The runs that fell back to the majority class, or never rose more than 5 points above it: a mean over
    seeds that includes one of them describes no run."""
    rows = []
    for method, runs in groups.items():
        for run in runs:
            majority = majority_class([run])
            history = [row for row in run["history"] if row.get("eval_accuracy") is not None]
            if majority is None or not history:
                continue
            best = max(history, key=lambda row: row["eval_accuracy"])
            if fell(history, run["labels"]):
                what = "fell back to the majority class"
            elif 100 * best["eval_accuracy"] <= majority + 5:
                what = "never left the majority class"
            else:
                continue
            rows.append(
                {
                    "run_name": run["run_name"],
                    "method": method,
                    "seed": seed_of(run),
                    "what": what,
                    "majority_class": majority,
                    "best_accuracy": 100 * best["eval_accuracy"],
                    "best_epoch": best["epoch"],
                    "last_accuracy": 100 * history[-1]["eval_accuracy"],
                    "epochs": len(history),
                }
            )
    return rows


def seed_of(record):
    return record.get("config", {}).get("training_arguments", {}).get("seed")


def context_of(record):
    """The settings a method's run shares with the full fine-tuning run it is tested against."""
    return tuple(DISTINGUISHING[key](record) for key in PAIRED)


def mcnemar_against_full(groups):
    """{label: [{seed, only_full_right, only_method_right, p, verdict}]} over runs paired by seed.

    The reference for a seed is full fine-tuning's run with that seed under the same recipe and precision,
    else under any (the newest, if there are several).
    """
    full_runs = [r for label, runs in groups.items() if is_full(label) for r in runs if "predictions" in r]
    full = {}
    for run in sorted(full_runs, key=lambda r: r.get("created_at", "")):
        full[seed_of(run)] = full[seed_of(run), context_of(run)] = run
    tests = {}
    for method, runs in groups.items():
        if is_full(method):
            continue
        for run in runs:
            reference = full.get((seed_of(run), context_of(run)), full.get(seed_of(run)))
            if reference is None or "predictions" not in run or run.get("labels") != reference.get("labels"):
                continue
            b, c, p = mcnemar_exact(reference["predictions"], run["predictions"], run["labels"])
            verdict = "no significant difference" if p >= ALPHA else ("full better" if b > c else f"{method} better")
            tests.setdefault(method, []).append(
                {"seed": seed_of(run), "only_full_right": b, "only_method_right": c, "p_value": p, "verdict": verdict}
            )
    return tests


def paired_by_seed(groups, key):
    """{method: {rows: [{seed, A, B, difference, only_A_right, only_B_right, p_value, verdict}], difference:
    {mean, std, ci95, runs}}} for each method (at one rate, and one value of each other PAIRED setting) run
    under both values A and B of PAIRED[key].

    Both values compute the same step up to rounding (tests/test_recipes.py); pairing by seed shows whether
    they also learn the same, against the spread that seeds alone give.
    """
    first, second, _ = PAIRED[key]
    records = sorted((r for g in groups.values() for r in g), key=lambda r: r.get("created_at", ""))
    # A pair differs in `key` only: runs under another paired setting's other value are another comparison.
    held = [k for k in PAIRED if k != key and len({DISTINGUISHING[k](r) for r in records}) > 1]
    runs = {}
    for record in records:
        method = ", ".join(
            [f"{record['method']} @ {setting('lr', DISTINGUISHING['lr'](record))}"]
            + [setting(k, DISTINGUISHING[k](record)) for k in held]
        )
        runs.setdefault(method, {}).setdefault(DISTINGUISHING[key](record), {})[seed_of(record)] = record
    paired = {}
    for method, by_value in runs.items():
        ones, others = by_value.get(first, {}), by_value.get(second, {})
        rows = []
        for seed in sorted(set(ones) & set(others)):
            a, b = ones[seed], others[seed]
            if "predictions" not in a or "predictions" not in b or a.get("labels") != b.get("labels"):
                continue
            only_second, only_first, p = mcnemar_exact(b["predictions"], a["predictions"], a["labels"])
            first_accuracy, second_accuracy = (100 * r["metrics"]["eval_accuracy"] for r in (a, b))
            verdict = (
                "no significant difference"
                if p >= ALPHA
                else (f"{second} better" if only_second > only_first else f"{first} better")
            )
            rows.append(
                {
                    "seed": seed,
                    first: first_accuracy,
                    second: second_accuracy,
                    "difference": first_accuracy - second_accuracy,
                    f"only_{first}_right": only_first,
                    f"only_{second}_right": only_second,
                    "p_value": p,
                    "verdict": verdict,
                }
            )
        if rows:
            mean, std, half = mean_std_ci([row["difference"] for row in rows])
            paired[method] = {"rows": rows, "difference": {"mean": mean, "std": std, "ci95": half, "runs": len(rows)}}
    return paired


def all_paired(groups):
    """{setting: paired_by_seed(groups, setting)} for each PAIRED setting some method ran under both values."""
    return {key: paired for key in PAIRED if (paired := paired_by_seed(groups, key))}


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


def write_summary(table, tests, folder, paired=None, stalled=None):
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
    for key, entries in (paired or {}).items():
        first, second, _ = PAIRED[key]
        title = {"recipe": "The fast recipe against the original", "precision": "bf16 against fp32"}[key]
        lines += [
            "",
            f"## {title}, paired by seed: McNemar's exact test (two-sided, α = {ALPHA})",
            "",
            f"| method | seed | {first} | {second} | {first} − {second} | only {first} right | only {second} right | p "
            "| verdict |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for method, entry in entries.items():
            for row in entry["rows"]:
                lines.append(
                    f"| {method} | {row['seed']} | {row[first]:.2f} % | {row[second]:.2f} % | "
                    f"{row['difference']:+.2f} | {row[f'only_{first}_right']} | {row[f'only_{second}_right']} | "
                    f"{row['p_value']:.3g} | {row['verdict']} |"
                )
        lines.append("")
        for method, entry in entries.items():
            cell = entry["difference"]
            spread = f" (95 % CI ± {cell['ci95']:.2f})" if cell["ci95"] is not None else ""
            lines.append(
                f"- {method}: {first} − {second} = {cell['mean']:+.2f} points{spread} over {cell['runs']} seeds."
            )
    if stalled:
        lines += [
            "",
            "## Runs at the majority class",
            "",
            "A run fell back if, after an epoch more than 5 points above the majority class of its evaluation "
            "sentences, an epoch came back to within half a point of it; it never left if no epoch rose more than "
            "5 points above it. A mean over seeds that includes such a run describes no run.",
            "",
            "| method | seed | run | what | majority class | best (epoch) | last (epoch) |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in stalled:
            lines.append(
                f"| {row['method']} | {row['seed']} | {row['run_name']} | {row['what']} | "
                f"{row['majority_class']:.2f} % | {row['best_accuracy']:.2f} % ({row['best_epoch']:g}) | "
                f"{row['last_accuracy']:.2f} % ({row['epochs']}) |"
            )
    with open(os.path.join(folder, "summary.md"), "w") as handle:
        handle.write("\n".join(lines) + "\n")
    contents = {"methods": table, "mcnemar_vs_full": tests} | {PAIRED[k][2]: v for k, v in (paired or {}).items()}
    contents |= {"at_majority_class": stalled} if stalled else {}
    write_json_atomic(os.path.join(folder, "summary.json"), contents)


def train_size_of(record):
    return record.get("config", {}).get("train_size")


def learning_curve(records) -> dict:
    """{budget, majority_class, sizes: {size: {methods: summarise(...), mcnemar_vs_full: ...}}} for the runs
    that trained on a subset (--train_size)."""
    sized = sorted((r for r in records if train_size_of(r)), key=train_size_of)
    sizes = {}
    for record in sized:
        sizes.setdefault(train_size_of(record), []).append(record)
    curve = {"budget": budget_of(sized), "majority_class": majority_class(sized), "sizes": {}}
    for size, runs in sizes.items():
        groups = group_by_method(runs)
        curve["sizes"][size] = {"methods": summarise(groups), "mcnemar_vs_full": mcnemar_against_full(groups)}
    return curve


def budget_of(records) -> str:
    """What every run trained for, in words: a number of optimizer steps, or of epochs."""
    arguments = [r.get("config", {}).get("training_arguments", {}) for r in records]
    steps = {a.get("max_steps") for a in arguments}
    if len(steps) == 1 and (steps.pop() or 0) > 0:
        return f"{arguments[0]['max_steps']} optimizer steps per run, cycling over its sentences"
    epochs = {a.get("num_train_epochs") for a in arguments if not (a.get("max_steps") or 0) > 0}
    if len(epochs) == 1 and len(steps) <= 1:
        return f"{epochs.pop():g} epochs per run"
    return "budgets differ between runs"


def majority_class(records):
    """Dev accuracy (%) of always answering the more frequent label: the floor every method must clear."""
    labels = next((r["labels"] for r in records if r.get("labels")), None)
    if not labels:
        return None
    share = sum(labels) / len(labels)
    return 100 * max(share, 1 - share)


def write_curve_summary(curve, folder):
    methods = list(dict.fromkeys(m for size in curve["sizes"].values() for m in size["methods"]))
    lines = [
        f"Dev accuracy (%) by number of training sentences: mean ± 95 % CI half-width (Student's t) over seeds, "
        f"runs in brackets. Budget: {curve['budget']}."
        + (f" Majority class: {curve['majority_class']:.2f} %." if curve["majority_class"] is not None else ""),
        "",
        "| training sentences | " + " | ".join(methods) + " |",
        "|---|" + "---|" * len(methods),
    ]
    for size, entry in curve["sizes"].items():
        cells = []
        for method in methods:
            cell = entry["methods"].get(method, {}).get("accuracy")
            if not cell or cell["mean"] is None:
                cells.append("")
                continue
            spread = f" ± {cell['ci95']:.2f}" if cell["ci95"] is not None else ""
            cells.append(f"{cell['mean']:.2f}{spread} ({cell['runs']})")
        lines.append(f"| {size:,} | " + " | ".join(cells) + " |")
    tests = [
        (size, m, row) for size, e in curve["sizes"].items() for m, rows in e["mcnemar_vs_full"].items() for row in rows
    ]
    if tests:
        lines += [
            "",
            f"## Against full fine-tuning at each size: McNemar's exact test (two-sided, α = {ALPHA})",
            "",
            "| training sentences | method | seed | only full right | only method right | p | verdict |",
            "|---|---|---|---|---|---|---|",
        ]
        for size, method, row in tests:
            lines.append(
                f"| {size:,} | {method} | {row['seed']} | {row['only_full_right']} | {row['only_method_right']} | "
                f"{row['p_value']:.3g} | {row['verdict']} |"
            )
    with open(os.path.join(folder, "summary.md"), "w") as handle:
        handle.write("\n".join(lines) + "\n")
    write_json_atomic(os.path.join(folder, "summary.json"), {"learning_curve": curve})
