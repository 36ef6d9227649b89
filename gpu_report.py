"""Every GPU number in the README, from one command, in parts that fit a short GPU window.

    python gpu_report.py --part all --model_name_or_path $MINILM --data_dir $SST2
    python gpu_report.py --part bench_full ...         # full fine-tuning, original and fast recipe
    python gpu_report.py --part bench_prefix ...       # prefix tuning, the same
    python gpu_report.py --part end_to_end_full ...    # train_finetune.py, fast recipe, one SST-2 epoch
    python gpu_report.py --part end_to_end_prefix ...  # train_prefix.py, the same
    python gpu_report.py --part original ...           # train_finetune.py, one epoch under --recipe original
    python gpu_report.py --part profile ...            # where a fast step's time goes
    python gpu_report.py --part bench_bare ...         # full fine-tuning's fast step without the Trainer; the floor
    python gpu_report.py --part bench_variants ...     # full fine-tuning's fast recipe with other flags (VARIANTS)
    python gpu_report.py --part bench_variants_prefix  # prefix tuning's, the same
    python gpu_report.py --part bench_layers_once      # both, one encoder layer compiled for all (LAYERS_ONCE)
    python gpu_report.py --markdown                    # the README's GPU section, from the JSON

`--part bench` runs both bench parts, `--part end_to_end` both end-to-end ones. Each part merges into one
JSON (--output, default results/gpu_report.json, "kind": "gpu_report") as each of its rows lands, so parts
run in separate windows add up, a part cut off by its time limit keeps the rows it finished, and a part run
again replaces its own rows only. Each part records the card, versions and commit it ran with ("environments"),
so parts from windows on another card or torch add up too, each named with its own: a speed-up divides times
measured with one card and torch only, and so does the comparison of bf16 with fp32.

- bench: full and prefix tuning under the original and the fast recipe on the BERT-base architecture at
  random init (speed and memory do not depend on the weights), on SST-2's train lengths (word pieces from
  --model_name_or_path's tokenizer, bert-base-uncased's vocabulary for MiniLM). The warm-up reaches every
  length bucket three times, in order (--train_sampling_strategy sequential), so no graph is compiled or
  recorded inside the timed window. Reports ms/step, warm-up (compile) time, peak memory allocated and
  reserved, one dev evaluation, and the projected wall time of the original's protocol: 42,100 steps plus
  ten dev evaluations, the first timed as it ran (eval_first_s): the Trainer evaluates the uncompiled model, so
  it compiles nothing, but pays a first call's warm-up.
- end_to_end_*, original: train_finetune.py and train_prefix.py, one epoch on every SST-2 training sentence,
  --lr_preset tuned, evaluated on all 872 dev sentences; fine-tuning again under --recipe original, the
  check that bf16 learns what fp32 learns (within 0.5 points, with McNemar's test on the paired predictions).
- profile: torch.profiler over --profile_steps fast full fine-tuning steps after the warm-up: kernel ms per
  step and the share of the time the GPU is busy, host ms per step and the operations that take most of it,
  kernel launches and synchronisations per step; then cProfile over as many steps, for the Python functions.
- bench_bare: the bench's fast full fine-tuning row again, stepped by a plain PyTorch loop over the Trainer's
  own model, batches, optimizer and scheduler (bench.bare_loop): the step without the Trainer's loop around
  it, so that the two rows, stage by stage, say what that loop costs the host; it also times the forward, the
  backward and the clipping apart, which the Trainer's callbacks cannot. Then the GPU issue's reference
  step on the same card (bench.reference_loop: one fixed [16, 64] batch on the device, compiled for that
  shape, no data loader, clipping or scheduler): the floor that the pipeline's step is measured against.
  Last, that reference compiled for symbolic shapes, as the recipe compiles (one graph for every length
  bucket): what symbolic shapes alone cost the step.
- bench_variants, bench_variants_prefix: the bench's fast row of full fine-tuning, or of prefix tuning, again
  with the flags of each of that method's VARIANTS on top, against the same original row: what a choice of the
  recipe buys, and alternatives measured on the card before one becomes the recipe.
- bench_layers_once: the bench's fast rows of both methods again with --compile_layers_once (LAYERS_ONCE): the
  warm-up with one encoder layer compiled for all, and whether the step keeps its time.

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
from experiment import SCRIPTS
from experiment import main as run_experiment
from results import measured_with, portable, read_json, utc_stamp, without_flags, write_json_atomic
from significance import mcnemar_exact
from summary import counted, precision_text
from utils import environment

# In the order a GPU window runs them (tools/gpu_window.sh): the benchmark first, as the issue asks, since the
# recipe has changed since its rows (results/gpu_report.json's commit); then where the time goes, the profile
# before bench_bare, whose last rows compile anew and may meet the window's end.
PARTS = (
    "bench_full",
    "bench_prefix",
    "profile",
    "bench_bare",
    "bench_variants",
    "bench_variants_prefix",
    "bench_layers_once",
    "end_to_end_prefix",
    "end_to_end_full",
    "original",
)
GROUPS = {"all": PARTS, "bench": ("bench_full", "bench_prefix"), "end_to_end": ("end_to_end_full", "end_to_end_prefix")}
ROW_KEYS = {"bench": ("method", "recipe", "variant"), "end_to_end": ("script", "recipe")}  # a rerun replaces its own
# Alternatives to the fast recipe, each one more row. The fast step waits on the host (the profile in
# results/gpu_report.json: 5 ms of kernels in a 17 ms step), so most take host work away or move it. The
# first two compile the same graphs as the bench's fast row, so a warm machine's compile cache serves them.
VARIANTS = (
    ("full", "--walk_modules_once False"),  # the Trainer's own walks over the model: what listing once saves here
    # Two workers collate ahead, and a thread takes their batches and pins them, holding the GIL the loop's
    # thread waits for: the recipe did so until a CPU measurement (results/reference/batch-time-cpu/) found
    # the loop's thread paying 2.54 ms per batch to receive from a worker, 0.35 to collate itself.
    ("full", "--dataloader_num_workers 2"),
    # Without CUDA graphs inductor's wrapper launches each kernel itself, which may cost the host less than
    # replaying graphs through cudagraph trees.
    ("full", "--torch_compile_mode default"),
    # torch's own split of the step: the backward reads autocast's bf16 copies of the weights, kept from the
    # forward (163 MiB for BERT-base), instead of casting again. What the recipe's split saves in peak memory, and
    # what its casts cost in time. Last: a part cut off by its time limit keeps the rows before.
    ("full", "--recompute_in_backward False"),
    # Prefix tuning (bench_variants_prefix) with peft's copy of its virtual-token ids from the CPU at every forward,
    # which waits for the GPU and splits the compiled forward into more than one CUDA graph (place_prompt_tokens):
    # what placing them once saves.
    ("prefix", "--prompt_tokens_on_device False"),
)
# One encoder layer traced and compiled for all twelve (experiment.compile_layers_once, whose docstring gives what
# it saved on our CPU). The warm-up counts in the original's protocol, so this may become the recipe's once a
# card shows its step as fast. bench_layers_once: both methods.
LAYERS_ONCE = "--compile_layers_once True"
PROTOCOL_EPOCHS = 10  # the original's: 42,100 steps of 16 sentences, and a dev evaluation after each epoch
BF16_TOLERANCE = 0.5  # points of dev accuracy between the fast recipe's bf16 and the original's fp32


@dataclass
class ReportArguments:
    part: str = field(default="all", metadata={"help": "Which part to run.", "choices": [*GROUPS, *PARTS]})
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
        measure_steps=2 * report.profile_steps if profile else report.measure_steps,  # torch's profiler, then cProfile
        epochs=PROTOCOL_EPOCHS,
        quick=report.quick,
        use_cpu=report.use_cpu,
        profile=profile,
        profile_steps=report.profile_steps,
        results_dir=os.path.dirname(os.path.abspath(report.output)),
    )


def measure(report, configurations, save, profile=False):
    """bench.measure for each (method, recipe), after a warm-up that reaches every length bucket; each row
    goes to `save` as soon as it is measured."""
    tokenizer = AutoTokenizer.from_pretrained(report.model_name_or_path)
    train, dev = sst2_lengths(report, tokenizer, "train"), sst2_lengths(report, tokenizer, "validation")
    train, primed_steps = bench.primed(train, 16, FAST_ON_GPU["pad_to_multiple_of"])
    for method, recipe, variant in configurations:
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
                    variant,
                    bench.model_factory(arguments),
                    tokenizer,
                    sentences,
                    scratch,
                    flags=["--train_sampling_strategy", "sequential"],
                    eval_set=None if profile else dev,
                )
            except Exception as error:  # one broken configuration must not cost a GPU window the others' numbers
                print(f"{method} / {recipe} failed: {type(error).__name__}: {str(error).strip()[:500]}", flush=True)
                row = {
                    "method": method,
                    "recipe": recipe,
                    "variant": variant,
                    "error": f"{type(error).__name__}: {error}"[:2000],
                }
        if "error" not in row:
            row["warmup_steps"] = arguments.warmup_steps
            print({k: row.get(k) for k in ("method", "recipe", "ms_per_step", "warmup_s", "peak_memory_mb")})
        save(row)


def bench_part(method):
    def part(report, save):
        measure(report, [(method, "original", None), (method, "fast", None)], lambda row: save({"bench": [row]}))

    return part


def part_profile(report, save):
    def keep(row):
        save({"profile": {"method": "full", "recipe": "fast", **row.get("profile", {"error": row.get("error")})}})

    measure(report, [("full", "fast", None)], keep, profile=True)


def part_bench_bare(report, save):
    # The bare loop first: it runs bench_full's compiled graphs, from the cache; each reference compiles its own.
    loops = (bench.BARE_LOOP, bench.REFERENCE_LOOP, bench.REFERENCE_LOOP_DYNAMIC)
    measure(report, [("full", "fast", loop) for loop in loops], lambda row: save({"bench": [row]}))


def variants_part(method):
    def part(report, save):
        rows = [(method, "fast", variant) for of, variant in VARIANTS if of == method]
        measure(report, rows, lambda row: save({"bench": [row]}))

    return part


def part_layers_once(report, save):
    rows = [(method, "fast", LAYERS_ONCE) for method in ("full", "prefix")]
    measure(report, rows, lambda row: save({"bench": [row]}))


def end_to_end_part(method, recipe):
    def part(report, save):
        save({"end_to_end": [end_to_end(report, method, recipe)]})

    return part


def end_to_end(report, method, recipe):
    """Runs a train script as a user would, and reads its results file."""
    folder = os.path.join(os.path.dirname(os.path.abspath(report.output)), "gpu_report_runs")
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
    return {**run_row(record, method, recipe), "exit_code": code, "wall_s": round(wall, 1)}


def run_row(record, method, recipe):
    """The report's row for a train script's results file."""
    metrics, efficiency = record.get("metrics", {}), record.get("efficiency", {})
    return {
        "script": SCRIPTS[method],
        "recipe": recipe,
        "exit_code": 0 if record.get("status") == "completed" else None,
        "wall_s": None,  # set by end_to_end: loading, tokenizing, compiling, training and evaluating
        "total_time_s": efficiency.get("total_time_s"),  # the run's own clock: all of that but Python's start
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
        "predictions": record.get("predictions"),  # for McNemar's test of bf16 against fp32
        "labels": record.get("labels"),
        "precision": precision_text(record.get("config", {})),  # the fast recipe's is fp16 on cards before Ampere
    }


PART_FUNCTIONS = {
    "bench_full": bench_part("full"),
    "bench_prefix": bench_part("prefix"),
    "bench_bare": part_bench_bare,
    "bench_variants": variants_part("full"),
    "bench_variants_prefix": variants_part("prefix"),
    "bench_layers_once": part_layers_once,
    "end_to_end_full": end_to_end_part("full", "fast"),
    "end_to_end_prefix": end_to_end_part("prefix", "fast"),
    "original": end_to_end_part("full", "original"),
    "profile": part_profile,
}
METHOD_ORDER, RECIPE_ORDER = ("full", "prefix"), ("original", "fast")


def merge(path, part, found, command):
    """The report at `path` with `found`'s rows, which `part` measured here, replacing those of the same key, and
    what they add up to. The part's card, versions, commit and time go to "environments"; "environment" is the
    latest part's."""
    report = read_json(path) if os.path.isfile(path) else {"schema_version": 1, "kind": "gpu_report"}
    env = environment()
    report.setdefault("commands", {})[part] = command
    report.setdefault("environments", {})[part] = {**env, "measured_at": utc_stamp()}
    for name, value in found.items():
        if name in ROW_KEYS:
            key = ROW_KEYS[name]
            for row in value:
                row["part"] = part
            replaced = {tuple(row.get(k) for k in key) for row in value}
            kept = [row for row in report.get(name, []) if tuple(row.get(k) for k in key) not in replaced]
            report[name] = kept + value
        else:
            report[name] = value
    report["created_at"], report["environment"] = utc_stamp(), env
    report.get("bench", []).sort(
        key=lambda r: (METHOD_ORDER.index(r["method"]), RECIPE_ORDER.index(r["recipe"]), r.get("variant") or "")
    )
    for method in METHOD_ORDER:
        rows = [r for r in report.get("bench", []) if r["method"] == method]
        for row in rows:
            row.pop("speedup", None)
        original = next((r for r in rows if r["recipe"] == "original" and not r.get("variant")), None)
        if original and "error" not in original:
            for row in rows:
                if "error" not in row and same_machine(report, row, original):
                    row["speedup"] = round(original["ms_per_step"] / row["ms_per_step"], 2)
    report.pop("bf16_vs_fp32", None)
    runs = {(r["script"], r["recipe"]): r for r in report.get("end_to_end", [])}
    fast, original = runs.get(("train_finetune.py", "fast")), runs.get(("train_finetune.py", "original"))
    if (
        fast
        and original
        and fast["eval_accuracy"] is not None
        and original["eval_accuracy"] is not None
        and same_machine(report, fast, original)  # else the difference would mix bf16 with another card or torch
    ):
        difference = 100 * (fast["eval_accuracy"] - original["eval_accuracy"])
        report["bf16_vs_fp32"] = {
            "fast_precision": fast.get("precision", "bf16"),  # rows from before it was recorded: bf16
            "accuracy_points": round(difference, 2),
            "within_tolerance": abs(difference) <= BF16_TOLERANCE,
            "tolerance_points": BF16_TOLERANCE,
        }
        if fast.get("predictions") and original.get("predictions"):
            only_fp32, only_bf16, p = mcnemar_exact(original["predictions"], fast["predictions"], original["labels"])
            report["bf16_vs_fp32"]["mcnemar"] = {"only_fp32_right": only_fp32, "only_bf16_right": only_bf16, "p": p}
    return report


