"""gpu_report.py: the one command behind the README's GPU numbers, checked on a CPU with a tiny model."""

import gzip
import json
import math
import os
import random
import re

import pytest
import torch
from datasets import Dataset

import bench
import gpu_report
from results import read_json, write_json_atomic


def quick_flags(tiny_model, tiny_data):
    """The report's CPU mode on the tiny model: every part in seconds."""
    return ["--quick", "--use_cpu", "--model_name_or_path", tiny_model, "--data_dir", tiny_data]


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
    flags = [*quick_flags(tiny_model, tiny_data), "--output", str(output)]
    assert gpu_report.main(["--part", "bench", *flags]) == 0  # both bench parts
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
        # the first evaluation, which pays a first call's warm-up, counts as it ran: a run pays for it once
        assert row["eval_first_s"] > 0
        assert row["projected_protocol_s"] == pytest.approx(
            row["warmup_s"]
            + (steps - row["warmup_steps"]) * row["ms_per_step"] / 1000
            + row["eval_first_s"]
            + 9 * row["eval_s"],
            abs=0.1,
        )
        # the stages, timed at the Trainer's callbacks, tile the timed steps that StepTimer times from outside
        assert list(row["host_ms_per_stage"]) == ["batch", "forward_backward_clip", "optimizer", "scheduler_zero_grad"]
        assert sum(row["host_ms_per_stage"].values()) == pytest.approx(row["ms_per_step"], rel=0.1)
    # What training holds between steps, from counts that peft and transformers keep themselves: fp32 weights
    # (on a CPU no recipe stores any in bf16), a gradient per trained weight, and AdamW's two moments of each.
    from config import parse_args
    from methods import apply_method

    for method in ("full", "prefix"):
        model = apply_method(
            bench.model_factory(bench.BenchArguments(quick=True))(), method, parse_args(["--method", method])[0]
        )
        trained, total = model.get_nb_trainable_parameters() if method == "prefix" else (model.num_parameters(),) * 2
        for row in (r for r in report["bench"] if r["method"] == method):
            held = row["held_mb"]
            assert held["weights"] == pytest.approx(4 * total / 2**20, abs=0.06)
            assert held["gradients"] == pytest.approx(4 * trained / 2**20, abs=0.06)
            assert held["optimizer_state"] == pytest.approx(2 * 4 * trained / 2**20, abs=0.11)  # and 4-byte steps
    text = gpu_report.markdown(report)
    assert "| full | fast | n/a | " in text  # a CPU has no peak to split
    import plot_results

    figure = plot_results.gpu_report_figure(report)  # a CPU's report draws, without peaks of its own
    step, memory, _ = figure.axes
    assert [bar.get_height() for bar in step.patches] == [r["ms_per_step"] for r in report["bench"]]
    assert [bar.get_height() for bar in memory.patches] == [2526, 1495]  # the original experiment's alone
    legend = [text.get_text() for text in figure.legends[0].get_texts()]  # every kind of mark, from any panel
    assert legend == [*(name for name, _, _ in plot_results.GPU_BARS), plot_results.TARGET_LABEL]
    assert figure.texts[0].get_text().startswith("A small BERT (--quick")  # the title does not claim BERT-base
    full = next(r for r in report["bench"] if (r["method"], r["recipe"]) == ("full", "fast"))
    held = full["held_mb"]
    with_peak = {**report, "bench": [{**full, "peak_memory_mb": 1000.0}]}
    own = round(1000.0 - held["weights"] - held["optimizer_state"], 1)  # gradients are the step's: freed at zero_grad
    expected = f"| full | fast | 1000.0 | {held['weights']} | {held['optimizer_state']} | {own} | {held['gradients']} |"
    assert expected in gpu_report.markdown(with_peak).splitlines()
    runs = {(r["script"], r["recipe"]): r for r in report["end_to_end"]}
    assert set(runs) == {("train_finetune.py", "fast"), ("train_prefix.py", "fast"), ("train_finetune.py", "original")}
    for run in runs.values():
        assert run["exit_code"] == 0 and run["train_sentences"] == 64 and run["eval_total"] == 32  # --quick's slice
    difference = 100 * (
        runs["train_finetune.py", "fast"]["eval_accuracy"] - runs["train_finetune.py", "original"]["eval_accuracy"]
    )
    assert report["bf16_vs_fp32"]["accuracy_points"] == pytest.approx(difference, abs=0.01)
    assert set(report["commands"]) == {"bench_full", "bench_prefix", "end_to_end_full", "end_to_end_prefix", "original"}
    assert all(tiny_model not in command and tiny_data not in command for command in report["commands"].values())
    assert "python gpu_report.py --part bench_full" in gpu_report.markdown(report)


