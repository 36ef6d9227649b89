"""The plotter aggregates several runs per method and refuses to work from nothing."""

import copy

from plot_results import group_by_method, main, summarise, write_summary
from utils import write_json_atomic


def record(method, accuracy, seconds, run_name):
    return {
        "schema_version": 1, "status": "completed", "method": method, "run_name": run_name,
        "params": {"trainable": 1_000_000, "total": 2_000_000, "trainable_percent": 50.0},
        "metrics": {"eval_accuracy": accuracy, "eval_correct": 1, "eval_total": 2, "eval_loss": 0.5,
                    "train_loss": 0.4, "best_eval_accuracy": accuracy, "best_epoch": 1.0},
        "efficiency": {"train_time_s": seconds, "total_time_s": seconds + 1, "train_samples_per_s": 1.0,
                       "peak_memory_mb": 1500.0, "peak_memory_reserved_mb": 1600.0},
        "history": [{"epoch": 1.0, "eval_accuracy": accuracy, "eval_loss": 0.5, "train_loss": 0.4}],
    }


def test_several_runs_show_as_mean_and_std(tmp_path):
    runs = [record("full", 0.80, 100, "a"), record("full", 0.90, 300, "b"), record("prefix", 0.70, 50, "c")]
    table = summarise(group_by_method(runs))
    mean, std, count = table["full"]["accuracy"]
    assert (round(mean, 6), round(std, 4), count) == (85.0, 7.0711, 2)
    assert table["prefix"]["time"] == (50, 0.0, 1)
    write_summary(table, tmp_path / "summary.md")
    text = (tmp_path / "summary.md").read_text()
    assert "85.00 % ± 7.07" in text and "full (2 runs)" in text and "200 s ± 141" in text


def test_incomplete_and_foreign_files_are_skipped_by_name(tmp_path, capsys):
    good = record("full", 0.8, 10, "good")
    write_json_atomic(tmp_path / "good.json", good)
    interrupted = copy.deepcopy(good) | {"status": "interrupted"}
    write_json_atomic(tmp_path / "interrupted.json", interrupted)
    write_json_atomic(tmp_path / "future.json", copy.deepcopy(good) | {"schema_version": 2})
    missing = copy.deepcopy(good)
    del missing["metrics"]["train_loss"]
    write_json_atomic(tmp_path / "missing.json", missing)
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00")
    assert main(["--results_dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name, reason in [("interrupted", "status"), ("future", "schema_version"), ("missing", "train_loss"), ("binary", "unreadable")]:
        assert any(name in line and reason in line for line in out.splitlines()), out
    assert "1 runs of 1 methods" in out


def test_no_usable_results_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "broken.json").write_text("{")
    assert main(["--results_dir", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "no completed runs" in captured.err and "broken.json" in captured.out
    assert not (tmp_path / "summary.md").exists()
