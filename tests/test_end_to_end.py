"""Both train scripts run the whole pipeline and write a results file that follows the contract."""

import glob
import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT, tiny_argv

from experiment import main
from results import REQUIRED, SCHEMA_VERSION, problem_with
from results import read_json


@pytest.fixture(scope="module")
def two_runs(tiny_model, tiny_data, tmp_path_factory):
    """One run of each script into one results folder that already holds an earlier file."""
    results = tmp_path_factory.mktemp("results")
    earlier = results / "earlier.json"
    earlier.write_text('{"schema_version": 1, "status": "completed", "note": "an earlier run"}\n')
    before = earlier.read_bytes()
    assert main(tiny_argv(tiny_model, tiny_data, results, "--run_name", "ft"), method="full") == 0
    assert main(tiny_argv(tiny_model, tiny_data, results, "--run_name", "px"), method="prefix") == 0
    return results, before


@pytest.mark.parametrize("run_name, method", [("ft", "full"), ("px", "prefix")])
def test_results_file_follows_the_contract(two_runs, run_name, method):
    results, _ = two_runs
    record = read_json(results / f"{run_name}.json")
    assert problem_with(record) is None
    assert record["schema_version"] == SCHEMA_VERSION and record["status"] == "completed"
    assert record["method"] == method and record["run_name"] == run_name
    for section, keys in REQUIRED.items():
        assert set(keys) <= set(record[section])
    metrics = record["metrics"]
    assert 0 <= metrics["eval_accuracy"] <= 1
    assert metrics["eval_correct"] == round(metrics["eval_accuracy"] * metrics["eval_total"])
    assert metrics["eval_total"] == 40  # the whole tiny dev set
    assert [row["epoch"] for row in record["history"]] == [1.0, 2.0]
    assert all(row["train_loss"] > 0 and row["eval_loss"] > 0 for row in record["history"])
    assert metrics["best_eval_accuracy"] == max(row["eval_accuracy"] for row in record["history"])
    assert record["efficiency"]["peak_memory_mb"] is None  # CPU: torch does not track it
    assert 0 < record["efficiency"]["train_time_s"] <= record["efficiency"]["total_time_s"]
    assert record["efficiency"]["train_steps"] == 2 * 6  # 96 sentences, batch 16, 2 epochs
    params = record["params"]
    assert 0 < params["trainable"] <= params["total"]
    assert record["config"]["training_arguments"]["learning_rate"] == 1e-3
    assert record["environment"]["device"] == "cpu"
    assert {"python", "torch", "transformers", "peft", "datasets", "git_commit"} <= set(record["environment"])
    json.dumps(record, allow_nan=False)  # strict JSON


def test_prefix_trains_fewer_parameters_than_full(two_runs):
    results, _ = two_runs
    full, prefix = read_json(results / "ft.json"), read_json(results / "px.json")
    assert prefix["params"]["trainable"] < full["params"]["trainable"]
    assert prefix["config"]["peft_config"]["peft_type"] == "PREFIX_TUNING"
    assert prefix["config"]["peft_config"]["num_virtual_tokens"] == 20
    assert full["config"]["peft_config"] is None


def test_earlier_results_are_left_untouched(two_runs, tiny_model, tiny_data, capsys):
    results, before = two_runs
    assert (results / "earlier.json").read_bytes() == before
    first = (results / "ft.json").read_bytes()
    assert main(tiny_argv(tiny_model, tiny_data, results, "--run_name", "ft"), method="full") == 2
    assert "already holds a completed run" in capsys.readouterr().err
    assert (results / "ft.json").read_bytes() == first
    assert not glob.glob(str(results / ".tmp-*"))  # no temporary files left behind


def test_default_run_name_is_method_and_utc_time(tiny_model, tiny_data, tmp_path):
    assert main(tiny_argv(tiny_model, tiny_data, tmp_path, "--max_steps", "2"), method="prefix") == 0
    (path,) = glob.glob(str(tmp_path / "*.json"))
    name = os.path.basename(path)
    assert name.startswith("prefix-20") and name.endswith("Z.json")


def test_plots_and_summary_from_the_results(two_runs, capsys):
    import plot_results

    results, _ = two_runs
    (results / "corrupt.json").write_text('{"schema_version": 1, "sta')
    assert plot_results.main(["--results_dir", str(results)]) == 0
    out = capsys.readouterr().out
    assert "corrupt.json" in out and "earlier.json" in out  # skipped, and named
    for name in ("accuracy_loss_params.png", "memory_time.png", "accuracy_per_epoch.png", "accuracy_vs_parameters.png"):
        png = results / "figures" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    summary = (results / "summary.md").read_text()
    for row in ("Accuracy", "Train Loss", "Trainable Params", "Max GPU Memory", "Training Time"):
        assert f"| {row} |" in summary
    assert "full (1 run)" in summary and "prefix (1 run)" in summary


def test_scripts_run_as_commands(tiny_model, tiny_data, tmp_path):
    """The entry points work from a shell, and --help documents the original's defaults."""
    help_text = subprocess.run([sys.executable, "train_prefix.py", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert help_text.returncode == 0
    for flag in (
        "--model_name_or_path",
        "--data_dir",
        "--max_train_samples",
        "--num_virtual_tokens",
        "--prefix_projection",
        "--learning_rate",
        "--max_steps",
        "--use_cpu",
        "--recipe",
    ):
        assert flag in help_text.stdout
    done = subprocess.run(
        [sys.executable, "train_finetune.py", *tiny_argv(tiny_model, tiny_data, tmp_path, "--max_steps", "3")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "accuracy" in done.stdout.splitlines()[-1]  # the one-line summary
