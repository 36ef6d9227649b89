"""Every GPU number in the README, from one command, in parts that fit a short GPU window.

    python gpu_report.py --part all --model_name_or_path $MINILM --data_dir $SST2
    python gpu_report.py --part bench ...        # four configurations
    python gpu_report.py --part end_to_end ...   # fast recipe, full and prefix: one SST-2 epoch each
    python gpu_report.py --part original ...     # full fine-tuning, one epoch under --recipe original
    python gpu_report.py --part profile ...      # where a fast step's time goes
    python gpu_report.py --markdown              # the README's GPU section, from the JSON

Each part merges into one JSON (--output, default results/gpu_report.json, "kind": "gpu_report"), so parts
run in separate windows add up, and a part run again replaces its own entries only.

- bench: full and prefix tuning under the original and the fast recipe on the BERT-base architecture at
  random init (speed and memory do not depend on the weights), on SST-2's train lengths (word pieces from
  --model_name_or_path's tokenizer, bert-base-uncased's vocabulary for MiniLM). The warm-up reaches every
  length bucket three times, in order (--train_sampling_strategy sequential), so no graph is compiled or
  recorded inside the timed window. Reports ms/step, warm-up (compile) time, peak memory allocated and
  reserved, one dev evaluation, and the projected wall time of the original's protocol: 42,100 steps plus
  ten dev evaluations.
- end_to_end, original: train_finetune.py and train_prefix.py, one epoch on every SST-2 training sentence,
  --lr_preset tuned, evaluated on all 872 dev sentences; fine-tuning again under --recipe original, the
  check that bf16 learns what fp32 learns (within 0.5 points).
- profile: torch.profiler over --profile_steps fast full fine-tuning steps after the warm-up: the share of
  the time the GPU is busy, host ms per step, kernel launches and synchronisations per step.

--quick --use_cpu runs every part on a tiny model and a few sentences: the test suite's check of the script.
"""

import os
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Optional

from transformers import AutoTokenizer, HfArgumentParser

import bench
from config import FAST_ON_GPU, ConfigError
from data_loader import load_sst2, tokenize
from experiment import main as run_experiment
from results import portable, read_json, utc_stamp, write_json_atomic
from utils import environment

PARTS = ("bench", "end_to_end", "original", "profile")
PROTOCOL_EPOCHS = 10  # the original's: 42,100 steps of 16 sentences, and a dev evaluation after each epoch
BF16_TOLERANCE = 0.5  # points of dev accuracy between the fast recipe's bf16 and the original's fp32


@dataclass
class ReportArguments:
    part: str = field(default="all", metadata={"help": "Which part to run.", "choices": ["all", *PARTS]})
    model_name_or_path: Optional[str] = field(
        default=None,
        metadata={"help": "The pretrained model the end-to-end runs train (e.g. all-MiniLM-L6-v2's folder); its "
                  "tokenizer also gives the benchmark its SST-2 lengths."},
    )  # fmt: skip
    model_name: str = field(
        default="sentence-transformers/all-MiniLM-L6-v2", metadata={"help": "How the report names that model."}
    )
    data_dir: Optional[str] = field(default=None, metadata={"help": "The SST-2 folder (train.tsv, dev.tsv)."})
    output: str = field(default=os.path.join("results", "gpu_report.json"), metadata={"help": "The report."})
    warmup_steps: int = field(default=50, metadata={"help": "Benchmark: at least this many steps before timing."})
    measure_steps: int = field(default=300, metadata={"help": "Benchmark: timed steps."})
    profile_steps: int = field(default=20, metadata={"help": "Profile: steps in the profiler's window."})
    quick: bool = field(default=False, metadata={"help": "A tiny model and a few sentences: checks the script."})
    use_cpu: bool = field(default=False, metadata={"help": "Run on the CPU even if a GPU is present."})
    markdown: bool = field(
        default=False, metadata={"help": "Print the README's GPU section from --output; run nothing."}
    )

    def __post_init__(self):
        if not self.markdown and not (self.model_name_or_path and self.data_dir):
            raise ConfigError("gpu_report.py needs --model_name_or_path and --data_dir (local folders).")


def sst2_lengths(report, tokenizer, split):
    """SST-2's sentences tokenized: the benchmark's inputs, with their real lengths."""
    data = load_sst2(report.data_dir)[split].shuffle(seed=0)
    if report.quick:
        data = data.select(range(min(len(data), 64)))
    encoded, _ = tokenize(data, tokenizer, 512, False)
    return encoded.remove_columns(
        [c for c in encoded.column_names if c not in ("input_ids", "attention_mask", "label")]
    )


def bench_arguments(report, profile=False):
    return bench.BenchArguments(
        warmup_steps=report.warmup_steps,
        measure_steps=report.profile_steps if profile else report.measure_steps,
        epochs=PROTOCOL_EPOCHS,
        quick=report.quick,
        use_cpu=report.use_cpu,
        profile=profile,
        profile_steps=report.profile_steps,
        results_dir=os.path.dirname(os.path.abspath(report.output)),
    )


