"""The reference results committed under results/reference/: the runs behind the README's numbers and figures.

Each set regenerates its summary and figures from its runs' JSONs alone, identically; no file names a path of
the machine that made it; every run records the command that made it.
"""

import filecmp
import functools
import json
import math
import os
import re
import shutil
import statistics

import pytest
from conftest import ROOT, strings

import plot_results
from results import NOT_RUNS, load_results
from summary import seed_of

REFERENCE = os.path.join(ROOT, "results", "reference")
SETS = sorted(
    name
    for name in (os.listdir(REFERENCE) if os.path.isdir(REFERENCE) else [])
    if os.path.isfile(os.path.join(REFERENCE, name, "summary.md"))
)


def run_files(folder):
    return sorted(f for f in os.listdir(folder) if f.endswith(".json") and f not in NOT_RUNS)


def test_there_are_reference_sets():
    assert SETS, "results/reference/ holds no set with a summary.md"


@pytest.mark.parametrize("name", SETS)
def test_a_set_regenerates_its_summary_and_figures_identically(name, tmp_path):
    folder = os.path.join(REFERENCE, name)
    for file in run_files(folder):
        shutil.copy(os.path.join(folder, file), tmp_path / file)
    assert plot_results.main(["--results_dir", str(tmp_path)]) == 0
    for file in ("summary.md", "summary.json"):
        assert filecmp.cmp(tmp_path / file, os.path.join(folder, file), shallow=False), file
    committed = sorted(os.listdir(os.path.join(folder, "figures")))
    assert committed == sorted(os.listdir(tmp_path / "figures"))
    for figure in committed:
        assert filecmp.cmp(tmp_path / "figures" / figure, os.path.join(folder, "figures", figure), shallow=False)


def test_committed_results_name_no_path_of_a_machine():
    for folder, _, files in os.walk(os.path.join(ROOT, "results")):
        for file in files:
            if file.endswith(".json"):
                with open(os.path.join(folder, file)) as handle:
                    texts = list(strings(json.load(handle)))
                absolute = [t for t in texts for word in t.split() if word.startswith(("/", "~"))]
                assert absolute == [], f"{file}: {absolute[:3]}"


@pytest.mark.parametrize("name", SETS)
def test_every_reference_run_records_its_command_and_data(name):
    folder = os.path.join(REFERENCE, name)
    for file in run_files(folder):
        with open(os.path.join(folder, file)) as handle:
            record = json.load(handle)
        assert record["status"] == "completed" and record["command"].startswith("python ")
        assert record["data"]["source"] and record["data"]["sha256"]
        assert record["model"]["name"]


def test_each_tuned_rate_is_the_one_its_committed_sweep_scores_best():
    """--lr_preset tuned is backed by evidence in results/reference/sweeps/, recomputed here from the trials'
    own run files: the highest mean held-out accuracy over the seeds, ties to the lower mean held-out loss."""
    from config import TUNED_LEARNING_RATES

    sweeps = os.path.join(REFERENCE, "sweeps")
    best = {}
    for method in sorted(os.listdir(sweeps)):
        folder = os.path.join(sweeps, method)
        summary = sorted(f for f in os.listdir(folder) if f.startswith("sweep-"))[-1]
        with open(os.path.join(folder, summary)) as handle:
            trials = json.load(handle)["trials"]
        scores = {}
        for trial in trials:
            with open(os.path.join(folder, trial["run_name"] + ".json")) as handle:
                run = json.load(handle)
            assert run["config"]["training_arguments"]["learning_rate"] == trial["learning_rate"]
            scores.setdefault(trial["learning_rate"], []).append(
                (run["metrics"]["eval_accuracy"], -run["metrics"]["eval_loss"])
            )
        mean = {rate: tuple(sum(s) / len(s) for s in zip(*runs)) for rate, runs in scores.items()}
        best[method] = max(mean, key=mean.get)
    assert best == TUNED_LEARNING_RATES


def test_the_readme_s_sweep_table_is_the_committed_sweeps():
    import sweep

    with open(os.path.join(ROOT, "README.md")) as handle:
        readme = handle.read()
    rows = sweep.table(os.path.join(REFERENCE, "sweeps")).splitlines()
    assert len(rows) > 2
    for row in rows:
        assert row in readme


def readme_table(header):
    """The rows of the README table whose header line starts with `header`, as lists of stripped cells."""
    with open(os.path.join(ROOT, "README.md")) as handle:
        lines = handle.read().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
    return [[cell.strip() for cell in line.split("|")[1:-1]] for line in lines[start + 2 : end]]


WHOLE_SET = os.path.join(REFERENCE, "whole-sst2-minilm-cpu")


def runs_by(folder, key):
    """A reference set's runs by key(run): no two may share a key, which would hide one of them."""
    runs, skipped = load_results(folder)
    assert not skipped
    indexed = {key(run): run for run in runs}
    assert len(indexed) == len(runs), folder
    return indexed


def method_and_seed(run):
    return run["method"], seed_of(run)


def test_the_readme_s_whole_set_table_is_the_committed_runs():
    """Each row's numbers, copied into the README by hand, equal those of its runs."""
    rows = readme_table("| method | trainable (MiniLM) | seed 1 | seed 2 | seed 3 |")
    by_key = runs_by(WHOLE_SET, method_and_seed)
    assert len(by_key) == 30
    assert {row[0] for row in rows} == {method for method, _ in by_key}
    for method, _, *seed_cells, mean_std, _, loss, time in rows:
        ran = [by_key[(method, seed)] for seed in (1, 2, 3)]
        values = [100 * run["metrics"]["eval_correct"] / run["metrics"]["eval_total"] for run in ran]
        assert seed_cells == [f"{value:.2f} %" for value in values], method
        assert mean_std == f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} %", method
        assert loss == f"{statistics.mean(run['metrics']['train_loss'] for run in ran):.3f}", method
        assert time == f"{statistics.mean(run['efficiency']['train_time_s'] for run in ran):.0f} s", method