@pytest.mark.slow
def test_a_variant_is_one_more_row_against_the_same_original(tiny_model, tiny_data, tmp_path, monkeypatch):
    output = tmp_path / "report.json"
    flags = [*quick_flags(tiny_model, tiny_data), "--output", str(output)]
    assert gpu_report.main(["--part", "bench_full", *flags]) == 0
    cheap = "--per_device_eval_batch_size 64"  # cheap on a CPU
    monkeypatch.setattr(gpu_report, "VARIANTS", (("full", cheap), ("prefix", cheap)))
    assert gpu_report.main(["--part", "bench_variants", *flags]) == 0  # full fine-tuning's variants only
    assert gpu_report.main(["--part", "bench_variants", *flags]) == 0  # a rerun replaces its row, not the fast one
    rows = {(r["recipe"], r["variant"]): r for r in read_json(output)["bench"]}
    assert list(rows) == [("original", None), ("fast", None), ("fast", "--per_device_eval_batch_size 64")]
    assert gpu_report.main(["--part", "bench_variants_prefix", *flags]) == 0  # prefix tuning's, a row of its own
    prefix = [r for r in read_json(output)["bench"] if r["method"] == "prefix"]
    assert [(r["recipe"], r["variant"]) for r in prefix] == [("fast", cheap)] and "speedup" not in prefix[0]
    original, variant = rows["original", None], rows["fast", "--per_device_eval_batch_size 64"]
    fast = rows["fast", None]
    assert variant["settings"]["per_device_eval_batch_size"] == 64 != fast["settings"]["per_device_eval_batch_size"]
    assert variant["speedup"] == round(original["ms_per_step"] / variant["ms_per_step"], 2)
    assert "| full | fast --per_device_eval_batch_size 64 |" in gpu_report.markdown(read_json(output))
    assert gpu_report.main(["--part", "bench_layers_once", *flags]) == 0  # both methods, a row each
    once = [r for r in read_json(output)["bench"] if r["variant"] == "--compile_layers_once True"]
    assert [r["method"] for r in once] == ["full", "prefix"]


