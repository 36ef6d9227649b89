"""A run stopped in the middle of an epoch, by SIGKILL or by Ctrl-C, resumes to the result of a run never stopped.

The signal comes from inside the run, right after a given checkpoint is saved (tests/signal_after_save.py),
so the run stops at the same step every time: nothing waits on a clock.
"""

import os
import subprocess
import sys

import pytest
from conftest import ROOT, tiny_argv

import plot_results
from experiment import main
from results import problem_with, read_json

pytestmark = pytest.mark.slow
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
# 96 toy sentences, batch 16: 6 steps an epoch, 12 in all; a checkpoint every 4 steps, so 4 and 8 fall mid-epoch.
FLAGS = ("--save_strategy", "steps", "--save_steps", "4")


def stopped_run(method, step, signal_name, argv):
    return subprocess.run(
        [sys.executable, os.path.join("tests", "signal_after_save.py"), str(step), signal_name, method, *argv],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def straight(tiny_model, tiny_data, tmp_path_factory):
    """One uninterrupted run of each method, the reference for every resumed one."""
    folder = tmp_path_factory.mktemp("straight")
    for method in ("full", "prefix"):
        assert main(tiny_argv(tiny_model, tiny_data, folder, *FLAGS, "--run_name", method), method=method) == 0
    return {method: read_json(folder / f"{method}.json") for method in ("full", "prefix")}


def assert_same_run(resumed, straight):
    assert resumed["status"] == "completed" and resumed["resumed"] and not straight["resumed"]
    assert resumed["efficiency"]["train_steps"] == straight["efficiency"]["train_steps"] == 12
    assert resumed["predictions"] == straight["predictions"]
    for a, b in zip(resumed["history"], straight["history"], strict=True):
        assert (a["epoch"], a["step"], a["eval_accuracy"]) == (b["epoch"], b["step"], b["eval_accuracy"])
        assert a["eval_loss"] == pytest.approx(b["eval_loss"], abs=1e-5)
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-5)
    for key in ("eval_accuracy", "eval_loss", "train_loss"):
        assert resumed["metrics"][key] == pytest.approx(straight["metrics"][key], abs=1e-5)


@pytest.mark.parametrize("method", ["full", "prefix"])
def test_killed_mid_epoch_resumes_to_the_same_result(method, straight, tiny_model, tiny_data, tmp_path):
    argv = tiny_argv(tiny_model, tiny_data, tmp_path, *FLAGS, "--run_name", "killed")
    done = stopped_run(method, 8, "SIGKILL", argv)
    assert done.returncode == -9, done.stderr[-2000:]
    assert not (tmp_path / "killed.json").exists()  # killed: nothing was written after the checkpoint
    assert not list(tmp_path.glob(".tmp-*"))  # no half-written file either

    assert main(argv, method=method) == 0
    resumed = read_json(tmp_path / "killed.json")
    assert [(s["start_step"], s["end_step"]) for s in resumed["segments"]] == [(0, 8), (8, 12)]
    assert_same_run(resumed, straight[method])


@pytest.mark.parametrize("method", ["full", "prefix"])
def test_ctrl_c_mid_epoch_saves_records_and_resumes_to_the_same_result(
    method, straight, tiny_model, tiny_data, tmp_path
):
    argv = tiny_argv(tiny_model, tiny_data, tmp_path, *FLAGS, "--run_name", "stopped")
    done = stopped_run(method, 4, "SIGINT", argv)
    assert done.returncode == 130, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "--resume" in done.stderr
    record = read_json(tmp_path / "stopped.json")
    assert record["status"] == "interrupted" and record["step"] == 5  # the step under way, then a checkpoint
    assert record["checkpoint"].endswith("checkpoint-5")
    assert os.path.isfile(os.path.join(record["checkpoint"], "trainer_state.json"))
    assert len(list((tmp_path / "checkpoints" / "stopped").glob("checkpoint-*"))) == 1  # only what resuming needs
    assert problem_with(record)  # the plotter skips it
    assert plot_results.main(["--results_dir", str(tmp_path)]) == 1  # nothing completed to plot

    assert main(argv, method=method) == 0
    resumed = read_json(tmp_path / "stopped.json")
    assert [(s["start_step"], s["end_step"]) for s in resumed["segments"]] == [(0, 5), (5, 12)]
    assert_same_run(resumed, straight[method])


def test_ctrl_c_that_also_ends_the_reader_of_the_output_still_saves_and_records(tiny_model, tiny_data, tmp_path):
    """`python train_prefix.py | tee log`, then Ctrl-C: the shell's SIGINT ends tee as well, and every write after
    that raises BrokenPipeError. The run must still save its checkpoint and record itself, not fail on a print."""
    argv = tiny_argv(tiny_model, tiny_data, tmp_path, *FLAGS, "--run_name", "piped")
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the run writes anything: every write fails
    try:
        done = subprocess.run(
            [sys.executable, os.path.join("tests", "signal_after_save.py"), "4", "SIGINT", "prefix", *argv],
            cwd=ROOT,
            env=ENV,
            stdout=write_end,
            stderr=write_end,
            timeout=300,
        )
    finally:
        os.close(write_end)
    record = read_json(tmp_path / "piped.json")
    assert (record["status"], record["step"], done.returncode) == ("interrupted", 5, 130), record.get("error")
    assert os.path.isfile(os.path.join(record["checkpoint"], "trainer_state.json"))