def test_the_readme_s_whole_set_mcnemar_table_is_the_summary_s():
    """Each cell, copied by hand, has the summary's counts and verdict, and its p-value to the digits shown."""
    rows = readme_table("| method | seed 1 | seed 2 | seed 3 |")
    with open(os.path.join(WHOLE_SET, "summary.json")) as handle:
        tests = json.load(handle)["mcnemar_vs_full"]
    assert {row[0] for row in rows} == set(tests)
    verdicts = {"full better": "full better", "no significant difference": "n.s."}
    for method, *cells in rows:
        by_seed = {test["seed"]: test for test in tests[method]}
        assert sorted(by_seed) == [1, 2, 3], method
        for seed, cell in zip((1, 2, 3), cells):
            test = by_seed[seed]
            verdict, counts, p = re.fullmatch(r"(.+) \((\d+/\d+), p ([<=] [\d.]+)\)", cell).groups()
            assert verdict == verdicts[test["verdict"]], (method, seed)
            assert counts == f"{test['only_full_right']}/{test['only_method_right']}", (method, seed)
            if p == "< 0.001":
                assert test["p_value"] < 0.001, (method, seed)
            else:
                shown = p.removeprefix("= ")
                assert abs(float(shown) - test["p_value"]) <= 0.5 * 10 ** -len(shown.split(".")[1]), (method, seed)


def test_the_readme_s_brief_quotes_the_whole_set_means():
    """The README's brief copies the whole set's means and sizes by hand: each is the summary's, as rounded."""
    with open(os.path.join(ROOT, "README.md")) as handle:
        brief = " ".join(handle.read().split("## What we found, in brief", 1)[1].split("\n## ", 1)[0].split())
    with open(os.path.join(WHOLE_SET, "summary.json")) as handle:
        methods = json.load(handle)["methods"]
    accuracy = {method: values["accuracy"]["mean"] for method, values in methods.items()}
    original = {"88.07", "88.11"}  # the original experiment's prefix and full fine-tuning
    with open(os.path.join(ROOT, "results", "gpu_report.json")) as handle:
        gpu = {f"{100 * row['eval_accuracy']:.2f}" for row in json.load(handle)["end_to_end"]}
    ten_epochs = {f"{100 * run['metrics']['eval_accuracy']:.2f}" for run in ten_epoch_runs().values()}
    quoted = re.findall(r"(\d+\.\d\d) %", brief)
    assert quoted and set(quoted) <= original | gpu | ten_epochs | {f"{mean:.2f}" for mean in accuracy.values()}
    for method in ("full", "adapter", "prefix"):
        assert f"{accuracy[method]:.2f} %" in brief, method
    assert f"{accuracy['full'] - accuracy['prefix']:.1f} points under full fine-tuning" in brief
    middle = [accuracy[method] for method in ("lora", "ia3", "prefix-v2")]
    assert f"reach {min(middle):.1f} to {max(middle):.1f} %" in brief
    size = {method: values["adapter"]["mean"] for method, values in methods.items()}  # MB on disk
    assert f"{size['full']:.1f} MB for MiniLM, against {size['lora']:.2f} MB" in brief
    assert f"and {size['adapter']:.1f} MB for the bottleneck adapters" in brief


def ten_epoch_runs():
    """The ten-epoch set's runs by (method, learning rate, seed)."""

    def key(run):
        arguments = run["config"]["training_arguments"]
        return run["method"], arguments["learning_rate"], arguments["seed"]

    return runs_by(os.path.join(REFERENCE, "ten-epochs-minilm-4000"), key)


def exact_mcnemar(a, b, labels):
    """(sentences only a gets right, only b gets right, two-sided exact binomial p)."""
    only_a = sum(x == y != z for x, y, z in zip(a, labels, b))
    only_b = sum(z == y != x for x, y, z in zip(a, labels, b))
    n = only_a + only_b
    return only_a, only_b, min(1.0, 2 * sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1)) / 2**n)


@pytest.mark.parametrize(
    "quoted, first, second",
    [
        ("McNemar 83 against 54 sentences, p = 0.016", ("full", 1e-4, 1), ("prefix", 3e-4, 1)),
        ("McNemar 70 against 57 sentences, p = 0.29", ("full", 1e-4, 1), ("prefix", 2e-4, 1)),
        ("seeds 2 and 3 are (67 against 39, p = 0.0084;", ("full", 1e-4, 2), ("prefix", 2e-4, 2)),
        ("significantly ahead of 3e-4 (57 against 41, p = 0.13)", ("prefix", 2e-4, 1), ("prefix", 3e-4, 1)),
        ("p = 0.0084; 72 against 39, p = 0.0022)", ("full", 1e-4, 3), ("prefix", 2e-4, 3)),
        ("level with full fine-tuning (61 against 45, p = 0.14;", ("full", 1e-4, 2), ("prefix", 5e-4, 2)),
        ("p = 0.14; 58 against 42, p = 0.13)", ("full", 1e-4, 3), ("prefix", 5e-4, 3)),
        ("significantly with seed 3 (41 against 24, p = 0.046)", ("prefix", 5e-4, 3), ("prefix", 2e-4, 3)),
        ("but not with seed 2 (50 against 38, p = 0.24)", ("prefix", 5e-4, 2), ("prefix", 2e-4, 2)),
    ],
)
def test_the_readme_s_ten_epoch_mcnemar_tests_are_the_runs_predictions(quoted, first, second):
    runs = ten_epoch_runs()
    a, b = runs[first], runs[second]
    assert a["labels"] == b["labels"]
    only_a, only_b, p = exact_mcnemar(a["predictions"], b["predictions"], a["labels"])
    counts, shown = re.search(r"(\d+ against \d+)(?: sentences)?, p = ([\d.]+)", quoted).groups()
    assert counts == f"{only_a} against {only_b}"
    assert shown == f"{p:.2g}"
    with open(os.path.join(ROOT, "README.md")) as handle:
        assert quoted in " ".join(handle.read().split())


