"""Runs survive interruption, crashes and kills, and a resumed run ends where an uninterrupted one does."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import ROOT, tiny_argv, write_toy_sst2

import resilience
from experiment import main
from resilience import hint_for
from results import problem_with
from results import read_json, write_json_atomic

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


@pytest.fixture(scope="module")
def bigger_data(tmp_path_factory):
    """Enough sentences that an epoch lasts long enough to be caught in the middle (75 steps)."""
    return write_toy_sst2(tmp_path_factory.mktemp("sst2-bigger"), train=1200, seed=11)


def start(script, argv):
    return subprocess.Popen(
        [sys.executable, script, *argv], cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for(path, process, timeout=180):
    deadline = time.time() + timeout
    while not os.path.exists(path):
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def test_sigint_saves_a_checkpoint_and_records_interrupted(tiny_model, bigger_data, tmp_path):
    process = start(
        "train_finetune.py",
        tiny_argv(tiny_model, bigger_data, tmp_path, "--num_train_epochs", "50", "--run_name", "stopped"),
    )
    wait_for(tmp_path / "checkpoints" / "stopped" / "checkpoint-75" / "trainer_state.json", process)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "--resume" in err
    record = read_json(tmp_path / "stopped.json")
    assert record["status"] == "interrupted" and record["step"] > 75
    assert os.path.isfile(os.path.join(record["checkpoint"], "trainer_state.json"))
    assert record["checkpoint"].endswith(f"checkpoint-{record['step']}")  # saved where it stopped
    assert len(list((tmp_path / "checkpoints" / "stopped").glob("checkpoint-*"))) == 1  # only what resuming needs
    assert problem_with(record)  # the plotter skips it

    import plot_results

    assert plot_results.main(["--results_dir", str(tmp_path)]) == 1  # nothing completed to plot


def test_a_run_killed_in_its_second_epoch_resumes_to_the_same_result(tiny_model, bigger_data, tmp_path):
    flags = ("--num_train_epochs", "3")
    assert main(tiny_argv(tiny_model, bigger_data, tmp_path, *flags, "--run_name", "straight"), method="prefix") == 0

    process = start("train_prefix.py", tiny_argv(tiny_model, bigger_data, tmp_path, *flags, "--run_name", "killed"))
    wait_for(tmp_path / "checkpoints" / "killed" / "checkpoint-75" / "trainer_state.json", process)
    time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert not (tmp_path / "killed.json").exists()
    assert not list(tmp_path.glob(".tmp-*"))  # no half-written file either
    assert not (tmp_path / "checkpoints" / "killed" / "checkpoint-150" / "trainer_state.json").exists()

    assert main(tiny_argv(tiny_model, bigger_data, tmp_path, *flags, "--run_name", "killed"), method="prefix") == 0
    straight, resumed = read_json(tmp_path / "straight.json"), read_json(tmp_path / "killed.json")
    assert resumed["status"] == "completed" and resumed["resumed"] and not straight["resumed"]
    assert [s["start_step"] for s in resumed["segments"]] == [0, 75]
    assert resumed["segments"][0]["end_step"] == 75 and resumed["segments"][1]["end_step"] == 225
    assert resumed["efficiency"]["train_steps"] == straight["efficiency"]["train_steps"] == 225
    assert resumed["predictions"] == straight["predictions"]
    for a, b in zip(resumed["history"], straight["history"], strict=True):
        assert (a["epoch"], a["step"], a["eval_accuracy"]) == (b["epoch"], b["step"], b["eval_accuracy"])
        assert a["eval_loss"] == pytest.approx(b["eval_loss"], abs=1e-5)
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-5)
    for key in ("eval_accuracy", "eval_loss", "train_loss"):
        assert resumed["metrics"][key] == pytest.approx(straight["metrics"][key], abs=1e-5)


def test_a_nan_loss_stops_the_run_and_names_the_learning_rate(tiny_model, tiny_data, tmp_path, capsys):
    flags = ("--learning_rate", "1e30", "--num_train_epochs", "20", "--run_name", "nan")
    assert main(tiny_argv(tiny_model, tiny_data, tmp_path, *flags), method="full") == 1
    assert "lower --learning_rate" in capsys.readouterr().err
    record = read_json(tmp_path / "nan.json")
    assert record["status"] == "failed" and record["error"]["type"] == "NonFiniteLoss"
    assert record["step"] < 20  # stopped within a few steps, not after 120


def test_a_disk_error_is_recorded_as_failed(tiny_model, tiny_data, tmp_path, capsys, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(resilience.ResilientTrainer, "_save_checkpoint", full_disk)
    assert main(tiny_argv(tiny_model, tiny_data, tmp_path, "--run_name", "disk"), method="full") == 1
    assert "free disk space" in capsys.readouterr().err
    record = read_json(tmp_path / "disk.json")
    assert record["status"] == "failed" and record["step"] == 6  # the first epoch's save


def test_out_of_memory_tells_what_to_change():
    hint = hint_for(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert "--per_device_train_batch_size" in hint and "--recipe fast" in hint
    assert "--gradient_accumulation_steps" in hint  # a smaller batch per pass, the same batch per step


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--resume"], "--resume needs the --run_name"),
        (["--resume", "--run_name", "never-ran"], "no checkpoint of run 'never-ran'"),
    ],
)
def test_resume_needs_something_to_resume(flags, message, tiny_model, tiny_data, tmp_path, capsys):
    assert main(tiny_argv(tiny_model, tiny_data, tmp_path, *flags), method="full") == 2
    assert message in capsys.readouterr().err


def test_resume_refuses_other_settings(tiny_model, tiny_data, tmp_path, capsys, monkeypatch):
    original_train = resilience.ResilientTrainer.train

    def train_one_epoch_then_die(self, *args, **kwargs):
        self.args.num_train_epochs = 1  # leaves a checkpoint, then "crashes"
        original_train(self, *args, **kwargs)
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(resilience.ResilientTrainer, "train", train_one_epoch_then_die)
    assert main(tiny_argv(tiny_model, tiny_data, tmp_path, "--run_name", "r"), method="full") == 1
    monkeypatch.undo()
    assert read_json(tmp_path / "r.json")["status"] == "failed"
    capsys.readouterr()
    for flags, changed in (
        (["--learning_rate", "5e-4"], "learning_rate"),
        (["--gradient_accumulation_steps", "2"], "gradient_accumulation_steps"),
    ):
        assert main(tiny_argv(tiny_model, tiny_data, tmp_path, "--run_name", "r", *flags), method="full") == 2
        assert f"other settings ({changed})" in capsys.readouterr().err
    # A checkpoint from before a setting joined the list resumes: what it lacks is not held against it.
    state_path = tmp_path / "checkpoints" / "r" / resilience.RUN_STATE
    state = read_json(state_path)
    del state["settings"]["gradient_accumulation_steps"]
    write_json_atomic(state_path, state)
    assert main(tiny_argv(tiny_model, tiny_data, tmp_path, "--run_name", "r"), method="full") == 0
    assert read_json(tmp_path / "r.json")["resumed"] is True


def test_same_seed_same_everything(tiny_model, tiny_data, tmp_path):
    for name in ("first", "second"):
        assert main(tiny_argv(tiny_model, tiny_data, tmp_path, "--run_name", name), method="prefix") == 0
    first, second = read_json(tmp_path / "first.json"), read_json(tmp_path / "second.json")
    assert first["metrics"] == second["metrics"]
    assert first["history"] == second["history"]
    assert first["predictions"] == second["predictions"]


def test_check_env_proves_prefix_tuning_works():
    done = subprocess.run(
        [sys.executable, "utils.py", "--check-env"], cwd=ROOT, env=ENV, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "prefix tuning on BERT: works" in done.stdout
    assert "transformers" in done.stdout and "bf16" in done.stdout


@pytest.mark.parametrize("writer", [True, False])
def test_only_the_writer_rank_saves_the_trainable_state(writer, tiny_model, tmp_path, monkeypatch):
    """The Trainer calls _save on every rank of a data-parallel run; only one may write the file."""
    from transformers import AutoModelForSequenceClassification, TrainingArguments

    from config import ExperimentArguments
    from methods import apply_method

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2)
    model = apply_method(model, "prefix", ExperimentArguments(method="prefix", num_virtual_tokens=4))
    trainer = resilience.ResilientTrainer(
        model=model, args=TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    )
    monkeypatch.setattr(TrainingArguments, "should_save", property(lambda self: writer))
    trainer._save(str(tmp_path / "checkpoint"))
    saved = tmp_path / "checkpoint" / resilience.ResilientTrainer.TRAINABLE_STATE
    assert saved.is_file() == writer