def same_machine(report, a, b):
    """Whether two rows were measured with the same card and torch, so that their times or their runs compare."""
    first, second = measured_with(report, a), measured_with(report, b)
    return (first.get("device"), first.get("torch")) == (second.get("device"), second.get("torch"))


COMPILE_TIMER = "_compile.compile_inner"  # torch's timer around all of dynamo's, AOTAutograd's and inductor's work


def compiling(row):
    """', compiling X s of its Y s of warm-up', by torch's own timer, where the row's torch kept it."""
    seconds = (row["compiled"].get("phases_s") or {}).get(COMPILE_TIMER)
    return f", compiling {seconds[0]} s of its {row['warmup_s']:.1f} s of warm-up" if seconds else ""


def cut(compiled):
    """', N pieces of graphs cut around work that CUDA graphs cannot hold', where the row counted them."""
    pieces = compiled.get("cudagraph_partitions")
    return "" if pieces is None else f", {counted(pieces, 'piece')} of graphs cut around work CUDA graphs cannot hold"


def machine_text(env):
    """'CARD (torch V, transformers V, peft V, commit C)'."""
    return (
        f"{env['device']} (torch {env['torch']}, transformers {env['transformers']}, peft {env['peft']}, "
        f"commit {str(env.get('git_commit'))[:12]})"
    )