def ten_epoch_cells(run):
    """A ten-epoch run's cells as the README writes them: after epoch 1, the best epoch, after epoch 10, loss."""
    history = run["history"]
    assert [row["epoch"] for row in history] == list(range(1, 11)), run["run_name"]
    top = max(history, key=lambda row: row["eval_accuracy"])
    return [
        f"{100 * history[0]['eval_accuracy']:.2f} %",
        f"{100 * top['eval_accuracy']:.2f} % ({top['epoch']:g})",
        f"{100 * history[-1]['eval_accuracy']:.2f} %",
        f"{run['metrics']['train_loss']:.3f}",
    ]


def test_the_readme_s_ten_epoch_table_is_the_committed_runs():
    """Each row, copied by hand: accuracy after epoch 1, the best epoch, after epoch 10, and the train loss."""
    rows = readme_table("| method, rate | seed | after epoch 1 | best epoch |")
    by_key = ten_epoch_runs()
    assert len(by_key) == len(rows) == 12
    for label, seed, *cells in rows:
        method, rate = label.split(", ")
        key = (method, float(rate), int(seed))
        assert cells == ten_epoch_cells(by_key[key]), key


@pytest.mark.parametrize(
    "header, name",
    [
        ("| method | seed | bf16 | fp32 | bf16 − fp32 |", "bf16-minilm-4000"),  # 4,000 sentences
        ("| method, rate | seed | bf16 | fp32 | bf16 − fp32 |", "bf16-minilm-sst2"),  # the whole train set
    ],
)
def test_the_readme_s_bf16_tables_are_the_committed_runs(header, name):
    """Each row, copied by hand: both runs' accuracy from their own JSONs, and McNemar's counts and p; and a row
    for every pair of runs in the set."""
    rows = readme_table(header)
    runs, skipped = load_results(os.path.join(REFERENCE, name))
    assert not skipped and rows and 2 * len(rows) == len(runs)
    by_key = {
        (
            run["method"],
            run["config"]["training_arguments"]["seed"],
            bool(run["config"]["training_arguments"]["bf16"]),
        ): run
        for run in runs
    }
    assert len(by_key) == len(runs)
    for label, seed, bf16, fp32, difference, only_bf16, only_fp32, p in rows:
        method, rate = label.split(", ")
        low, high = by_key[method, int(seed), True], by_key[method, int(seed), False]
        assert float(rate) == low["config"]["training_arguments"]["learning_rate"]
        accuracy = [100 * run["metrics"]["eval_accuracy"] for run in (low, high)]
        assert [bf16, fp32] == [f"{a:.2f} %" for a in accuracy]
        assert difference.replace("−", "-") == f"{accuracy[0] - accuracy[1]:+.2f}"
        pairs = list(zip(low["predictions"], high["predictions"], low["labels"]))
        b = sum(x == y != z for x, z, y in pairs)  # bf16 right, fp32 wrong
        c = sum(z == y != x for x, z, y in pairs)
        assert (int(only_bf16), int(only_fp32)) == (b, c)
        n = b + c
        exact = min(1.0, 2 * sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n) if n else 1.0
        assert p == f"{exact:.2g}"


def test_the_readme_s_ten_epoch_sweep_tables_are_the_committed_trials():
    """Each trial's held-out accuracy after every epoch, and its train loss, copied by hand from its run file;
    and the choices, as `sweep.py --table` prints them from the committed summaries."""
    import sweep

    folder = os.path.join(REFERENCE, "ten-epoch-sweeps", "sweeps")
    rows = readme_table("| rate | seed | held-out accuracy after each of the 10 epochs (%) |")
    runs, skipped = load_results(os.path.join(folder, "prefix"))
    args = lambda run: run["config"]["training_arguments"]  # noqa: E731
    by_key = {(args(run)["learning_rate"], args(run)["seed"]): run for run in runs}
    assert not skipped  # the sweeps' summaries (sweep-*.json) are reports, not runs, and are passed over
    assert len(rows) == len(by_key) == len(runs) == 12
    for rate, seed, epochs, loss in rows:
        run = by_key[float(rate), int(seed)]
        assert epochs.replace("*", "").split(", ") == [f"{100 * h['eval_accuracy']:.1f}" for h in run["history"]]
        assert loss == f"{run['metrics']['train_loss']:.3f}"
    with open(os.path.join(ROOT, "README.md")) as handle:
        readme = handle.read()
    choices = sweep.table(folder).splitlines()
    assert len(choices) == 4  # header, rule, the first sweep (seed 4) and its extension (seeds 4, 5, 6)
    for row in choices:
        assert row in readme


def majority_of(run):
    """The share of a run's evaluation sentences in their more frequent class, from their labels."""
    labels = run["labels"]
    return max(sum(labels), len(labels) - sum(labels)) / len(labels)


def fell(run):
    """A run fell if, after an epoch more than 5 points above the majority class of its evaluation sentences (from
    their labels), an epoch came back to within half a point of it."""
    majority = majority_of(run)
    accuracy = [row["eval_accuracy"] for row in run["history"]]
    learned = next((i for i, a in enumerate(accuracy) if a > majority + 0.05), len(accuracy))
    return any(a <= majority + 0.005 for a in accuracy[learned:])


def test_the_ten_epoch_tuned_rate_is_the_one_its_committed_sweep_chooses():
    """--lr_preset tuned's rate for a longer schedule, recomputed from the newest ten-epoch sweep's trial files: the
    highest mean held-out accuracy after the last epoch among the rates where no seed fell."""
    from config import TUNED_TEN_EPOCH_LEARNING_RATES

    sweeps = os.path.join(REFERENCE, "ten-epoch-sweeps", "sweeps")
    chosen = {}
    for method in sorted(os.listdir(sweeps)):
        folder = os.path.join(sweeps, method)
        with open(os.path.join(folder, sorted(f for f in os.listdir(folder) if f.startswith("sweep-"))[-1])) as f:
            trials = json.load(f)["trials"]
        runs = {}
        for trial in trials:
            with open(os.path.join(folder, trial["run_name"] + ".json")) as handle:
                run = json.load(handle)
            assert len(run["history"]) == 10
            runs.setdefault(run["config"]["training_arguments"]["learning_rate"], []).append(run)
        steady = {rate: group for rate, group in runs.items() if not any(map(fell, group))}
        mean = {
            rate: statistics.fmean(run["metrics"]["eval_accuracy"] for run in group) for rate, group in steady.items()
        }
        chosen[method] = max(mean, key=mean.get)
    assert chosen == TUNED_TEN_EPOCH_LEARNING_RATES