@pytest.mark.slow
def test_the_bare_and_reference_loops_are_rows_of_their_own_timed_stage_by_stage(tiny_model, tiny_data, tmp_path):
    output = tmp_path / "report.json"
    flags = [*quick_flags(tiny_model, tiny_data), "--output", str(output)]
    assert gpu_report.main(["--part", "bench_full", *flags]) == 0
    assert gpu_report.main(["--part", "bench_bare", *flags]) == 0
    rows = {(r["recipe"], r["variant"]): r for r in read_json(output)["bench"]}
    loops = [("fast", "bare loop"), ("fast", "reference loop"), ("fast", "reference loop dynamic")]
    assert list(rows) == [("original", None), ("fast", None), *loops]
    original, fast, bare, reference, dynamic = rows.values()
    assert bare["settings"] == fast["settings"]  # the same recipe, stepped by another loop
    assert bare["warmup_steps"] == fast["warmup_steps"] and bare["ms_per_step"] > 0
    assert list(bare["host_ms_per_stage"]) == list(fast["host_ms_per_stage"])
    assert sum(bare["host_ms_per_stage"].values()) == pytest.approx(bare["ms_per_step"], rel=0.1)
    assert bare["speedup"] == round(original["ms_per_step"] / bare["ms_per_step"], 2)
    assert bare["eval_s"] is None and bare["projected_protocol_s"] is None  # it evaluates nothing
    text = gpu_report.markdown(read_json(output))
    in_bench, in_stages = [line for line in text.splitlines() if line.startswith("| full | fast bare loop | ")]
    assert in_bench.endswith("| n/a | n/a |")  # no evaluation, no protocol
    assert in_stages.endswith(" | ".join(map(str, bare["host_ms_per_stage"].values())) + " |")
    # The bare loop splits the stage the Trainer times as one: its three parts tile it.
    assert fast["host_ms_per_part"] is None  # the Trainer has no callback between them
    assert list(bare["host_ms_per_part"]) == ["forward", "backward", "clipping"]
    whole = bare["host_ms_per_stage"]["forward_backward_clip"]
    assert sum(bare["host_ms_per_part"].values()) == pytest.approx(whole, rel=0.05)
    assert min(bare["host_ms_per_part"].values()) > 0
    (split,) = [line for line in text.splitlines() if line.startswith("The loops' forward, backward and clipping")]
    forward, backward, clipping = bare["host_ms_per_part"].values()
    assert f"full fast bare loop: forward {forward}, backward {backward}, clipping {clipping} ms" in split
    # The GPU issue's reference step: a row of its own, on one fixed batch, so its batch stage takes no time.
    assert reference["eval_s"] is None and reference["projected_protocol_s"] is None and reference["ms_per_step"] > 0
    assert reference["host_ms_per_stage"]["batch"] < 0.1 * reference["ms_per_step"]
    assert list(reference["host_ms_per_part"]) == ["forward", "backward"]  # it clips nothing
    assert any(line.startswith("| full | fast reference loop | ") for line in text.splitlines())
    assert dynamic["ms_per_step"] > 0 and list(dynamic["host_ms_per_part"]) == ["forward", "backward"]
    assert any(line.startswith("| full | fast reference loop dynamic | ") for line in text.splitlines())


@pytest.mark.slow
def test_the_profile_part_names_where_the_host_time_goes(tiny_model, tiny_data, tmp_path):
    output = tmp_path / "report.json"
    flags = [*quick_flags(tiny_model, tiny_data), "--output", str(output)]
    assert gpu_report.main(["--part", "profile", "--profile_steps", "3", *flags]) == 0
    profile = read_json(output)["profile"]
    assert profile["steps"] == 3 and profile["python_steps"] == 3  # torch's profiler, then cProfile, 3 steps each
    assert profile["kernel_ms_per_step"] is None and profile["gpu_busy_fraction"] is None  # a CPU has no kernels
    assert "aten::mm" in profile["top_host_ms_per_step"] or "aten::addmm" in profile["top_host_ms_per_step"]
    linears = sum(
        isinstance(m, torch.nn.Linear) for m in bench.model_factory(bench.BenchArguments(quick=True))().modules()
    )
    calls = profile["top_host_calls_per_step"]
    assert calls.keys() == profile["top_host_ms_per_step"].keys()
    assert calls.get("aten::addmm", 0) + calls.get("aten::mm", 0) >= linears  # a matmul each, forward alone
    assert profile["host_ops_per_step"] >= 3 * linears  # each linear, its matmul and the backward's two
    own, cumulative = zip(*profile["top_python_ms_per_step"].values())
    assert list(own) == sorted(own, reverse=True) and all(o <= c for o, c in zip(own, cumulative))
    assert any("run_backward" in name for name in profile["top_python_ms_per_step"])  # autograd, by its name
    with gzip.open(tmp_path / "trace-full-fast.json.gz", "rt") as trace:  # gzipped, to come back from a GPU window
        assert any(event.get("name", "").startswith("aten::") for event in json.load(trace)["traceEvents"])
    text = gpu_report.markdown(read_json(output))
    assert "Python functions with the most own host time" in text
    assert f"The host ran {profile['host_ops_per_step']} profiled operations per step" in text


def test_the_report_needs_local_folders(capsys):
    assert gpu_report.main(["--part", "bench"]) == 2
    assert "needs --model_name_or_path and --data_dir" in capsys.readouterr().err


