"""Runs survive crashes, NaN losses and full disks, refuse to resume with other settings, and keep complete
checkpoints. Stopping and resuming mid-epoch: tests/test_resume.py."""

import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, tiny_argv

import resilience
from experiment import main
from resilience import hint_for
from results import read_json, write_json_atomic

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


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


@pytest.mark.slow
def test_check_env_proves_prefix_tuning_works():
    done = subprocess.run(
        [sys.executable, "utils.py", "--check-env"], cwd=ROOT, env=ENV, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "prefix tuning on BERT: works" in done.stdout
    assert "transformers" in done.stdout and "bf16" in done.stdout
    assert "fast recipe: fp32, eager" in done.stdout  # this CPU: what a train script's default recipe runs here


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


def test_peft_still_saves_only_the_prefix_s_output(tiny_model, tmp_path):
    """Why CompletePeftCheckpoints overrides private Trainer hooks: peft's own save of a prefix-tuning adapter
    holds the prefix it computes, not the projection MLP that trains, so a run could not resume from it.
    If this fails, peft saves what trains and the override can go."""
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    from config import ExperimentArguments
    from methods import apply_method

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2)
    model = apply_method(model, "prefix", ExperimentArguments(method="prefix", num_virtual_tokens=4))
    model.save_pretrained(str(tmp_path))
    saved = set(load_file(str(tmp_path / "adapter_model.safetensors")))
    projection = [name for name, p in model.named_parameters() if p.requires_grad and "prompt_encoder" in name]
    assert any(".transform." in name for name in projection)  # the MLP trains...
    assert not any(".transform." in name for name in saved)  # ...and peft does not save it


def test_a_completed_run_s_checkpoints_leave_no_empty_folders_and_nothing_else(tmp_path):
    """The results' checkpoints/ goes with the last run's folder in it; another run's folder keeps it, and a folder
    the user named elsewhere (--output_dir) leaves its parent alone."""
    parent = tmp_path / "results" / "checkpoints"
    for run in ("done", "running"):
        (parent / run / "checkpoint-4").mkdir(parents=True)
        (parent / run / resilience.RUN_STATE).write_text("{}")
    resilience.remove_checkpoints(str(parent / "done"), parent=str(parent))
    assert sorted(p.name for p in parent.iterdir()) == ["running"]  # another run is resuming from its own
    resilience.remove_checkpoints(str(parent / "running"), parent=str(parent))
    assert not parent.exists() and (tmp_path / "results").is_dir()
    elsewhere = tmp_path / "mine" / "run"
    (elsewhere / "checkpoint-4").mkdir(parents=True)
    resilience.remove_checkpoints(str(elsewhere), parent=str(parent))
    assert not elsewhere.exists() and (tmp_path / "mine").is_dir()