def test_the_readme_s_count_of_ten_epoch_falls_is_the_committed_runs():
    """Falls (see fell) counted over every ten-epoch prefix tuning run committed."""
    runs = []
    for folder in ("ten-epochs-minilm-4000", os.path.join("ten-epoch-sweeps", "sweeps", "prefix")):
        found, _ = load_results(os.path.join(REFERENCE, folder))  # and the sweeps' summaries
        runs += [run for run in found if run["method"] == "prefix" and len(run["history"]) == 10]

    def at(low, high):
        return [run for run in runs if low <= run["config"]["training_arguments"]["learning_rate"] <= high]

    tuned, lower = at(5e-4, 5e-4), at(1e-4, 3e-4)
    assert (sum(map(fell, tuned)), len(tuned)) == (2, 6)
    assert (sum(map(fell, lower)), len(lower)) == (0, 13)
    with open(os.path.join(ROOT, "README.md")) as handle:
        readme = " ".join(handle.read().split())
    brief = "fell to the majority class in 2 of 6 ten-epoch runs (once for good), while 1e-4 to 3e-4 never fell in 13"
    assert brief in readme
    assert "tuning's one-epoch rate fell to the majority class in 2 of 6 ten-epoch runs" in readme
    assert "So 2 of the 6 ten-epoch runs at 5e-4 fell. The 13 runs at 1e-4 to 3e-4 never did" in readme


def test_the_readme_s_ten_epoch_table_of_the_other_methods_is_the_committed_runs():
    """Each row, copied by hand: the ten-epoch run's epochs and loss, the same seed's one-epoch accuracy, and
    McNemar's test against full fine-tuning's ten epochs at 1e-4 with the same seed, recomputed from both runs'
    predictions."""
    rows = readme_table(
        "| method, rate | seed | after epoch 1 | best epoch | after epoch 10 | train loss | one epoch |"
    )
    ten = runs_by(os.path.join(REFERENCE, "ten-epochs-every-method-minilm-4000"), method_and_seed)
    one = runs_by(os.path.join(REFERENCE, "compare-minilm-4000"), method_and_seed)
    full_runs = ten_epoch_runs()
    assert len(rows) == len(ten) == 11 and not {"full", "prefix"} & {method for method, _ in ten}
    for label, seed, *cells, one_epoch, against in rows:
        method, rate = label.split(", ")
        key = (method, int(seed))
        run, full = ten[key], full_runs[("full", 1e-4, int(seed))]
        arguments = run["config"]["training_arguments"]
        assert float(rate) == arguments["learning_rate"] == one[key]["config"]["training_arguments"]["learning_rate"]
        assert cells == ten_epoch_cells(run), key
        assert one_epoch == f"{100 * one[key]['metrics']['eval_accuracy']:.2f} %", key
        assert run["labels"] == full["labels"]
        only_full, only_method, p = exact_mcnemar(full["predictions"], run["predictions"], run["labels"])
        shown = f"p = {p:.2g}" if p >= 0.001 else "p < 0.001"
        assert against == f"{only_full} against {only_method}, {shown}", key


def test_the_readme_s_claims_on_the_other_methods_ten_epochs_are_the_runs():
    """No run fell; the four lifted methods gained significantly on their one-epoch run at every seed, and the
    other four moved by at most 1.4 points; with seed 1 the five named are level with full fine-tuning and the
    other three behind; with seed 2 every method run is behind."""
    ten = runs_by(os.path.join(REFERENCE, "ten-epochs-every-method-minilm-4000"), method_and_seed)
    one = runs_by(os.path.join(REFERENCE, "compare-minilm-4000"), method_and_seed)
    full_runs = ten_epoch_runs()
    assert not any(map(fell, ten.values()))
    for (method, seed), run in ten.items():
        gain = 100 * (run["metrics"]["eval_accuracy"] - one[method, seed]["metrics"]["eval_accuracy"])
        _, _, p = exact_mcnemar(run["predictions"], one[method, seed]["predictions"], run["labels"])
        if method in ("prefix-v2", "bitfit", "ptuning", "prompt"):
            assert gain > 0 and p < 0.001, (method, seed)
        else:
            assert abs(gain) <= 1.4, (method, seed)
        full = full_runs[("full", 1e-4, seed)]
        _, _, p = exact_mcnemar(full["predictions"], run["predictions"], run["labels"])
        level = seed == 1 and method in ("adapter", "bitfit", "lora", "prefix-v2", "ia3")
        assert (p >= 0.05) == level, (method, seed)
    assert sorted(seed for _, seed in ten) == [1] * 8 + [2] * 3
    with open(os.path.join(ROOT, "README.md")) as handle:
        readme = " ".join(handle.read().split())
    assert "No run fell to the majority class" in readme
    assert "each significantly, at each seed (McNemar against its one-epoch run, p < 0.001)" in readme
    assert "end within 1.4 points of their one-epoch run" in readme
    assert "With seed 1, five methods are level with full fine-tuning's ten epochs" in readme


LEARNING_CURVE = os.path.join(REFERENCE, "learning-curve-minilm")
T_975 = {2: 4.302652729911275}  # Student's t, two-sided 95 %, by degrees of freedom (any printed table)


def mean_and_half_width(values):
    """(mean, 95 % CI half-width) of a few seeds' accuracies, computed here, not by summary.py."""
    return statistics.fmean(values), T_975[len(values) - 1] * statistics.stdev(values) / math.sqrt(len(values))