def fake_rows(monkeypatch, fail=None, stop=None):
    """bench.measure replaced: original 40 ms per step, fast 10; `fail` raises an error, `stop` kills the part."""

    def fake_measure(arguments, method, recipe, *rest, **options):
        if (method, recipe) == fail:
            raise RuntimeError("CUDA out of memory")
        if (method, recipe) == stop:
            raise KeyboardInterrupt  # what a time limit's signal does to the part
        ms = {"original": 40.0, "fast": 10.0}[recipe]
        return {
            "method": method, "recipe": recipe, "ms_per_step": ms, "warmup_s": 1.0, "samples_per_s": 16_000 / ms,
            "peak_memory_mb": None, "peak_memory_reserved_mb": None, "projected_protocol_s": 42.1 * ms, "eval_s": None,
        }  # fmt: skip

    monkeypatch.setattr(bench, "measure", fake_measure)


def test_a_configuration_that_fails_costs_only_its_own_row(tiny_model, tiny_data, tmp_path, monkeypatch, capsys):
    """A GPU window is short: one broken configuration must not take the other three's numbers with it."""
    fake_rows(monkeypatch, fail=("prefix", "original"))
    output = tmp_path / "report.json"
    flags = quick_flags(tiny_model, tiny_data)
    assert gpu_report.main(["--part", "bench", *flags, "--output", str(output)]) == 1
    rows = read_json(output)["bench"]
    assert [(r["method"], r["recipe"], r.get("speedup")) for r in rows] == [
        ("full", "original", 1.0),
        ("full", "fast", 4.0),
        ("prefix", "original", None),
        ("prefix", "fast", None),  # no baseline to compare with
    ]
    assert rows[2]["error"] == "RuntimeError: CUDA out of memory"


def test_a_part_cut_off_keeps_the_rows_it_finished(tiny_model, tiny_data, tmp_path, monkeypatch):
    """The window's time limit stops a part mid-way: what it measured before is already in the report."""
    fake_rows(monkeypatch, stop=("full", "fast"))
    output = tmp_path / "report.json"
    flags = quick_flags(tiny_model, tiny_data)
    with pytest.raises(KeyboardInterrupt):
        gpu_report.main(["--part", "bench_full", *flags, "--output", str(output)])
    assert [(r["method"], r["recipe"], r["ms_per_step"]) for r in read_json(output)["bench"]] == [
        ("full", "original", 40.0)
    ]


def test_a_part_from_another_card_joins_the_report_under_its_own_card(tiny_model, tiny_data, tmp_path, monkeypatch):
    """GPU windows come on whichever card is lent (H100s, then H200s): a part run on another card or torch adds its
    rows, and each part keeps the card, versions and commit it ran with, which the README's section names."""
    fake_rows(monkeypatch)  # this machine (a CPU here): full fine-tuning, 40 and 10 ms per step
    output = tmp_path / "report.json"
    h200 = {"device": "NVIDIA H200", "torch": "2.11.0+cu130", "transformers": "5.17.0", "peft": "0.21.0",
            "git_commit": "0123456789abcdef"}  # fmt: skip
    measured = {"warmup_s": 1.0, "samples_per_s": 1.0, "peak_memory_mb": 900.0, "peak_memory_reserved_mb": 1000.0,
                "eval_s": 0.3, "projected_protocol_s": 600.0}  # fmt: skip
    earlier = [
        {**measured, **row}
        for row in (
            {"method": "full", "recipe": "original", "ms_per_step": 41.0, "part": "bench_full"},
            {"method": "full", "recipe": "fast", "variant": "--x", "ms_per_step": 20.5, "part": "bench_variants"},
            {"method": "prefix", "recipe": "original", "ms_per_step": 30.0, "part": "bench_prefix"},
            {"method": "prefix", "recipe": "fast", "ms_per_step": 8.0, "part": "bench_prefix"},
        )
    ]
    parts = ("bench_full", "bench_variants", "bench_prefix")
    write_json_atomic(
        output,
        {"kind": "gpu_report", "environment": h200, "environments": dict.fromkeys(parts, h200),
         "commands": dict.fromkeys(parts, "python gpu_report.py ..."), "bench": earlier},
    )  # fmt: skip
    flags = quick_flags(tiny_model, tiny_data)
    assert gpu_report.main(["--part", "bench_full", *flags, "--output", str(output)]) == 0
    report = read_json(output)
    here = report["environment"]
    assert here["device"] == "cpu" and report["environments"]["bench_full"]["device"] == "cpu"
    assert report["environments"]["bench_prefix"] == h200 == report["environments"]["bench_variants"]
    rows = {(r["method"], r["recipe"], r.get("variant")): r for r in report["bench"]}
    assert list(rows) == [("full", "original", None), ("full", "fast", None), ("full", "fast", "--x"),
                          ("prefix", "original", None), ("prefix", "fast", None)]  # fmt: skip
    assert rows["full", "original", None]["ms_per_step"] == 40.0  # the H200's 41.0 replaced by this machine's
    assert [rows[key]["part"] for key in rows] == ["bench_full", "bench_full", "bench_variants", *["bench_prefix"] * 2]
    # Times divide only on one card: the H200's variant row has lost its original row to this machine's.
    assert rows["full", "fast", None]["speedup"] == 4.0 and "speedup" not in rows["full", "fast", "--x"]
    assert rows["prefix", "fast", None]["speedup"] == 3.75  # 30 / 8, both the H200's
    lines = gpu_report.markdown(report).splitlines()
    assert lines[0].startswith("Measured in parts, the last at ")
    assert lines[2].startswith(f"- bench_full: cpu (torch {here['torch']}, ")
    assert lines[3] == (
        "- bench_prefix, bench_variants: NVIDIA H200 (torch 2.11.0+cu130, transformers 5.17.0, peft 0.21.0, "
        "commit 0123456789ab)"
    )
    assert any(line.startswith("| full | fast --x | 20.50 | n/a |") for line in lines)
    import plot_results

    title = plot_results.gpu_report_figure(report).texts[0].get_text()  # the figure names both cards too
    assert "full on cpu (torch" in title and "prefix on NVIDIA H200 (torch 2.11.0+cu130, commit 0123456789ab)" in title


