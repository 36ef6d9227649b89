"""sweep.py chooses a rate on held-out training sentences; compare.py runs a grid and summarises it."""

import os

import pytest

import compare
import summary
import sweep
from results import flag_value, read_json, without_flags


def shared_flags(model, data):
    return [
        "--model_name_or_path",
        model,
        "--data_dir",
        data,
        "--num_train_epochs",
        "1",
        "--disable_tqdm",
        "True",
        "--save_strategy",
        "no",
    ]


def test_sweep_scores_on_a_held_out_slice_never_on_dev(tiny_model, tiny_data, tmp_path):
    flags = ["--method", "full", "--grid", "1e-4,3e-3", "--seeds", "1,2", "--results_dir", str(tmp_path)]
    assert sweep.main([*flags, *shared_flags(tiny_model, tiny_data)]) == 0
    folder = tmp_path / "sweeps" / "full"
    (summary_path,) = folder.glob("sweep-*.json")
    summary = read_json(summary_path)
    assert [(t["learning_rate"], t["seed"]) for t in summary["trials"]] == [(1e-4, 1), (1e-4, 2), (3e-3, 1), (3e-3, 2)]
    for rate in summary["rates"]:  # each rate scores the mean over its seeds
        runs = [t for t in summary["trials"] if t["learning_rate"] == rate["learning_rate"]]
        assert rate["mean_holdout_accuracy"] == pytest.approx(sum(t["holdout_accuracy"] for t in runs) / 2)
    best = max(summary["rates"], key=lambda r: (r["mean_holdout_accuracy"], -r["mean_holdout_loss"]))
    assert summary["chosen_learning_rate"] == best["learning_rate"]
    assert summary["command"].startswith("python sweep.py --method full --grid 1e-4,3e-3")
    assert tiny_model not in str(summary) and str(tmp_path) not in str(summary)  # committable: no machine paths
    for trial in summary["trials"]:
        record = read_json(folder / f"{trial['run_name']}.json")
        assert record["config"]["training_arguments"]["seed"] == trial["seed"]
        assert record["data"]["eval_split"] == "holdout"
        assert record["data"]["eval_sentences"] == 5 and record["data"]["train_sentences"] == 91  # 5 % of 96
        assert record["metrics"]["eval_total"] == 5  # not the 40 dev sentences
        assert sorted(record["labels"]).count(1) in (2, 3)  # stratified: the toy set is about half positive
    assert not list(tmp_path.glob("*.json"))  # trials stay out of the main results folder
    assert not list(tmp_path.rglob("models"))  # a grid saves no models unless asked (--save_model True)


def test_an_extended_sweep_takes_the_trials_that_completed_and_runs_only_the_new_ones(tiny_model, tiny_data, tmp_path):
    import torch

    flags = ["--method", "full", "--seeds", "1", "--results_dir", str(tmp_path), *shared_flags(tiny_model, tiny_data)]
    folder = tmp_path / "sweeps" / "full"
    assert sweep.main(["--grid", "1e-3", *flags]) == 0
    (first,) = folder.glob("full-lr0.001-*.json")
    assert sweep.main(["--grid", "1e-3,3e-3", *flags]) == 0
    assert list(folder.glob("full-lr0.001-*.json")) == [first]  # taken, not trained again
    newest = read_json(sorted(folder.glob("sweep-*.json"))[-1])
    assert [t["run_name"] for t in newest["trials"]][0] == first.stem
    assert newest["trials"][0]["holdout_accuracy"] == read_json(first)["metrics"]["eval_accuracy"]
    assert len(list(folder.glob("full-lr0.003-*.json"))) == 1

    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)  # other rounding: the same flags are another experiment
    try:
        assert sweep.main(["--grid", "1e-3", *flags]) == 0
    finally:
        torch.set_num_threads(threads)
    assert len(list(folder.glob("full-lr0.001-*.json"))) == 2