def by_method_size_seed(folder):
    return runs_by(folder, lambda run: (run["method"], run["config"]["train_size"], seed_of(run)))


def test_the_readme_s_learning_curve_table_is_the_committed_runs():
    """Each cell, copied by hand: the mean dev accuracy over seeds 1-3, its 95 % half-width and the run count."""
    rows = readme_table("| training sentences | full | prefix | lora | adapter | head |")
    runs = by_method_size_seed(LEARNING_CURVE)
    assert len(runs) == 60
    accuracy = {key: 100 * run["metrics"]["eval_correct"] / run["metrics"]["eval_total"] for key, run in runs.items()}
    methods = ["full", "prefix", "lora", "adapter", "head"]
    assert [row[0] for row in rows] == ["100", "300", "1,000", "4,000"]
    for size_cell, *cells in rows:
        size = int(size_cell.replace(",", ""))
        for method, cell in zip(methods, cells):
            mean, half = mean_and_half_width([accuracy[(method, size, seed)] for seed in (1, 2, 3)])
            assert cell == f"{mean:.2f} ± {half:.2f} (3)", (size, method)


def against_full(by_key, method, size, seed):
    """'level', 'full better' or 'better' (the method): an exact McNemar test on the two runs' dev predictions,
    at α = 0.05."""
    full, other = by_key["full", size, seed], by_key[method, size, seed]
    assert full["labels"] == other["labels"]
    only_full, only_other, p = exact_mcnemar(full["predictions"], other["predictions"], full["labels"])
    return "level" if p >= 0.05 else ("full better" if only_full > only_other else "better")


def test_the_readme_s_claims_on_the_learning_curve_are_the_runs():
    with open(os.path.join(ROOT, "README.md")) as handle:
        readme = " ".join(handle.read().split())
    curve = by_method_size_seed(LEARNING_CURVE)
    pairs = [(size, seed) for size in (100, 300, 1000, 4000) for seed in (1, 2, 3)]

    def verdicts(method):
        return {pair: against_full(curve, method, *pair) for pair in pairs}

    assert set(verdicts("adapter").values()) == {"level"}
    assert "no significant difference for the adapters on any of the 12 paired runs" in readme
    lora = verdicts("lora")
    assert sorted(k for k, v in lora.items() if v == "full better") == [(100, 1), (4000, 1)]
    assert sorted(k for k, v in lora.items() if v == "better") == [(100, 2), (1000, 3)]
    assert (
        "LoRA is worse on 2 of 12 (100 sentences, seed 1; 4,000, seed 1) "
        "and better on 2 (100, seed 2; 1,000, seed 3)" in readme
    )
    assert list(verdicts("prefix").values()).count("full better") == 11
    assert "worse than full fine-tuning on 11 of 12 pairs" in readme


SMALL_DATA_RATES = os.path.join(REFERENCE, "small-data-rates-minilm")
CURVE_METHODS = ("full", "prefix", "lora", "adapter", "head")


def rate_cell(rate):
    return f"{rate:.0e}".replace("e-0", "e-")


@functools.cache
def sweep_trials(method):
    """The run files of every trial of method's sweeps in the small-data set (read once: three tests use them)."""
    folder = os.path.join(SMALL_DATA_RATES, "sweeps", method)
    trials = []
    for file in sorted(f for f in os.listdir(folder) if f.endswith(".json") and not f.startswith("sweep-")):
        with open(os.path.join(folder, file)) as handle:
            trials.append(json.load(handle))
    return trials


def size_and_rate(run):
    return run["config"]["train_size"], run["config"]["training_arguments"]["learning_rate"]


def sweep_choices():
    """{(method, size): rate} for the small-data sweeps, recomputed from their trials' own run files: the highest
    mean held-out accuracy over the seeds, ties to the lower mean held-out loss."""
    choices = {}
    for method in CURVE_METHODS:
        scores = {}
        for run in sweep_trials(method):
            scores.setdefault(size_and_rate(run), []).append(
                (run["metrics"]["eval_accuracy"], -run["metrics"]["eval_loss"])
            )
        for size in {size for size, _ in scores}:
            mean = {rate: tuple(map(statistics.fmean, zip(*runs))) for (n, rate), runs in scores.items() if n == size}
            choices[method, size] = max(mean, key=mean.get)
    return choices


def test_the_small_data_runs_use_the_rates_their_sweeps_choose():
    choices = sweep_choices()
    runs, skipped = load_results(SMALL_DATA_RATES)
    assert not skipped and runs
    # at 300 the other methods, and at 1,000 every method, kept the curve's rates
    assert {(run["method"], run["config"]["train_size"]) for run in runs} == {
        *((method, 100) for method in CURVE_METHODS),
        ("full", 300),
        ("head", 300),
    }
    for run in runs:
        key = (run["method"], run["config"]["train_size"])
        assert run["config"]["training_arguments"]["learning_rate"] == choices[key], run["run_name"]


def test_the_readme_s_small_data_rate_tables_are_the_committed_runs():
    """The sweep table is what sweep.py --table prints; each dev row, copied by hand, is recomputed from the runs:
    the rates, the means and 95 % half-widths, each seed's change with its McNemar mark, and the verdicts."""
    import sweep

    with open(os.path.join(ROOT, "README.md")) as handle:
        readme = handle.read()
    for row in sweep.table(os.path.join(SMALL_DATA_RATES, "sweeps")).splitlines():
        assert row in readme
    old, new = by_method_size_seed(LEARNING_CURVE), by_method_size_seed(SMALL_DATA_RATES)
    rows = readme_table("| sentences | method | rate: 4,000 sentences → this size |")
    assert sorted((int(r[0].replace(",", "")), r[1]) for r in rows) == sorted({(n, m) for m, n, _ in new})

    def accuracy(run):
        return 100 * run["metrics"]["eval_correct"] / run["metrics"]["eval_total"]

    def interval(runs):
        mean, half = mean_and_half_width([accuracy(run) for run in runs])
        return f"{mean:.2f} ± {half:.2f}"

    for size_cell, method, rates, before, after, changes, verdict in rows:
        size = int(size_cell.replace(",", ""))
        a, b = ([runs[method, size, seed] for seed in (1, 2, 3)] for runs in (old, new))
        lr = [run["config"]["training_arguments"]["learning_rate"] for run in (a[0], b[0])]
        assert rates == f"{rate_cell(lr[0])} → {rate_cell(lr[1])}", method
        assert (before, after) == (interval(a), interval(b)), method
        marks = []
        for x, y in zip(a, b):
            *_, p = exact_mcnemar(x["predictions"], y["predictions"], x["labels"])
            marks.append(f"{accuracy(y) - accuracy(x):+.2f}".replace("-", "−") + "*" * (p < 0.05))
        assert changes == " / ".join(marks), method
        if method == "full":
            assert verdict == "—"
            continue
        said = {name: int(count) for name, count in re.findall(r"(level|full better|better) at (\d)", verdict)}
        found = [against_full(new, method, size, seed) for seed in (1, 2, 3)]
        assert {name: found.count(name) for name in set(found)} == said, method