def test_bf16_is_compared_with_fp32_on_one_card_only(tmp_path):
    """The fast recipe's run against the original's: from two cards, the difference would mix in the cards'."""
    rows = [
        {"script": "train_finetune.py", "recipe": recipe, "eval_accuracy": accuracy, "part": part}
        for recipe, accuracy, part in (("fast", 0.75, "end_to_end_full"), ("original", 0.5, "original"))
    ]
    h100 = {"device": "NVIDIA H100", "torch": "2.11.0+cu130"}
    for card, compared in (("NVIDIA H200", False), ("NVIDIA H100", True)):
        path = tmp_path / f"{card}.json"
        environments = {"end_to_end_full": h100, "original": {**h100, "device": card}}
        write_json_atomic(path, {"kind": "gpu_report", "environment": h100, "environments": environments,
                                 "end_to_end": rows})  # fmt: skip
        report = gpu_report.merge(str(path), "profile", {"profile": {}}, "command")  # another part, run here
        assert ("bf16_vs_fp32" in report) is compared, card
    assert report["bf16_vs_fp32"]["accuracy_points"] == 25.0  # 75 % - 50 %


def test_bf16_against_fp32_pairs_the_two_runs_predictions():
    labels = [1, 0, 1, 0, 1, 0, 1, 0]
    fp32 = [1, 0, 1, 0, 1, 0, 1, 1]  # wrong on the last sentence only
    bf16 = [0, 1, 0, 1, 0, 0, 1, 0]  # wrong on the first five, right on the last
    rows = [
        {"script": "train_finetune.py", "recipe": recipe, "eval_accuracy": sum(map(int.__eq__, p, labels)) / 8,
         "predictions": p, "labels": labels}
        for recipe, p in (("original", fp32), ("fast", bf16))
    ]  # fmt: skip
    report = gpu_report.merge("/nonexistent/report.json", "original", {"end_to_end": rows}, "command")
    # 3/8 - 7/8 of the sentences; McNemar: 5 discordant one way, 1 the other, p = 2 * (1 + 6) / 2**6
    assert report["bf16_vs_fp32"]["accuracy_points"] == -50.0
    assert report["bf16_vs_fp32"]["within_tolerance"] is False
    expected = {"only_fp32_right": 5, "only_bf16_right": 1, "p": pytest.approx(14 / 64)}
    assert report["bf16_vs_fp32"]["mcnemar"] == expected
    table = {"eval_correct": 0, "eval_total": 8, "learning_rate": 1e-4, "train_loss": 0.5, "peak_memory_mb": 1}
    for row in rows:  # what the markdown's table of runs reads too
        row.update(table)
    text = gpu_report.markdown(gpu_report.merge("/nonexistent/report.json", "original", {"end_to_end": rows}, "c"))
    assert "bf16 (fast) minus fp32 (original): -50.00 points" in text  # rows that do not say: the recipe's bf16
    # On a card before Ampere the fast recipe runs fp16 (config.WITHOUT_NATIVE_BF16): the report says so.
    rows[1]["precision"] = "fp16"
    text = gpu_report.markdown(gpu_report.merge("/nonexistent/report.json", "original", {"end_to_end": rows}, "c"))
    assert "fp16 (fast) minus fp32 (original): -50.00 points" in text and "1 only fp16, p = 0.22" in text


