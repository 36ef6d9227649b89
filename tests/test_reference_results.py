"""The reference results committed under results/reference/: the runs behind the README's numbers and figures.

Each set regenerates its summary and figures from its runs' JSONs alone, identically; no file names a path of
the machine that made it; every run records the command that made it.
"""

import filecmp
import json
import os
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


def test_the_readme_s_whole_set_table_is_the_committed_runs():
    """Each row's accuracies, copied into the README by hand, equal its runs' counts of right answers."""
    with open(os.path.join(ROOT, "README.md")) as handle:
        lines = handle.read().splitlines()
    header = "| method | trainable (MiniLM) | seed 1 | seed 2 | seed 3 |"
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in lines[start + 2 : end]]
    runs, skipped = load_results(os.path.join(REFERENCE, "whole-sst2-minilm-cpu"))
    assert not skipped
    accuracy = {
        (run["method"], seed_of(run)): 100 * run["metrics"]["eval_correct"] / run["metrics"]["eval_total"]
        for run in runs
    }
    assert len(accuracy) == len(runs) == 27
    assert {row[0] for row in rows} == {method for method, _ in accuracy}
    for method, _, *seed_cells, mean_std in (row[:6] for row in rows):
        seeds = [accuracy.get((method, seed)) for seed in (1, 2, 3)]
        assert seed_cells == ["—" if a is None else f"{a:.2f} %" for a in seeds], method
        ran = [a for a in seeds if a is not None]
        assert mean_std == f"{statistics.mean(ran):.2f} ± {statistics.stdev(ran):.2f} %", method