@pytest.mark.parametrize(
    "accuracy, fell",
    [
        ([0.7, 0.6, 0.8], True),  # learned (0.7 > 0.6 + 0.05), then back to the majority class, then recovered
        ([0.7, 0.8, 0.55], True),  # below the majority class counts too
        ([0.6, 0.7, 0.9], False),  # at the majority class before it learned anything
        ([0.7, 0.61], False),  # 0.61 is more than half a point above 0.6
        ([0.64, 0.6], False),  # 0.64 never cleared 0.65: nothing learned to fall from
        ([0.9], False),  # one epoch cannot fall
    ],
)
def test_a_trial_fell_when_it_came_back_to_the_majority_class_after_learning(accuracy, fell):
    labels = [1] * 6 + [0] * 4  # majority class: 60 %
    history = [{"epoch": i + 1, "eval_accuracy": a} for i, a in enumerate(accuracy)]
    history.insert(1, {"epoch": 1.5, "train_loss": 0.5})  # a row without evaluation is skipped
    assert summary.fell(history, labels) is fell


def test_a_rate_where_a_seed_fell_is_not_chosen(monkeypatch, tmp_path, capsys):
    """The best mean that never fell wins; a rate that fell wins only if every rate fell."""
    outcomes = {}

    def fake_trial(args, folder, run_name, rate, seed, train_flags):
        accuracy, loss, fell = outcomes[rate, seed]
        trial = {"learning_rate": rate, "seed": seed, "run_name": run_name, "status": "completed"}
        return 0, {**trial, "holdout_accuracy": accuracy, "holdout_loss": loss, "train_loss": loss, "fell": fell}

    monkeypatch.setattr(sweep, "run_trial", fake_trial)
    flags = ["--method", "prefix", "--grid", "1e-4,5e-4", "--seeds", "1,2", "--results_dir", str(tmp_path)]

    def chosen():
        assert sweep.main(flags) == 0
        return read_json(sorted((tmp_path / "sweeps" / "prefix").glob("sweep-*.json"))[-1])

    outcomes.update({(1e-4, 1): (0.80, 0.4, False), (1e-4, 2): (0.82, 0.4, False)})
    outcomes.update({(5e-4, 1): (0.90, 0.3, False), (5e-4, 2): (0.88, 0.3, True)})  # mean 0.89, but seed 2 fell
    summary = chosen()
    assert summary["chosen_learning_rate"] == 1e-4
    assert [r["seeds_that_fell"] for r in summary["rates"]] == [0, 1]
    assert "left out because a seed fell back to the majority class: 0.0005" in capsys.readouterr().out

    outcomes[1e-4, 1] = (0.80, 0.4, True)  # both fell: the better mean, as without the rule
    assert chosen()["chosen_learning_rate"] == 5e-4
    assert "at every rate a seed fell back to the majority class (0.0001, 0.0005)" in capsys.readouterr().out