def measure(report, configurations, profile=False):
    """bench.measure for each (method, recipe), after a warm-up that reaches every length bucket."""
    tokenizer = AutoTokenizer.from_pretrained(report.model_name_or_path)
    train, dev = sst2_lengths(report, tokenizer, "train"), sst2_lengths(report, tokenizer, "validation")
    train, primed_steps = bench.primed(train, 16, FAST_ON_GPU["pad_to_multiple_of"])
    rows = []
    for method, recipe in configurations:
        arguments = bench_arguments(report, profile)
        arguments.warmup_steps = max(arguments.warmup_steps, primed_steps)
        needed = (arguments.warmup_steps + arguments.measure_steps) * arguments.batch_size
        sentences = train.select([i % len(train) for i in range(needed)])  # the primed batches first
        print(f"measuring {method} / {recipe} ...", flush=True)
        with tempfile.TemporaryDirectory() as scratch:
            try:
                row = bench.measure(
                    arguments,
                    method,
                    recipe,
                    None,
                    bench.model_factory(arguments),
                    tokenizer,
                    sentences,
                    scratch,
                    flags=["--train_sampling_strategy", "sequential"],
                    eval_set=None if profile else dev,
                )
            except Exception as error:  # one broken configuration must not cost a GPU window the others' numbers
                print(f"{method} / {recipe} failed: {type(error).__name__}: {str(error).strip()[:500]}", flush=True)
                rows.append({"method": method, "recipe": recipe, "error": f"{type(error).__name__}: {error}"[:2000]})
                continue
        row["warmup_steps"] = arguments.warmup_steps
        rows.append(row)
    return rows


def part_bench(report):
    rows = measure(report, [(m, r) for m in ("full", "prefix") for r in ("original", "fast")])
    for original, fast in zip(rows[::2], rows[1::2]):  # each method's original recipe, then its fast one
        if "error" not in original and "error" not in fast:
            original["speedup"], fast["speedup"] = 1.0, round(original["ms_per_step"] / fast["ms_per_step"], 2)
    return {"bench": rows}


def part_profile(report):
    (row,) = measure(report, [("full", "fast")], profile=True)
    return {"profile": {"method": "full", "recipe": "fast", **row.get("profile", {"error": row.get("error")})}}


def end_to_end(report, runs):
    """Runs the train scripts as a user would, and reads their results files."""
    rows = []
    folder = os.path.join(os.path.dirname(os.path.abspath(report.output)), "gpu_report_runs")
    for method, recipe in runs:
        run_name = f"gpu-{method}-{recipe}-{utc_stamp()}"
        argv = [
            "--model_name_or_path", report.model_name_or_path, "--model_name", report.model_name,
            "--data_dir", report.data_dir, "--num_train_epochs", "1", "--lr_preset", "tuned", "--recipe", recipe,
            "--save_strategy", "no", "--save_model", "False", "--results_dir", folder, "--run_name", run_name,
            "--disable_tqdm", "True",
        ]  # fmt: skip
        if report.quick:
            argv += ["--max_train_samples", "64", "--max_eval_samples", "32"]
        if report.use_cpu:
            argv += ["--use_cpu", "True"]
        started = time.perf_counter()
        code = run_experiment(argv, method=method)
        wall = time.perf_counter() - started
        record = read_json(os.path.join(folder, f"{run_name}.json")) if code in (0, 1) else {}
        metrics, efficiency = record.get("metrics", {}), record.get("efficiency", {})
        rows.append(
            {
                "script": {"full": "train_finetune.py", "prefix": "train_prefix.py"}[method],
                "recipe": recipe,
                "exit_code": code,
                "wall_s": round(wall, 1),  # loading, tokenizing, compiling, training and evaluating
                "train_time_s": efficiency.get("train_time_s"),
                "train_sentences": record.get("data", {}).get("train_sentences"),
                "eval_total": metrics.get("eval_total"),
                "eval_correct": metrics.get("eval_correct"),
                "eval_accuracy": metrics.get("eval_accuracy"),
                "train_loss": metrics.get("train_loss"),
                "learning_rate": record.get("config", {}).get("training_arguments", {}).get("learning_rate"),
                "peak_memory_mb": efficiency.get("peak_memory_mb"),
                "peak_memory_reserved_mb": efficiency.get("peak_memory_reserved_mb"),
                "command": record.get("command"),
            }
        )
    return rows


PART_RUNS = {"end_to_end": [("full", "fast"), ("prefix", "fast")], "original": [("full", "original")]}