def test_the_readme_s_claims_on_small_data_rates_are_the_runs():
    """Every 100-sentence rate is 2.5 to 4 times below the 4,000-sentence one, and every 1,000-sentence rate is it;
    the step below the 100-sentence rate stays at the held-out majority class for LoRA, the adapters and prefix
    tuning; at 1,000 only prefix tuning stays there, on the seeds named; and no method beats full fine-tuning."""
    from config import TUNED_LEARNING_RATES

    with open(os.path.join(ROOT, "README.md")) as handle:
        readme = " ".join(handle.read().split())
    choices = sweep_choices()
    ratios = [TUNED_LEARNING_RATES[method] / choices[method, 100] for method in CURVE_METHODS]
    assert f"a rate {min(ratios):.2g} to {max(ratios):.2g} times lower at 100 sentences" in readme
    assert all(choices[method, 1000] == TUNED_LEARNING_RATES[method] for method in CURVE_METHODS)
    assert "and its 4,000-sentence rate at 1,000" in readme
    for method in ("lora", "adapter", "prefix"):
        trials = [run for run in sweep_trials(method) if run["config"]["train_size"] == 100]
        lowest = min(size_and_rate(run)[1] for run in trials)
        for run in (r for r in trials if size_and_rate(r)[1] == lowest):
            assert abs(run["metrics"]["eval_accuracy"] - majority_of(run)) <= 0.005, run["run_name"]
    stayed = {
        (method, size_and_rate(run)[1], run["config"]["training_arguments"]["seed"])
        for method in CURVE_METHODS
        for run in sweep_trials(method)
        if run["config"]["train_size"] == 1000 and run["metrics"]["eval_accuracy"] < majority_of(run) + 0.05
    }
    for method in CURVE_METHODS:  # those stayed within half a point of it; the others learned
        for run in (r for r in sweep_trials(method) if r["config"]["train_size"] == 1000):
            assert abs(run["metrics"]["eval_accuracy"] - majority_of(run)) <= 0.005 or (
                run["metrics"]["eval_accuracy"] >= majority_of(run) + 0.05
            ), run["run_name"]
    assert stayed == {("prefix", 2e-4, 4), ("prefix", 1e-3, 4), ("prefix", 1e-3, 5)}
    assert (
        "at 1e-3 it stayed at the majority class with seeds 4 and 5 at both sizes, and at 2e-4 with seed 4 it stayed "
        "there at 1,000 and reached only 57.0 % at 300, where every other method learned at every rate"
    ) in readme
    old, new = by_method_size_seed(LEARNING_CURVE), by_method_size_seed(SMALL_DATA_RATES)
    for method in ("prefix", "lora", "adapter", "head"):
        assert "better" not in [against_full(new, method, 100, seed) for seed in (1, 2, 3)], method
    mean = {}
    for method in CURVE_METHODS:
        before, after = (
            [100 * by_key[method, 100, seed]["metrics"]["eval_accuracy"] for seed in (1, 2, 3)] for by_key in (old, new)
        )
        centre, half = mean_and_half_width(before)
        mean[method] = statistics.fmean(after)
        assert abs(mean[method] - centre) <= min(1.8, half), method  # "inside the old one's 95 % interval"
    assert "No mean moved by more than 1.8 points" in readme
    for method in ("full", "head"):  # at 300 sentences
        before, after = ([by_key[method, 300, seed] for seed in (1, 2, 3)] for by_key in (old, new))
        change = [100 * (b["metrics"]["eval_accuracy"] - a["metrics"]["eval_accuracy"]) for a, b in zip(before, after)]
        assert abs(statistics.fmean(change)) <= 1.8
        assert all(
            exact_mcnemar(a["predictions"], b["predictions"], a["labels"])[2] >= 0.05 for a, b in zip(before, after)
        )
        assert all(abs(c) < 0.5 for c in change) if method == "full" else all(-2.1 <= c <= -1.0 for c in change)
    assert "full fine-tuning moved by under half a point at every seed; the head-only control lost 1.0 to 2.1" in readme
    assert mean["full"] < min(mean["lora"], mean["adapter"])
    quoted = (
        f"LoRA ({mean['lora']:.2f} %) and the adapters ({mean['adapter']:.2f} %) are ahead of it ({mean['full']:.2f} %)"
    )
    assert quoted in readme
    at_300 = {**{k: run for k, run in old.items() if k[1] == 300}, **{k: run for k, run in new.items() if k[1] == 300}}
    verdicts = {method: [against_full(at_300, method, 300, seed) for seed in (1, 2, 3)] for method in CURVE_METHODS[1:]}
    assert verdicts == {
        "prefix": ["full better"] * 3,
        "lora": ["level", "level", "full better"],
        "adapter": ["level"] * 3,
        "head": ["full better"] * 3,
    }
    assert "the adapters are level at every seed, LoRA at two (behind at the third)" in readme