def test_the_window_script_s_torch_logs_are_names_torch_knows():
    """torch refuses to import under a TORCH_LOGS name it does not know, so a typo there would cost a whole GPU
    window: the script's default must import."""
    import subprocess
    import sys

    with open(os.path.join(os.path.dirname(gpu_report.__file__), "tools", "gpu_window.sh")) as handle:
        (logs,) = re.findall(r"^export TORCH_LOGS=\$\{TORCH_LOGS-([a-z_,]+)\}$", handle.read(), re.MULTILINE)
    assert "recompiles" in logs.split(",") and "cudagraphs" in logs.split(",")
    for value in (logs, logs + ",no_such_log"):  # the second shows the check can fail
        done = subprocess.run([sys.executable, "-c", "import torch"], env={**os.environ, "TORCH_LOGS": value})
        assert (done.returncode == 0) == (value == logs)


def test_the_window_script_runs_every_part():
    """tools/gpu_window.sh's window commands, as its header gives them, run every part of the report once, in
    the order of gpu_report.PARTS."""
    with open(os.path.join(os.path.dirname(gpu_report.__file__), "tools", "gpu_window.sh")) as handle:
        commands = re.findall(r"^#\s+bash tools/gpu_window\.sh ([a-z_ ]+?)\s+#", handle.read(), re.MULTILINE)
    named = [part for command in commands for part in command.split()]
    assert named == list(gpu_report.PARTS)


def test_the_readme_s_gpu_section_is_the_committed_report():
    """The README's GPU numbers are generated from results/gpu_report.json, not typed."""
    root = os.path.dirname(gpu_report.__file__)
    report = read_json(os.path.join(root, "results", "gpu_report.json"))
    assert report["kind"] == "gpu_report" and "+cu" in report["environment"]["torch"]  # a CUDA build measured it
    with open(os.path.join(root, "README.md"), encoding="utf-8") as handle:
        text = handle.read()
    assert gpu_report.markdown(report) in text
    # the summaries elsewhere in the README quote the same rows
    rows = {(r["method"], r["recipe"]): r for r in report["bench"] if not r.get("variant")}
    full, prefix = rows["full", "fast"], rows["prefix", "fast"]
    words = " ".join(text.split())
    assert (
        f"step is {full['speedup']}× (full) and {prefix['speedup']}× (prefix) the original's, short of the 6× and 4× "
        f"we aim for:** {full['ms_per_step']:.2f} and {prefix['ms_per_step']:.2f} ms per step against "
        f"{rows['full', 'original']['ms_per_step']:.2f} and {rows['prefix', 'original']['ms_per_step']:.2f}"
    ) in words
    assert (
        f"projects to {full['projected_protocol_s'] / 60:.1f} and {prefix['projected_protocol_s'] / 60:.1f} minutes"
    ) in words
    less = [
        round(100 * (1 - rows[m, "fast"]["peak_memory_mb"] / rows[m, "original"]["peak_memory_mb"]))
        for m in ("full", "prefix")
    ]
    assert f"{full['speedup']}× (full fine-tuning) and {prefix['speedup']}× (prefix tuning) as fast" in words
    assert f"at {less[0]} % and {less[1]} % less peak memory" in words


