"""Both train scripts run the whole pipeline and write a results file that follows the contract."""

import csv
import glob
import hashlib
import json
import os
import shlex
import subprocess
import sys
from datetime import datetime
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import ROOT, strings, tiny_argv
from transformers import EvalPrediction, Trainer
from transformers.trainer_utils import PredictionOutput

from experiment import final_evaluation, main
from methods import METHODS
from metrics import ScoredAccuracy
from results import REQUIRED, SCHEMA_VERSION, problem_with, read_json

# The README's schema ("The results JSON"), written out here rather than taken from the code that writes it.
README_SCHEMA = {
    None: {
        "schema_version", "status", "method", "run_name", "created_at", "config", "params", "metrics",
        "efficiency", "data", "history", "environment", "predictions", "labels", "adapter_size_mb", "resumed",
        "segments", "step", "model_dir", "command", "model",
    },
    "model": {"name", "model_type"},
    "params": {"trainable", "total", "trainable_percent"},
    "metrics": {
        "eval_accuracy", "eval_correct", "eval_total", "eval_loss", "train_loss", "best_eval_accuracy", "best_epoch",
    },
    "efficiency": {
        "train_time_s", "eval_time_s", "total_time_s", "train_steps", "train_samples_per_s", "peak_memory_mb",
        "peak_memory_reserved_mb", "inference_samples_per_s", "peak_memory_mb_per_rank", "world_size",
    },
    "data": {"source", "sha256", "subset", "train_sentences", "eval_sentences", "train_truncated", "eval_truncated"},
    "environment": {"python", "torch", "transformers", "peft", "datasets", "device", "cpu_threads", "git_commit"},
}  # fmt: skip
HISTORY_ROW = {"epoch", "step", "eval_accuracy", "eval_loss", "train_loss"}


def labels_in_file(path):
    """The gold labels of a GLUE TSV, read with the csv module alone."""
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [int(row["label"]) for row in rows]


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


@pytest.mark.parametrize("save", [True, False])
def test_a_run_prints_the_command_that_classifies_with_its_model(save, tiny_model, tiny_data, tmp_path, capsys):
    import predict

    argv = tiny_argv(tiny_model, tiny_data, tmp_path, "--run_name", "r", "--max_steps", "2", "--save_model", str(save))
    assert main(argv, method="lora") == 0
    printed = capsys.readouterr().out.splitlines()
    lines = [line for line in printed if line.startswith("to classify with it: ")]
    assert len(lines) == save
    assert printed[-1].startswith("r: accuracy ")  # the summary stays last: compare.py shows each run's last line
    if save:
        words = shlex.split(lines[0].removeprefix("to classify with it: "))
        assert words[:4] == ["python", "predict.py", "--model", str(tmp_path / "models" / "r")]
        assert predict.main(words[2:]) == 0
        assert "a sentence" in capsys.readouterr().out


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


def count_evaluations(monkeypatch):
    """A list that gains an entry at every pass the Trainer makes over an evaluation set (evaluate and predict
    each make one)."""
    passes, original = [], Trainer.evaluation_loop

    def counted(self, *args, **kwargs):
        passes.append(self.state.global_step)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "evaluation_loop", counted)
    return passes


@pytest.mark.parametrize(
    "extra, expected",
    [
        ((), 2),  # one per epoch: the second scored the model the run ends with
        (("--eval_strategy", "no"), 1),  # none while training: the results need one
        (("--eval_strategy", "steps", "--eval_steps", "5"), 3),  # steps 5, 10 and 12, the Trainer's own at the end
        (("--load_best_model_at_end", "True"), 3),  # the model the run ends with may be the first epoch's
    ],
)
def test_the_dev_set_is_evaluated_once_per_epoch_and_once_more_only_when_needed(
    extra, expected, tiny_model, tiny_data, tmp_path, monkeypatch
):
    passes = count_evaluations(monkeypatch)
    argv = tiny_argv(tiny_model, tiny_data, tmp_path, "--run_name", "r", "--save_model", "False", *extra)
    assert main(argv, method="full") == 0
    assert len(passes) == expected
    record, labels = read_json(tmp_path / "r.json"), labels_in_file(os.path.join(tiny_data, "dev.tsv"))
    assert len(record["predictions"]) == len(labels)
    assert record["metrics"]["eval_correct"] == sum(p == y for p, y in zip(record["predictions"], labels))


def test_an_evaluation_before_the_last_step_is_not_taken_for_the_run_s_final_one():
    scored = ScoredAccuracy()
    scored(EvalPrediction(predictions=np.array([1, 1]), label_ids=np.array([1, 0])))
    fresh = PredictionOutput(predictions=np.array([0, 0]), label_ids=np.array([1, 0]), metrics={"eval_accuracy": 0.5})
    state = SimpleNamespace(global_step=12, log_history=[{"step": 10, "eval_accuracy": 0.5}])
    trainer = SimpleNamespace(
        compute_metrics=scored,
        state=state,
        args=SimpleNamespace(load_best_model_at_end=False),
        predict=lambda *_, **__: fresh,
    )
    assert final_evaluation(trainer, eval_set=None)[1].tolist() == [0, 0]  # evaluated again
    state.log_history.append({"step": 12, "eval_accuracy": 0.5})
    assert final_evaluation(trainer, eval_set=None)[1].tolist() == [1, 1]  # the evaluation at step 12, taken