def test_the_readme_s_claims_on_the_300_sentence_sweeps_are_the_trials():
    """Full fine-tuning keeps its 100-sentence rate, by the margin quoted; the head goes lower, by two sentences of
    405 per seed; the others keep their 4,000-sentence rates; and only prefix tuning fails to learn at some rate."""
    from config import TUNED_LEARNING_RATES

    with open(os.path.join(ROOT, "README.md")) as handle:
        readme = " ".join(handle.read().split())
    choices = sweep_choices()
    assert choices["full", 300] == choices["full", 100] == 3e-5
    assert choices["head", 300] == 3e-2 < choices["head", 100]
    assert all(choices[method, 300] == TUNED_LEARNING_RATES[method] for method in ("prefix", "lora", "adapter"))

    def held_out(method, rate):
        runs = [r for r in sweep_trials(method) if size_and_rate(r) == (300, rate)]
        assert len(runs) == 3
        return runs

    def margin(method, rate, other):
        return statistics.fmean(
            100 * (a["metrics"]["eval_accuracy"] - b["metrics"]["eval_accuracy"])
            for a, b in zip(held_out(method, rate), held_out(method, other))
        )

    assert f"{margin('full', 3e-5, 1e-4):.1f}" == "0.4" and f"{margin('head', 3e-2, 1e-1):.1f}" == "0.5"
    correct = [sum(r["metrics"]["eval_correct"] for r in held_out("head", rate)) for rate in (3e-2, 1e-1)]
    assert correct[0] - correct[1] == 2 * 3 and held_out("head", 3e-2)[0]["metrics"]["eval_total"] == 405
    seed_by_seed = [
        a["metrics"]["eval_correct"] - b["metrics"]["eval_correct"]
        for a, b in zip(held_out("full", 3e-5), held_out("full", 1e-4))
    ]
    assert seed_by_seed[0] > 0 and seed_by_seed[1:] == [0, 0]  # seeds 4, 5, 6
    assert "(3e-5, 0.4 points of held-out accuracy above 1e-4, all of it from seed 4)" in readme
    assert "(3e-2, 0.5 points above 1e-1: two sentences of 405 per seed)" in readme
    low = {}
    for method in CURVE_METHODS:
        for run in (r for r in sweep_trials(method) if r["config"]["train_size"] == 300):
            if run["metrics"]["eval_accuracy"] < majority_of(run) + 0.05:
                low[method, size_and_rate(run)[1], run["config"]["training_arguments"]["seed"]] = run
    assert sorted(low) == [("prefix", 2e-4, 4), ("prefix", 1e-3, 4), ("prefix", 1e-3, 5)]
    assert all(
        abs(low["prefix", 1e-3, seed]["metrics"]["eval_accuracy"] - majority_of(low["prefix", 1e-3, seed])) <= 0.005
        for seed in (4, 5)
    )
    assert f"{100 * low['prefix', 2e-4, 4]['metrics']['eval_accuracy']:.1f}" == "57.0"
    assert "at 2e-4 with seed 4 it stayed there at 1,000 and reached only 57.0 % at 300" in readme


def test_the_readme_s_loss_scaling_and_frozen_weights_checks_are_the_committed_runs():
    """The numbers quoted for gradient accumulation and for frozen weights stored in bf16, from their runs."""
    with open(os.path.join(ROOT, "README.md")) as handle:
        readme = " ".join(handle.read().split())

    def run(folder, name):
        with open(os.path.join(REFERENCE, folder, f"{name}.json")) as handle:
            return json.load(handle)

    def score(record):
        metrics = record["metrics"]
        return f"{100 * metrics['eval_correct'] / metrics['eval_total']:.2f} % ({metrics['eval_correct']}/872)"

    small, large = (run("grad-accumulation-minilm-4000", f"full-batch{b}") for b in ("8x2", "16"))
    for record, (size, steps) in ((small, (8, 2)), (large, (16, 1))):
        arguments = record["config"]["training_arguments"]
        assert (arguments["per_device_train_batch_size"], arguments["gradient_accumulation_steps"]) == (size, steps)
        assert (arguments["learning_rate"], arguments["seed"], record["data"]["train_sentences"]) == (5e-5, 42, 4000)
    assert (
        f"batch 8 with 2 accumulation steps logged a train loss of {small['metrics']['train_loss']:.4f} under the "
        f"pipeline's scaling and reached {score(small)}, and batch 16 logged {large['metrics']['train_loss']:.4f} "
        f"and reached {score(large)}"
    ) in readme
    plain = run("grad-accumulation-minilm-4000", "full-batch8x2-plain-trainer")
    assert plain["kind"] == "plain_trainer_scaling"
    same_run = small["command"].split(" --results_dir ")[0].replace("python train_finetune.py ", "")
    assert plain["command"].endswith(f" -- {same_run}")  # the pipeline's batch 8 x 2 run, flag for flag
    differ = sum(a != b for a, b in zip(plain["predictions"], small["predictions"]))
    assert (
        f"logged {plain['metrics']['train_loss']:.4f} and reached the same {score(plain).split(' (')[0]} "
        f"({plain['metrics']['eval_correct']}/872; {differ} of the 872 predictions differ)"
    ) in readme
    assert score(plain) == score(small)

    said = []
    for method in ("prefix", "lora"):
        fp32, bf16 = (run("frozen-bf16-minilm-4000", f"{method}-frozen-{kind}") for kind in ("fp32", "bf16"))
        assert [r["config"]["bf16_frozen_weights"] for r in (fp32, bf16)] == [False, True]
        assert all(
            r["config"]["training_arguments"]["bf16"] and r["config"]["lr_preset"] == "tuned" for r in (fp32, bf16)
        )
        only_fp32, only_bf16, p = exact_mcnemar(fp32["predictions"], bf16["predictions"], fp32["labels"])
        said.append((score(fp32), score(bf16), only_fp32, only_bf16, p))
    (prefix_fp32, prefix_bf16, only_fp32, only_bf16, p), (lora_fp32, lora_bf16, *_, lora_p) = said
    assert (
        f"prefix tuning reached {prefix_fp32} with fp32 storage and {prefix_bf16} with bf16 (McNemar p = {p:.1g}: "
        f"{only_fp32} sentences only fp32 storage got right, {only_bf16} only bf16), LoRA {lora_fp32} and {lora_bf16} "
        f"(p = {lora_p:.2g})"
    ) in readme
    gap = float(prefix_bf16.split(" %")[0]) - float(prefix_fp32.split(" %")[0])
    assert f"Prefix tuning's {gap:.2f} points are less than the two recipes" in readme and gap < 3.10