def markdown(report) -> str:
    """The README's GPU section: the card, the versions, the command, and the numbers."""
    machines = {}  # what measured the parts: its description, and the parts it measured, in the order of PARTS
    for part in sorted(report.get("environments", {}), key=lambda p: PARTS.index(p) if p in PARTS else len(PARTS)):
        machines.setdefault(machine_text(report["environments"][part]), []).append(part)
    if len(machines) > 1:
        lines = [f"Measured in parts, the last at {report['created_at']}:", ""]
        lines += [f"- {', '.join(parts)}: {machine}" for machine, parts in machines.items()]
    else:
        lines = [f"Measured on {machine_text(report['environment'])}, {report['created_at']}:"]
    lines += [
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
                lines.append(f"| {r['method']} | {bench.recipe_label(r['recipe'], r.get('variant'))} | failed: "
                             f"{r['error'][:80]} |||||||")  # fmt: skip
                continue
            projected = r["projected_protocol_s"]  # None for bench.LOOPS' rows, which evaluate nothing
            if projected is not None:
                projected = f"{projected / 60:.1f} min{'' if 'eval_first_s' in r else ' *'}"
            speedup = f"{r['speedup']}×" if r.get("speedup") else "n/a"  # n/a: no original row to divide by
            lines.append(
                f"| {r['method']} | {bench.recipe_label(r['recipe'], r.get('variant'))} | {r['ms_per_step']:.2f} | "
                f"{speedup} | {r['warmup_s']:.1f} | {r['peak_memory_mb']} | "
                f"{r['peak_memory_reserved_mb']} | {r['eval_s'] or 'n/a'} | {projected or 'n/a'} |"
            )
        if any("eval_first_s" not in r for r in report["bench"] if "error" not in r):
            lines += [
                "",
                "\\* The row's code did not time the first evaluation on its own: the projection counts ten "
                "evaluations as fast as the second one. The first compiles nothing (the Trainer evaluates the "
                "uncompiled model); it only warms up.",
            ]
    staged = [r for r in report.get("bench", []) if r.get("host_ms_per_stage")]
    if staged:
        lines += [
            "",
            "Each timed step by stage, host wall time between the Trainer's callbacks (no sync: the host's own work "
            "while the GPU waits on it), ms:",
            "",
            "| method | recipe | batch | forward, backward, clipping | optimizer | scheduler, zero_grad |",
            "|---|---|---|---|---|---|",
        ]
        for r in staged:
            lines.append(
                f"| {r['method']} | {bench.recipe_label(r['recipe'], r.get('variant'))} | "
                + " | ".join(map(str, r["host_ms_per_stage"].values()))
                + " |"
            )
        compiled = [r for r in staged if r.get("compiled")]
        if compiled:  # a second graph, a graph break or a graph run kernel by kernel costs the host
            lines += [
                "",
                "What torch.compile made of each compiled row: "
                + "; ".join(
                    f"{r['method']} {bench.recipe_label(r['recipe'], r.get('variant'))}: "
                    f"{counted(r['compiled']['graphs'], 'graph')}, "
                    f"{counted(r['compiled']['graph_breaks'], 'graph break')}, "
                    f"{r['compiled']['cudagraph_skips']} run without the CUDA graphs its mode asked for"
                    + cut(r["compiled"])
                    + compiling(r)
                    for r in compiled
                )
                + ".",
            ]
        split = [r for r in staged if r.get("host_ms_per_part")]
        if split:  # the loops of our own time inside that stage, where the Trainer has no callback
            lines += [
                "",
                "The loops' forward, backward and clipping stage, split: "
                + "; ".join(
                    f"{r['method']} {bench.recipe_label(r['recipe'], r.get('variant'))}: "
                    + ", ".join(f"{part} {ms}" for part, ms in r["host_ms_per_part"].items())
                    + " ms"
                    for r in split
                )
                + ".",
            ]
    held = [r for r in report.get("bench", []) if r.get("held_mb") and not r.get("variant")]
    if held:  # what the peak is made of: the part a recipe can shrink is the step's own
        lines += [
            "",
            "Peak allocated memory, what training holds between steps (weights, optimizer state), and the rest: "
            "the step's own, its gradients included (MiB):",
            "",
            "| method | recipe | peak allocated | weights | optimizer state | the step's own | its gradients |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in held:
            kept = r["held_mb"]
            between_steps = kept["weights"] + kept["optimizer_state"]  # the Trainer frees gradients at zero_grad
            own = r["peak_memory_mb"] and round(r["peak_memory_mb"] - between_steps, 1)
            lines.append(
                f"| {r['method']} | {r['recipe']} | {r['peak_memory_mb'] or 'n/a'} | {kept['weights']} | "
                f"{kept['optimizer_state']} | {'n/a' if own is None else own} | {kept['gradients']} |"
            )
    if report.get("end_to_end"):
        lines += [
            "",
            "| script | recipe | rate | dev accuracy | train loss | time, loading to last evaluation | "
            "peak allocated MB |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in report["end_to_end"]:
            accuracy = (
                "failed"
                if r["eval_accuracy"] is None
                else f"{100 * r['eval_accuracy']:.2f} % ({r['eval_correct']}/{r['eval_total']})"
            )
            loss = "n/a" if r["train_loss"] is None else f"{r['train_loss']:.4f}"
            took = "n/a" if r.get("total_time_s") is None else f"{r['total_time_s']:.0f} s"
            lines.append(
                f"| {r['script']} | {r['recipe']} | {r['learning_rate']} | {accuracy} | {loss} | {took} | "
                f"{r['peak_memory_mb']} |"
            )
        lines += [f"\n{r['script']}, {r['recipe']}: {r['note']}" for r in report["end_to_end"] if r.get("note")]
    if report.get("bf16_vs_fp32"):
        c = report["bf16_vs_fp32"]
        verdict, fast = "within" if c["within_tolerance"] else "outside", c.get("fast_precision", "bf16")
        lines += ["", f"{fast} (fast) minus fp32 (original): {c['accuracy_points']:+.2f} points, {verdict} the "
                  f"{c['tolerance_points']}-point tolerance"]  # fmt: skip
        if c.get("mcnemar"):
            m = c["mcnemar"]
            lines[-1] += (
                f"; McNemar: {m['only_fp32_right']} sentences only fp32 got right, {m['only_bf16_right']} only "
                f"{fast}, p = {m['p']:.2g}"
            )
        lines[-1] += "."
    if report.get("profile"):
        p = report["profile"]
        lines += [
            "",
            f"Profile of {p['steps']} fast full fine-tuning steps: {p['ms_per_step']} ms per step under the profiler, "
            f"{p.get('kernel_ms_per_step', 'n/a')} ms of kernels per step (GPU busy {p['gpu_busy_fraction']}), host "
            f"{p['host_ms_per_step']} ms per step, {p['kernel_launches_per_step']} kernel launches and "
            f"{p['syncs_per_step']} synchronisations per step.",
        ]
        if p.get("host_ops_per_step"):
            lines[-1] += f" The host ran {p['host_ops_per_step']} profiled operations per step, nested ones included."
        if p.get("top_python_ms_per_step"):
            top = list(p["top_python_ms_per_step"].items())[:5]
            lines[-1] += (
                f" The Python functions with the most own host time, over {p['python_steps']} more steps under "
                "cProfile (ms per step): " + ", ".join(f"`{name}` {own}" for name, (own, _) in top) + "."
            )
        if p.get("note"):
            lines[-1] += f" {p['note']}"
    return "\n".join(lines)


def print_table(report):
    if report.get("bench"):
        bench.print_table(report["bench"])
    for row in report.get("end_to_end", []):
        accuracy = "failed" if row["eval_accuracy"] is None else f"{100 * row['eval_accuracy']:.2f} %"
        wall = "n/a" if row.get("wall_s") is None else f"{row['wall_s']:.0f} s"
        print(f"{row['script']:<18} {row['recipe']:<9} {accuracy:>8} {wall:>8}  peak {row['peak_memory_mb']} MB")
    if report.get("bf16_vs_fp32"):
        print(f"bf16 - fp32: {report['bf16_vs_fp32']['accuracy_points']:+.2f} points")
    if report.get("profile"):
        print({k: v for k, v in report["profile"].items() if k != "trace"})


def command_for(part, argv, report) -> str:
    """The command that reruns this part, with no path of this machine in it."""
    others = without_flags(argv, "--part")
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
    for part in GROUPS.get(report.part, (report.part,)):
        command = command_for(part, argv, report)

        def save(found, part=part, command=command):
            write_json_atomic(report.output, merge(report.output, part, found, command))

        PART_FUNCTIONS[part](report, save)
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
