"""Bad input is refused with one clear sentence and a non-zero exit, before anything is trained."""

import os
import subprocess
import sys

import pytest
from conftest import ROOT, tiny_argv, toy_sentences, write_tsv

from experiment import main
from results import read_json


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--learning_rate", "-1"], "--learning_rate must be positive"),
        (["--learning_rate", "0"], "--learning_rate must be positive"),
        (["--num_train_epochs", "0"], "--num_train_epochs must be positive"),
        (["--max_train_samples", "0"], "--max_train_samples must be a positive number"),
        (["--max_eval_samples", "-3"], "--max_eval_samples must be a positive number"),
        (["--per_device_train_batch_size", "0"], "batch sizes must be at least 1"),
        (["--num_virtual_tokens", "0"], "--num_virtual_tokens must be at least 1"),
        (["--max_seq_length", "2"], "--max_seq_length must be at least 4"),
        (["--bogus_flag", "1"], "unrecognized arguments: --bogus_flag"),
        (["--learning_rat", "1e-3"], "unrecognized arguments"),  # no silent abbreviations
        (["--learning_rate", "fast"], "invalid float value"),
        (["--recipe", "turbo"], "invalid choice"),
        (["--run_name", "a/b"], "must be a plain file name"),
        (["--method", "adapters"], "argument --method: invalid choice: 'adapters'"),
        (["--lora_r", "0"], "LoRA needs --lora_r >= 1"),
        (["--per_device_eval_batch_size", "0"], "batch sizes must be at least 1"),
        (["--holdout_fraction", "0.9"], "--holdout_fraction must be between 0 and 0.5"),
        (["--lr_preset", "best"], "invalid choice"),
    ],
)
def test_invalid_settings(flags, message, tiny_model, tiny_data, earlier_results, capsys):
    results, before = earlier_results
    argv = tiny_argv(tiny_model, tiny_data, results, *flags)
    assert main(argv if "--method" in flags else ["--method", "prefix", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert "Traceback" not in err
    assert snapshot(results) == before  # nothing written, nothing lost


@pytest.fixture
def earlier_results(tmp_path):
    """A results folder that already holds another run's file, which bad input must leave alone."""
    results = tmp_path / "results"
    results.mkdir()
    (results / "earlier.json").write_text('{"schema_version": 1, "status": "completed"}\n')
    return results, snapshot(results)


def snapshot(folder):
    return {path.name: path.read_bytes() for path in folder.iterdir()}


def test_a_missing_data_dir_is_refused(tiny_model, tmp_path, capsys):
    assert main(tiny_argv(tiny_model, str(tmp_path / "nowhere"), tmp_path), method="full") == 2
    assert "is not a folder" in capsys.readouterr().err


def test_a_results_dir_that_cannot_be_written(tiny_model, tiny_data, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(tiny_argv(tiny_model, tiny_data, blocker / "results"), method="full") == 2
    assert "cannot be written" in capsys.readouterr().err


def test_a_missing_model_folder(tiny_data, tmp_path, capsys):
    assert main(tiny_argv(str(tmp_path / "no-model"), tiny_data, tmp_path), method="full") == 2
    assert "is not a folder" in capsys.readouterr().err


def test_this_script_runs_only_its_method(tiny_model, tiny_data, tmp_path, capsys):
    assert main(tiny_argv(tiny_model, tiny_data, tmp_path, "--method", "full"), method="prefix") == 2
    assert "always runs 'prefix'" in capsys.readouterr().err


def make_data(folder, train=None, dev=None):
    folder.mkdir(parents=True, exist_ok=True)
    write_tsv(folder / "train.tsv", train or toy_sentences(20, seed=1))
    write_tsv(folder / "dev.tsv", dev or toy_sentences(8, seed=2))
    return folder


@pytest.mark.parametrize(
    "breakage, message",
    [
        (lambda d: (d / "dev.tsv").unlink(), "has no validation file"),
        (lambda d: (d / "train.tsv").write_text(""), "train.tsv is empty"),
        (lambda d: (d / "train.tsv").write_text("text\tlabel\nthe movie\t1\n"), "has no 'sentence' column"),
        (lambda d: (d / "dev.tsv").write_text("sentence\tlabel\ngood\t1\nbad\t2\n"), "labels outside {0, 1}: [2]"),
        (
            lambda d: (d / "dev.tsv").write_text("sentence\tlabel\ngood\tpositive\n"),
            "line 2: label 'positive' is not 0 or 1",
        ),
        (lambda d: (d / "dev.tsv").write_text("sentence\tlabel\n"), "has no rows"),
        (
            lambda d: (d / "train.tsv").write_bytes(b"sentence\tlabel\ngood\t1\ncaf\xe9 bad\t0\n"),
            "train.tsv, line 3: not UTF-8",
        ),
    ],
)
def test_bad_data_names_the_file(breakage, message, tiny_model, tmp_path, earlier_results, capsys):
    results, before = earlier_results
    data = make_data(tmp_path / "data")
    breakage(data)
    assert main(tiny_argv(tiny_model, str(data), results), method="full") == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert snapshot(results) == before


@pytest.mark.parametrize("multiple, room", [(None, 44), ("16", 32)])  # 64 positions - 20 virtual tokens
def test_a_dev_sentence_longer_than_the_model_is_truncated_and_reported(multiple, room, tiny_model, tmp_path, capsys):
    """Also when batches are padded up to a multiple of 16 tokens: 44 would pad to 48, past the table."""
    data = make_data(tmp_path / "data", dev=[*toy_sentences(7, seed=2), ("good " * 80, 1)])
    flags = ["--max_seq_length", "512", "--run_name", "long"] + (["--pad_to_multiple_of", multiple] if multiple else [])
    assert main(tiny_argv(tiny_model, str(data), tmp_path, *flags), method="prefix") == 0
    assert f"1 of 8 dev sentences are longer than {room} tokens" in capsys.readouterr().out
    record = read_json(tmp_path / "long.json")
    assert record["data"]["eval_truncated"] == 1 and record["config"]["effective_max_seq_length"] == room


@pytest.mark.slow
def test_no_wall_of_traceback_from_the_command_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "train_finetune.py", "--learning_rate", "-1"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert done.stderr.strip() == "error: --learning_rate must be positive (got -1.0)."


@pytest.mark.slow
@pytest.mark.parametrize(
    "flags, message",
    [
        ([], "could not fetch the model 'bert-base-uncased' from the Hugging Face Hub"),
        (["--model_name_or_path", "MODEL"], "could not fetch GLUE SST-2 from the Hugging Face Hub"),
    ],
)
def test_an_unreachable_hub_says_how_to_run_offline(flags, message, tiny_model, tmp_path):
    flags = [tiny_model if flag == "MODEL" else flag for flag in flags]
    # An empty Hugging Face home: a machine that cached bert-base-uncased or GLUE must fail here all the same.
    caches = ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE", "HF_DATASETS_CACHE", "HF_XET_CACHE")
    env = {name: value for name, value in os.environ.items() if name not in caches}
    env.update(HF_HOME=str(tmp_path / "hf-home"), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "train_prefix.py", "--results_dir", str(tmp_path), *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 2
    assert message in done.stderr and "--data_dir DIR" in done.stderr  # neither comes from a folder
    assert ("--model_name_or_path DIR" in done.stderr) == (flags == [])  # named only when the model comes from the Hub
    assert "Traceback" not in done.stderr and done.stderr.count("error:") == 1