def test_the_readme_s_recompute_runs_are_the_committed_runs():
    """The two splits of a compiled step, run for run: what the README quotes of their accuracy and time."""
    with open(os.path.join(ROOT, "README.md")) as handle:
        readme = " ".join(handle.read().split())
    runs = {}
    for method in ("full", "prefix"):
        for recompute in (True, False):
            with open(os.path.join(REFERENCE, "recompute-minilm-4000", f"{method}-recompute-{recompute}.json")) as f:
                record = json.load(f)
            assert record["config"]["recompute_in_backward"] is recompute
            arguments = record["config"]["training_arguments"]
            assert arguments["torch_compile"] and arguments["bf16"] and record["config"]["bf16_frozen_weights"]
            assert (record["config"]["lr_preset"], arguments["seed"], record["data"]["train_sentences"]) == (
                "tuned",
                42,
                4000,
            )
            runs[method, recompute] = record

    def score(record):
        metrics = record["metrics"]
        return f"{100 * metrics['eval_correct'] / metrics['eval_total']:.2f} % ({metrics['eval_correct']}/872)"

    full, keep = runs["full", True], runs["full", False]
    differ = sum(a != b for a, b in zip(full["predictions"], keep["predictions"]))
    assert (
        f"full fine-tuning reached {score(full)} recomputing and {score(keep)} keeping the copies ({differ} of the "
        "872 predictions differ)"
    ) in readme
    prefix, kept = runs["prefix", True], runs["prefix", False]
    only_recomputing, only_keeping, p = exact_mcnemar(prefix["predictions"], kept["predictions"], prefix["labels"])
    assert (
        f"prefix tuning {score(prefix)} and {score(kept)} (McNemar p = {p:.2g}: {only_recomputing} sentences only "
        f"the recomputing run got right, {only_keeping} only the other)"
    ) in readme
    times = [runs[key]["efficiency"]["train_time_s"] for key in runs]  # full: recompute, keep; prefix: the same
    assert (
        f"({times[0]:.1f} s against {times[1]:.1f} for full fine-tuning, {times[2]:.1f} against {times[3]:.1f} "
        "for prefix tuning)"
    ) in readme
    added = sorted(100 * recomputing / keeping - 100 for recomputing, keeping in (times[:2], times[2:]))
    assert f"recomputing added {added[0]:.0f} to {added[1]:.0f} % to the training time" in readme


def test_the_readme_s_rounding_runs_without_dropout_are_the_committed_runs():
    """Two identical runs agree prediction for prediction; a change of optimizer kernel or of padding does not."""
    with open(os.path.join(ROOT, "README.md")) as handle:
        readme = " ".join(handle.read().split())
    folder = os.path.join(REFERENCE, "no-dropout-minilm-4000")
    runs = {}
    for name in ("prefix-fast-1", "prefix-fast-2", "prefix-fast-adamw-torch", "prefix-original"):
        with open(os.path.join(folder, f"{name}.json")) as handle:
            runs[name] = json.load(handle)
    for run in runs.values():
        arguments = run["config"]["training_arguments"]
        assert (arguments["learning_rate"], arguments["seed"], run["environment"]["cpu_threads"]) == (1e-3, 42, 1)
        assert run["model"]["name"] == "all-MiniLM-L6-v2-no-dropout" and run["data"]["train_sentences"] == 4000
    one, two = runs["prefix-fast-1"], runs["prefix-fast-2"]
    assert one["predictions"] == two["predictions"]
    assert runs["prefix-fast-adamw-torch"]["config"]["training_arguments"]["optim"] == "adamw_torch"
    assert one["config"]["training_arguments"]["optim"] == "adamw_torch_fused"
    assert runs["prefix-original"]["config"]["recipe"] == "original"
    accuracy = {name: 100 * run["metrics"]["eval_accuracy"] for name, run in runs.items()}
    assert f"the same fast run repeated gave {accuracy['prefix-fast-1']:.2f} % both times" in readme
    assert f"a change of rounding only, gave {accuracy['prefix-fast-adamw-torch']:.2f} %" in readme
    assert f"padding to 128 (`--recipe original`) gave {accuracy['prefix-original']:.2f} %" in readme
    gap = accuracy["prefix-fast-adamw-torch"] - accuracy["prefix-fast-1"]
    assert f"rounding alone moved one run by {gap:.2f} points" in readme


def test_the_readme_s_same_step_numbers_are_the_committed_check():
    with open(os.path.join(ROOT, "README.md")) as handle:
        readme = " ".join(handle.read().split())
    with open(os.path.join(REFERENCE, "same-step-minilm", "same_step.json")) as handle:
        report = json.load(handle)
    full, prefix = report["rows"]
    assert (full["method"], prefix["method"]) == ("full", "prefix") and full["widths"] == [128, 29]
    assert full["loss_padded"] == full["loss_longest"] and prefix["loss_padded"] == prefix["loss_longest"]
    assert "(29 tokens)" in readme and "The loss is the same to the last bit" in readme
    assert (
        f"within {full['max_relative_gradient_difference']:.1e} of its tensor's largest value for full fine-tuning, "
        f"{prefix['max_relative_gradient_difference']:.1e} for prefix tuning"
    ).replace("e-0", "e-") in readme
    zero = full["zero_gradient_tensors"]
    assert sorted(zero) == [f"bert.encoder.layer.{i}.attention.self.key.bias" for i in range(6)]
    assert not prefix["zero_gradient_tensors"]
    assert f"{min(zero.values()):.0e} to {max(zero.values()):.0e} here" in readme