@pytest.mark.slow
def test_a_compiled_row_says_what_torch_compile_made_of_it(tiny_model, tmp_path):
    """Each compiled row counts dynamo's graphs and graph breaks, the graphs inductor ran without the CUDA
    graphs its mode asked for, and the pieces of graphs it cut around work that CUDA graphs cannot hold. A CPU
    has none to give: under reduce-overhead inductor runs the step's graph without them, whole, which on a GPU
    would launch every kernel one by one. aot_eager never makes CUDA graphs, so it skips and cuts none; an eager
    row counts nothing."""
    from transformers import AutoTokenizer

    arguments = bench.BenchArguments(
        model_name_or_path=tiny_model, use_cpu=True, warmup_steps=2, measure_steps=2, results_dir=str(tmp_path)
    )
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    sentences = bench.synthetic_sentences(64, tokenizer, random.Random(0))
    make_model = bench.model_factory(arguments)
    compiled = ["--torch_compile", "True", "--torch_compile_dynamic", "True", "--torch_compile_backend"]
    rows = [
        bench.measure(arguments, "full", "fast", None, make_model, tokenizer, sentences, str(tmp_path), flags=flags)
        for flags in (
            [*compiled, "inductor", "--torch_compile_mode", "reduce-overhead"],
            [*compiled, "aot_eager"],
            [],
        )
    ]
    inductor, aot_eager, eager = (row["compiled"] for row in rows)
    assert inductor["graphs"] == 1 and inductor["graph_breaks"] == 0 and inductor["cudagraph_skips"] >= 1
    assert inductor["cudagraph_partitions"] == 0
    assert {
        name: aot_eager[name] for name in ("graphs", "graph_breaks", "cudagraph_skips", "cudagraph_partitions")
    } == {
        "graphs": 1,
        "graph_breaks": 0,
        "cudagraph_skips": 0,
        "cudagraph_partitions": 0,
    }
    assert eager is None
    # The compile happens in the warm-up, which the row times from outside: torch's timer fits inside it.
    for row in rows[:2]:
        compiling, calls = row["compiled"]["phases_s"][gpu_report.COMPILE_TIMER]
        assert calls == 1 and 0 < compiling <= row["warmup_s"]
    for row, label in zip(rows, ("inductor", "aot_eager", "eager")):
        row["variant"] = label  # three rows of one recipe, told apart in the markdown
    report = {"environment": {"device": "cpu", "torch": "t", "transformers": "t", "peft": "p"}, "created_at": "now"}
    (line,) = [
        line for line in gpu_report.markdown({**report, "bench": rows}).splitlines() if "torch.compile made" in line
    ]
    assert f"full fast inductor: 1 graph, 0 graph breaks, {inductor['cudagraph_skips']} run without" in line
    seconds = inductor["phases_s"][gpu_report.COMPILE_TIMER][0]
    cut = "0 pieces of graphs cut around work CUDA graphs cannot hold"
    assert f"mode asked for, {cut}, compiling {seconds} s of its {rows[0]['warmup_s']:.1f} s of warm-up;" in line
    assert "full fast aot_eager: 1 graph, 0 graph breaks, 0 run without" in line
    assert "full fast eager" not in line  # it compiled nothing


def test_the_committed_gpu_figure_is_drawn_from_the_committed_report(tmp_path):
    """results/gpu_report.png, which the README shows, is what plot_results.py draws from results/gpu_report.json
    now: a report updated without redrawing its figure fails here."""
    import shutil

    import plot_results

    root = os.path.dirname(gpu_report.__file__)
    shutil.copy(os.path.join(root, "results", "gpu_report.json"), tmp_path)
    assert plot_results.draw_gpu_report(str(tmp_path)) == str(tmp_path / "gpu_report.png")
    with open(os.path.join(root, "results", "gpu_report.png"), "rb") as committed:
        assert (tmp_path / "gpu_report.png").read_bytes() == committed.read()
    with open(os.path.join(root, "README.md"), encoding="utf-8") as handle:
        assert "](results/gpu_report.png)" in handle.read()