def merge(path, part, found, command):
    """The report at `path` with this part's entries replaced, and what the parts add up to."""
    report = read_json(path) if os.path.isfile(path) else {"schema_version": 1, "kind": "gpu_report"}
    report.setdefault("commands", {})[part] = command
    if part in PART_RUNS:
        replaced = {(r["script"], r["recipe"]) for r in found}
        kept = [r for r in report.get("end_to_end", []) if (r["script"], r["recipe"]) not in replaced]
        report["end_to_end"] = kept + found
    else:
        report.update(found)
    report["created_at"], report["environment"] = utc_stamp(), environment()
    runs = {(r["script"], r["recipe"]): r for r in report.get("end_to_end", [])}
    fast, original = runs.get(("train_finetune.py", "fast")), runs.get(("train_finetune.py", "original"))
    if fast and original and fast["eval_accuracy"] is not None and original["eval_accuracy"] is not None:
        difference = 100 * (fast["eval_accuracy"] - original["eval_accuracy"])
        report["bf16_vs_fp32"] = {
            "accuracy_points": round(difference, 2),
            "within_tolerance": abs(difference) <= BF16_TOLERANCE,
            "tolerance_points": BF16_TOLERANCE,
        }
    return report


def markdown(report) -> str:
    """The README's GPU section: the card, the versions, the command, and the numbers."""
    env = report["environment"]
    lines = [
        f"Measured on {env['device']} (torch {env['torch']}, transformers {env['transformers']}, peft {env['peft']}, "
        f"commit {str(env.get('git_commit'))[:12]}), {report['created_at']}:",
        "",
        "```bash",
        *sorted(set(report.get("commands", {}).values())),
        "```",
    ]
    if report.get("bench"):
        lines += [
            "",
            "| method | recipe | ms/step | speed-up | warm-up s | peak allocated MB | peak reserved MB | "
            "one dev evaluation s | original's protocol, projected |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in report["bench"]:
            if "error" in r:
                lines.append(f"| {r['method']} | {r['recipe']} | failed: {r['error'][:80]} |||||||")
                continue
            lines.append(
                f"| {r['method']} | {r['recipe']} | {r['ms_per_step']:.2f} | {r.get('speedup') or 'n/a'}× | "
                f"{r['warmup_s']:.1f} | {r['peak_memory_mb']} | {r['peak_memory_reserved_mb']} | {r['eval_s']} | "
                f"{r['projected_protocol_s'] / 60:.1f} min |"
            )
    if report.get("end_to_end"):
        lines += [
            "",
            "| script | recipe | rate | dev accuracy | train loss | wall time (all of it) | peak allocated MB |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in report["end_to_end"]:
            accuracy = (
                "failed"
                if r["eval_accuracy"] is None
                else f"{100 * r['eval_accuracy']:.2f} % ({r['eval_correct']}/{r['eval_total']})"
            )
            lines.append(
                f"| {r['script']} | {r['recipe']} | {r['learning_rate']} | {accuracy} | {r['train_loss']} | "
                f"{r['wall_s']:.0f} s | {r['peak_memory_mb']} |"
            )
    if report.get("profile"):
        p = report["profile"]
        lines += [
            "",
            f"Profile of {p['steps']} fast full fine-tuning steps: {p['ms_per_step']} ms per step under the profiler, "
            f"GPU busy {p['gpu_busy_fraction']}, host {p['host_ms_per_step']} ms per step, "
            f"{p['kernel_launches_per_step']} kernel launches and {p['syncs_per_step']} synchronisations per step.",
        ]
    return "\n".join(lines)


def print_table(report):
    if report.get("bench"):
        bench.print_table(report["bench"])
    for row in report.get("end_to_end", []):
        accuracy = "failed" if row["eval_accuracy"] is None else f"{100 * row['eval_accuracy']:.2f} %"
        print(
            f"{row['script']:<18} {row['recipe']:<9} {accuracy:>8} {row['wall_s']:>8.0f} s  "
            f"peak {row['peak_memory_mb']} MB"
        )
    if report.get("bf16_vs_fp32"):
        print(f"bf16 - fp32: {report['bf16_vs_fp32']['accuracy_points']:+.2f} points")
    if report.get("profile"):
        print({k: v for k, v in report["profile"].items() if k != "trace"})


def command_for(part, argv, report) -> str:
    """The command that reruns this part, with no path of this machine in it."""
    others = [a for i, a in enumerate(argv) if a != "--part" and (i == 0 or argv[i - 1] != "--part")]
    words = ["python", "gpu_report.py", "--part", part, *portable(others, {report.model_name_or_path: "$MINILM"})]
    return shlex.join(words).replace("'$MINILM'", "$MINILM")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        (report,) = HfArgumentParser(ReportArguments).parse_args_into_dataclasses(args=argv)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if report.markdown:
        print(markdown(read_json(report.output)))
        return 0
    parts = PARTS if report.part == "all" else (report.part,)
    for part in parts:
        if part == "bench":
            found = part_bench(report)
        elif part == "profile":
            found = part_profile(report)
        else:
            found = end_to_end(report, PART_RUNS[part])
        write_json_atomic(report.output, merge(report.output, part, found, command_for(part, argv, report)))
    result = read_json(report.output)
    print_table(result)
    print(f"-> {report.output}")
    failed = (
        any(r.get("error") for r in result.get("bench", []))
        or any(r["exit_code"] for r in result.get("end_to_end", []))
        or bool(result.get("profile", {}).get("error"))
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