@pytest.mark.slow
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


@pytest.mark.parametrize("run_name", ["ft", "px"])
def test_accuracy_is_what_the_predictions_score_against_the_dev_file(two_runs, tiny_data, run_name):
    """Recounted from the stored predictions and the labels in dev.tsv, not from the code that computed it."""
    results, _ = two_runs
    record = read_json(results / f"{run_name}.json")
    gold = labels_in_file(os.path.join(tiny_data, "dev.tsv"))
    assert record["labels"] == gold  # in dev order, none shuffled or dropped
    correct = sum(p == y for p, y in zip(record["predictions"], gold, strict=True))
    assert record["metrics"]["eval_correct"] == correct
    assert record["metrics"]["eval_total"] == len(gold)
    assert record["metrics"]["eval_accuracy"] == correct / len(gold)


@pytest.mark.parametrize("run_name", ["ft", "px"])
def test_the_results_file_holds_the_readme_s_schema(two_runs, run_name):
    results, _ = two_runs
    record = read_json(results / f"{run_name}.json")
    for section, keys in README_SCHEMA.items():
        present = set(record if section is None else record[section])
        assert keys <= present, f"{section or 'top level'} lacks {sorted(keys - present)}"
    assert all(HISTORY_ROW <= set(row) for row in record["history"])
    assert datetime.fromisoformat(record["created_at"]).tzinfo is not None
    params, efficiency = record["params"], record["efficiency"]
    assert params["trainable_percent"] == pytest.approx(100 * params["trainable"] / params["total"])
    assert record["adapter_size_mb"] > 0
    assert 0 < efficiency["eval_time_s"] < efficiency["train_time_s"]  # two evaluations inside the training
    assert efficiency["inference_samples_per_s"] > 0
    assert efficiency["world_size"] == 1 and efficiency["peak_memory_mb_per_rank"] == [None]
    assert len(record["predictions"]) == len(record["labels"]) == record["metrics"]["eval_total"]


def test_the_toy_task_is_learned(tiny_model, tiny_data, tmp_path):
    """The pipeline learns: one sentiment word decides each toy label, and full fine-tuning finds it."""
    flags = ["--num_train_epochs", "15", "--learning_rate", "5e-3", "--save_strategy", "no", "--run_name", "learn"]
    assert main(tiny_argv(tiny_model, tiny_data, tmp_path, *flags), method="full") == 0
    record = read_json(tmp_path / "learn.json")
    gold = labels_in_file(os.path.join(tiny_data, "dev.tsv"))
    correct = sum(p == y for p, y in zip(record["predictions"], gold, strict=True))
    assert correct / len(gold) >= 0.95  # 100 % here; 0.42 is the majority class of this dev set
    assert record["history"][-1]["train_loss"] < 0.5 * record["history"][0]["train_loss"]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_writes_a_results_file(method, tiny_model, tiny_data, tmp_path):
    argv = tiny_argv(tiny_model, tiny_data, tmp_path, "--method", method, "--max_steps", "1", "--run_name", "one")
    assert main([*argv, "--save_strategy", "no", "--num_virtual_tokens", "4"]) == 0
    record = read_json(tmp_path / "one.json")
    assert problem_with(record) is None and record["method"] == method
    assert record["efficiency"]["train_steps"] == 1 and record["metrics"]["eval_total"] == 40


@pytest.mark.parametrize("run_name, script", [("ft", "train_finetune.py"), ("px", "train_prefix.py")])
def test_a_results_file_names_no_path_of_this_machine(two_runs, run_name, script, tiny_model, tiny_data):
    """So that results can be committed: the model by its name, the data by its folder's name and checksums."""
    results, _ = two_runs
    record = read_json(results / f"{run_name}.json")
    model_dir = record.pop("model_dir")  # where this machine saved the model: for predict.py, here
    leaks = [text for text in strings(record) if str(results) in text or tiny_model in text or tiny_data in text]
    assert leaks == []
    assert record["model"]["name"] == os.path.basename(tiny_model) and model_dir.startswith(str(results))
    assert record["data"]["source"] == os.path.basename(tiny_data)
    for name in ("train.tsv", "dev.tsv"):
        with open(os.path.join(tiny_data, name), "rb") as handle:
            assert record["data"]["sha256"][name] == hashlib.sha256(handle.read()).hexdigest()
    assert record["command"].startswith(f"python {script} --model_name_or_path {os.path.basename(tiny_model)} ")