def test_the_sweep_table_shows_every_rate_and_seed_and_the_choice(tmp_path, capsys):
    from results import write_json_atomic

    def trial(rate, seed, accuracy, status="completed"):
        return {"learning_rate": rate, "seed": seed, "status": status, "holdout_accuracy": accuracy}

    old = {"grid": [1e-3], "seeds": [1], "trials": [trial(1e-3, 1, 0.9)], "chosen_learning_rate": 1e-3}
    new = {
        "grid": [5e-4, 3e-2, 3.0],
        "seeds": [1, 2],
        "trials": [trial(5e-4, 1, 0.5), trial(5e-4, 2, 0.6), trial(3e-2, 1, 0.8), trial(3e-2, 2, 0.9)]
        + [trial(3.0, 1, None, "failed"), trial(3.0, 2, 0.5)]
        + [{**trial(1e-2, 1, 0.95), "fell": True}, trial(1e-2, 2, 0.85)],
        "chosen_learning_rate": 3e-2,
    }
    new["grid"].append(1e-2)
    subset = {**old, "train_flags": ["--train_size", "1000", "--max_steps", "250"]}
    written_with_equals = {**old, "train_flags": ["--max_steps", "250", "--train_size=300"]}
    write_json_atomic(tmp_path / "lora" / "sweep-20260101T000000Z.json", old)
    write_json_atomic(tmp_path / "lora" / "sweep-20260102T000000Z.json", new)
    write_json_atomic(tmp_path / "lora" / "sweep-20260103T000000Z.json", subset)
    write_json_atomic(tmp_path / "lora" / "sweep-20260104T000000Z.json", written_with_equals)
    assert sweep.main(["--table", str(tmp_path)]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert rows[2:] == [  # oldest first, the whole set's before the subsets', the smaller subset first
        "| lora (seed 1) | 1e-3 | **1e-3: 90.0** |",
        "| lora (seeds 1, 2) | 3e-2 | 5e-4: 55.0 (50.0/60.0), **3e-2: 85.0** (80.0/90.0), 3: failed, "
        "1e-2: 90.0 (95.0/85.0) fell in 1 of 2 |",
        "| lora (seed 1; 300 sentences) | 1e-3 | **1e-3: 90.0** |",  # a sweep on a subset names its size
        "| lora (seed 1; 1,000 sentences) | 1e-3 | **1e-3: 90.0** |",
    ]


def test_a_flag_is_read_or_dropped_in_either_spelling():
    """What the tools match runs by (earlier_run's --run_name, gpu_report's --part, sweep.py's --train_size): a flag
    written `--flag VALUE` or `--flag=VALUE`, never another flag that merely starts with its name."""
    words = ["--seed", "1", "--run_name=a", "--train_size", "300", "--run_name_suffix", "x", "--optim", "sgd"]
    assert [flag_value(words, f) for f in ("--run_name", "--train_size", "--optim", "--lr")] == [
        "a",
        "300",
        "sgd",
        None,
    ]
    assert without_flags(words, "--run_name", "--optim") == [
        "--seed",
        "1",
        "--train_size",
        "300",
        "--run_name_suffix",
        "x",
    ]


def test_sweep_refuses_flags_it_sets_itself(tiny_model, tiny_data, capsys):
    assert (
        sweep.main(
            ["--method", "full", "--grid", "1e-3", "--learning_rate", "1e-3", *shared_flags(tiny_model, tiny_data)]
        )
        == 2
    )
    assert "sweep.py sets --learning_rate itself" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize(
    "methods, flags, named",
    [
        ("full,lora,ia3", [], "lora, ia3"),  # the original ran full fine-tuning and prefix tuning only
        ("full,lora", ["--lr_preset", "tuned"], None),
        ("full,lora", ["--lr_preset=tuned"], None),
        ("full,lora", ["--learning_rate", "1e-4"], None),  # the user's rate
        ("full,prefix", [], None),
    ],
)
def test_a_grid_at_the_original_s_rate_names_the_methods_the_original_did_not_run(methods, flags, named):
    note = compare.grid_rate_note(methods.split(","), [*flags, "--use_cpu"])
    assert (note is None) == (named is None)
    assert note is None or note.startswith(f"note: {named} will train at the original experiment's learning rate")


def test_a_grid_prints_its_rate_note_before_its_runs(tiny_model, tiny_data, tmp_path, capsys):
    argv = ["--methods", "lora", "--seeds", "1", "--results_dir", str(tmp_path), *shared_flags(tiny_model, tiny_data)]
    assert compare.main([*argv, "--max_steps", "1"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("note: lora will train at the original experiment's learning rate, 1e-6")


def test_compare_runs_the_grid_in_parallel_and_summarises(tiny_model, tiny_data, tmp_path):
    assert (
        compare.main(
            [
                "--methods",
                "full,lora",
                "--seeds",
                "1,2",
                "--jobs",
                "2",
                "--results_dir",
                str(tmp_path),
                *shared_flags(tiny_model, tiny_data),
                "--learning_rate",
                "1e-3",
            ]
        )
        == 0
    )
    runs = sorted(p.name for p in tmp_path.glob("*.json") if not p.name.startswith("summary"))
    assert len(runs) == 4 and len(set(runs)) == 4
    assert {read_json(tmp_path / name)["method"] for name in runs} == {"full", "lora"}
    summary = (tmp_path / "summary.md").read_text()
    assert "| lora | 1 |" in summary and "| lora | 2 |" in summary  # McNemar per seed against full
    assert "full (2 runs)" in summary and "lora (2 runs)" in summary
    assert os.path.isfile(tmp_path / "figures" / "accuracy_vs_parameters.png")
    assert not (tmp_path / "models").exists()


def test_ctrl_c_stops_the_whole_sweep_and_the_same_command_resumes_it(tiny_model, tiny_data, tmp_path, monkeypatch):
    """Ctrl-C used to stop one trial, and the sweep went on to the next; run again, it trained that trial afresh."""
    import signal

    from transformers import TrainerCallback

    import experiment

    class CtrlCAtStep2(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:
                os.kill(os.getpid(), signal.SIGINT)

    build_trainer = experiment.build_trainer
    with monkeypatch.context() as patch:
        patch.setattr(
            experiment,
            "build_trainer",
            lambda *a, callbacks=(), **k: build_trainer(*a, callbacks=[*callbacks, CtrlCAtStep2()], **k),
        )
        flags = ["--method", "full", "--grid", "1e-3,3e-3", "--seeds", "1", "--results_dir", str(tmp_path)]
        flags += shared_flags(tiny_model, tiny_data)
        assert sweep.main(flags) == 130
    folder = tmp_path / "sweeps" / "full"
    (stopped,) = folder.glob("*.json")  # the first trial only, and no sweep summary
    assert read_json(stopped)["status"] == "interrupted" and read_json(stopped)["step"] == 3

    assert sweep.main(flags) == 0
    resumed = read_json(stopped)
    assert resumed["status"] == "completed" and resumed["resumed"]
    assert [(s["start_step"], s["end_step"]) for s in resumed["segments"]] == [(0, 3), (3, 6)]  # 91 sentences, batch 16
    (summary_path,) = folder.glob("sweep-*.json")
    assert read_json(summary_path)["trials"][0]["run_name"] == stopped.stem
    assert len(list(folder.glob("full-lr0.003-*.json"))) == 1


@pytest.mark.slow
def test_ctrl_c_stops_the_grid_and_the_same_command_continues_it(tiny_model, tiny_data, tmp_path):
    """Ctrl-C used to stop the runs under way, and the grid went on to start the next ones; run again, it
    started every run afresh under new names."""
    import signal
    import subprocess
    import sys
    import time

    from conftest import ROOT

    argv = ["--methods", "full", "--seeds", "1,2", "--results_dir", str(tmp_path), "--learning_rate", "1e-3"]
    argv += [*shared_flags(tiny_model, tiny_data), "--num_train_epochs", "40", "--save_strategy", "steps"]
    argv += ["--save_steps", "5"]  # 40 epochs of 6 steps: long enough to be caught under way
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    grid = subprocess.Popen(  # a process group of its own, as a shell gives a command
        [sys.executable, "compare.py", *argv],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 240
    while not list(tmp_path.glob("checkpoints/*/checkpoint-*/trainer_state.json")) and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(grid.pid, signal.SIGINT)  # as a terminal's Ctrl-C: to the grid and its runs alike
    _, stderr = grid.communicate(timeout=240)
    assert grid.returncode == 130, stderr[-2000:]
    assert "1 of 2 runs not started" in stderr and "python compare.py" in stderr
    (stopped,) = tmp_path.glob("*.json")  # seed 2 never started
    record = read_json(stopped)
    assert record["status"] == "interrupted" and 5 <= record["step"] < 240

    assert compare.main(argv) == 0
    runs = sorted(p for p in tmp_path.glob("*.json") if not p.name.startswith("summary"))
    assert len(runs) == 2 and stopped in runs
    resumed = read_json(stopped)
    assert resumed["status"] == "completed" and resumed["resumed"] and resumed["efficiency"]["train_steps"] == 240
    assert resumed["segments"][0]["end_step"] == record["step"]
    assert "full (2 runs)" in (tmp_path / "summary.md").read_text()
