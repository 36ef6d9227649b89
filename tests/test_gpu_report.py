"""gpu_report.py: the one command behind the README's GPU numbers, checked on a CPU with a tiny model."""

import math
import random

import pytest
from datasets import Dataset

import bench
import gpu_report
from results import read_json


def test_the_warm_up_reaches_every_length_bucket_before_timing():
    rng = random.Random(0)
    lengths = [rng.choice([3, 5, 9, 14, 17, 30, 33, 47, 50, 66]) for _ in range(400)]
    sentences = Dataset.from_dict(
        {"input_ids": [[1] * n for n in lengths], "attention_mask": [[1] * n for n in lengths]}
    )
    ordered, warmup_steps = bench.primed(sentences, 16, 16)
    buckets = {math.ceil(n / 16) * 16 for n in lengths}  # 16, 32, 48, 80
    assert warmup_steps == 3 * len(buckets)
    padded_to = [
        math.ceil(max(len(ids) for ids in ordered[i : i + 16]["input_ids"]) / 16) * 16
        for i in range(0, 16 * warmup_steps, 16)
    ]
    assert {b: padded_to.count(b) for b in buckets} == {b: 3 for b in buckets}  # each bucket three times
    assert len(ordered) >= len(sentences)  # and every sentence after them


@pytest.mark.slow
def test_the_report_runs_on_a_cpu_and_merges_its_parts(tiny_model, tiny_data, tmp_path, capsys):
    output = tmp_path / "report.json"
    flags = [
        "--quick",
        "--use_cpu",
        "--model_name_or_path",
        tiny_model,
        "--data_dir",
        tiny_data,
        "--output",
        str(output),
    ]
    assert gpu_report.main(["--part", "bench", *flags]) == 0
    assert gpu_report.main(["--part", "end_to_end", *flags]) == 0
    first = read_json(output)
    assert gpu_report.main(["--part", "original", *flags]) == 0
    report = read_json(output)
    assert report["kind"] == "gpu_report" and report["created_at"] and report["environment"]["torch"]
    assert report["bench"] == first["bench"]  # a part replaces only its own entries
    assert [(r["method"], r["recipe"]) for r in report["bench"]] == [
        ("full", "original"),
        ("full", "fast"),
        ("prefix", "original"),
        ("prefix", "fast"),
    ]
    for row in report["bench"]:
        assert row["ms_per_step"] > 0 and row["warmup_steps"] >= 3 and row["eval_s"] > 0
        steps = math.ceil(67_349 / 16) * 10  # the original's protocol: 42,100 steps and ten evaluations
        assert row["projected_protocol_s"] == pytest.approx(
            row["warmup_s"] + (steps - row["warmup_steps"]) * row["ms_per_step"] / 1000 + 10 * row["eval_s"], abs=0.1
        )
    runs = {(r["script"], r["recipe"]): r for r in report["end_to_end"]}
    assert set(runs) == {("train_finetune.py", "fast"), ("train_prefix.py", "fast"), ("train_finetune.py", "original")}
    for run in runs.values():
        assert run["exit_code"] == 0 and run["train_sentences"] == 64 and run["eval_total"] == 32  # --quick's slice
    difference = 100 * (
        runs["train_finetune.py", "fast"]["eval_accuracy"] - runs["train_finetune.py", "original"]["eval_accuracy"]
    )
    assert report["bf16_vs_fp32"]["accuracy_points"] == pytest.approx(difference, abs=0.01)
    assert set(report["commands"]) == {"bench", "end_to_end", "original"}
    assert all(tiny_model not in command and tiny_data not in command for command in report["commands"].values())
    assert "python gpu_report.py --part bench" in gpu_report.markdown(report)


def test_the_report_needs_local_folders(capsys):
    assert gpu_report.main(["--part", "bench"]) == 2
    assert "needs --model_name_or_path and --data_dir" in capsys.readouterr().err


def test_a_configuration_that_fails_costs_only_its_own_row(tiny_model, tiny_data, tmp_path, monkeypatch, capsys):
    """A GPU window is short: one broken configuration must not take the other three's numbers with it."""

    def fake_measure(arguments, method, recipe, *rest, **options):
        if (method, recipe) == ("prefix", "original"):
            raise RuntimeError("CUDA out of memory")
        return {"method": method, "recipe": recipe, "ms_per_step": {"original": 40.0, "fast": 10.0}[recipe]}

    monkeypatch.setattr(bench, "measure", fake_measure)
    flags = ["--quick", "--use_cpu", "--model_name_or_path", tiny_model, "--data_dir", tiny_data]
    (report,) = gpu_report.HfArgumentParser(gpu_report.ReportArguments).parse_args_into_dataclasses(args=flags)
    rows = gpu_report.part_bench(report)["bench"]
    assert [(r["method"], r["recipe"], r.get("speedup")) for r in rows] == [
        ("full", "original", 1.0),
        ("full", "fast", 4.0),
        ("prefix", "original", None),
        ("prefix", "fast", None),  # no baseline to compare with
    ]
    assert rows[2]["error"] == "RuntimeError: CUDA out of memory"
