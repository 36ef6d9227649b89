"""Run a grid of methods x seeds with shared settings, then summarise it with statistics.

    python compare.py --methods full,prefix,lora --seeds 1,2,3 --lr_preset tuned [any train flag] [--jobs N]
    python compare.py ... --train_sizes 100,300,1000,4000   # a learning curve: methods x sizes x seeds

Every train flag passes through to each run. Each run is its own process (train_peft.py) writing
its own file, <results_dir>/<grid>-<method>-seed<seed>.json, so parallel runs never share a file.
With --jobs N, N runs go at once: one per visible GPU, or N CPU processes sharing the cores.
Then plot_results.py writes summary.md, summary.json and the figures for the folder.

Ctrl-C (or SIGTERM to the process group, as `timeout` sends) starts no more runs, and stops those under way at a
checkpoint. The same command with the same --results_dir continues the grid: a run that completed there with the
same flags, versions, device and threads is taken as it is, and an interrupted one resumes from its checkpoint.

With --train_sizes, each size is a stratified random subset of the training file (--train_size: nested, from a
fixed seed), and every size trains for the same --budget_steps optimizer steps, cycling over its sentences: a
fixed compute budget (250 steps: one epoch of 4,000 sentences at batch 16). --budget epochs trains each size for
--num_train_epochs instead. Only the final model is evaluated on dev, unless --eval_strategy says otherwise.
"""

import argparse
import os
import shlex
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import plot_results
from config import ConfigError, original_rate_note, parse_args, refuse_flags
from methods import METHODS
from resilience import CatchesStopSignals
from results import earlier_run, utc_stamp
from utils import environment

HERE = os.path.dirname(os.path.abspath(__file__))


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--methods", default="full,prefix", help=f"comma-separated, from: {', '.join(METHODS)}")
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated seeds; each method runs once per seed")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once: one per GPU, or CPU processes")
    parser.add_argument(
        "--train_sizes", default=None, help="comma-separated numbers of training sentences: a learning curve"
    )
    parser.add_argument(
        "--budget",
        choices=["steps", "epochs"],
        default="steps",
        help="with --train_sizes: the same number of optimizer steps for every size (--budget_steps), "
        "or the same number of epochs (--num_train_epochs)",
    )
    parser.add_argument("--budget_steps", type=int, default=250, help="optimizer steps per run under --budget steps")
    parser.add_argument(
        "--results_dir", default=None, help="default: results/compare-<UTC time>, so the summary covers this grid"
    )
    args, train_flags = parser.parse_known_args(argv)
    methods = args.methods.split(",")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown method {unknown[0]!r}; choose from {', '.join(METHODS)}")
    try:
        seeds = [int(seed) for seed in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds {args.seeds!r} must be comma-separated integers")
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    sizes = [None]
    if args.train_sizes:
        try:
            sizes = sorted({int(size) for size in args.train_sizes.split(",")})
        except ValueError:
            parser.error(f"--train_sizes {args.train_sizes!r} must be comma-separated integers")
        if sizes[0] < 1 or args.budget_steps < 1:
            parser.error("--train_sizes and --budget_steps must be positive")
    owned = ("--method", "--seed", "--run_name", "--results_dir")
    if args.train_sizes:
        owned += ("--train_size",) + (("--max_steps",) if args.budget == "steps" else ())
    refuse_flags("compare.py", train_flags, owned)
    return args, methods, seeds, sizes, train_flags


def grid_rate_note(methods, train_flags) -> Optional[str]:
    """What to tell a user whose grid trains methods the original did not run at its 1e-6, or None: each run
    says so too, but in its own output, which the grid keeps out of sight."""
    at_original_rate = []
    for method in methods:
        try:
            experiment, training, _ = parse_args([*train_flags, "--method", method])
        except ConfigError:
            return None  # the runs say what is wrong
        if original_rate_note(experiment, training):
            at_original_rate.append(method)
    if not at_original_rate:
        return None
    return (
        f"note: {', '.join(at_original_rate)} will train at the original experiment's learning rate, 1e-6, which "
        "it set for full fine-tuning and prefix tuning; --lr_preset tuned gives each method the rate our sweeps "
        "chose (results/reference/sweeps/)."
    )


def curve_flags(args, size) -> list[str]:
    """A learning-curve run's own flags, before the user's: its subset, its budget, and one dev evaluation
    at the end, not one per epoch of a few steps each."""
    if size is None:
        return []
    budget = ["--max_steps", str(args.budget_steps)] if args.budget == "steps" else []
    return ["--train_size", str(size), *budget, "--eval_strategy", "no", "--save_strategy", "no"]


def job_environments(jobs):
    """One environment per concurrent slot: its own GPU where there are GPUs, else a share of the CPU threads."""
    import torch

    gpus = torch.cuda.device_count()
    if gpus:
        return [{"CUDA_VISIBLE_DEVICES": str(slot % gpus)} for slot in range(jobs)]
    threads = str(max(1, (os.cpu_count() or 1) // jobs))  # two torch processes with all threads each thrash
    return [{"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads} for _ in range(jobs)]


def child_environment(here, slot) -> dict:
    """What a run records as its environment when it runs in this slot: its own thread count, where set."""
    return {**here, "cpu_threads": int(slot["OMP_NUM_THREADS"])} if "OMP_NUM_THREADS" in slot else here


class StopGrid(CatchesStopSignals):
    """Ctrl-C or SIGTERM: start no more runs, and wait for those under way.

    The runs share this process group, so the terminal's Ctrl-C (or `timeout`'s SIGTERM) reaches each of them
    too, once: each saves a checkpoint and stops, and a second Ctrl-C stops them at once. Passing the signal on
    from here would make the first one count twice.
    """

    def __init__(self):
        self.received = None

    def _handle(self, number, frame):
        if self.received is None:
            print(f"\n{signal.Signals(number).name}: starting no more runs.", file=sys.stderr)
        self.received = number

    def start(self, command, env):
        """The run's process, or None once a signal has come. (A run started in the instant between the signal and
        its handler here misses it, and runs to its end.)"""
        if self.received:
            return None
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args, methods, seeds, sizes, train_flags = parse(argv)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    note = grid_rate_note(methods, train_flags)
    if note:
        print(note)
    grid = f"compare-{utc_stamp()}"
    results_dir = args.results_dir or os.path.join("results", grid)
    runs = [(method, size, seed) for seed in seeds for size in sizes for method in methods]
    slots = job_environments(args.jobs)
    here = environment()
    stop = StopGrid()

    def launch(index_and_run):
        index, (method, size, seed) = index_and_run
        where = f"{method} seed {seed}" + (f", {size} sentences" if size else "")
        run_name = f"{grid}-{method}-seed{seed}" if size is None else f"{grid}-{method}-n{size}-seed{seed}"
        flags = [
            "--method",
            method,
            "--seed",
            str(seed),
            "--run_name",
            run_name,
            "--results_dir",
            results_dir,
            "--disable_tqdm",
            "True",
            "--save_model",
            "False",  # a grid keeps its results files; a --save_model True among the train flags comes later and wins
            *curve_flags(args, size),
            *train_flags,
        ]
        slot = slots[index % len(slots)]
        earlier = earlier_run(results_dir, flags, child_environment(here, slot))
        if earlier and earlier["status"] == "completed":
            print(f"[{where}] completed before, as {earlier['run_name']}: taken as it is", flush=True)
            return 0
        if earlier:  # interrupted: the same --run_name resumes it from its checkpoint
            flags[flags.index("--run_name") + 1] = earlier["run_name"]
        started = time.perf_counter()
        process = stop.start([sys.executable, os.path.join(HERE, "train_peft.py"), *flags], {**os.environ, **slot})
        if process is None:
            return None
        stdout, stderr = process.communicate()
        last = (stdout.strip().splitlines() or [""])[-1] if process.returncode == 0 else stderr.strip()[-500:]
        print(f"[{where}] exit {process.returncode} after {time.perf_counter() - started:.0f} s: {last}", flush=True)
        return process.returncode

    sized = f" x sizes {', '.join(map(str, sizes))}" if args.train_sizes else ""
    print(
        f"{len(runs)} runs ({', '.join(methods)}{sized} x seeds {', '.join(map(str, seeds))}), "
        f"{args.jobs} at a time -> {results_dir}"
    )
    with stop, ThreadPoolExecutor(max_workers=args.jobs) as pool:
        codes = list(pool.map(launch, enumerate(runs)))
    if stop.received:
        again = argv if args.results_dir else [*argv, "--results_dir", results_dir]
        print(
            f"interrupted: {codes.count(None)} of {len(runs)} runs not started; to continue (completed runs are taken "
            f"as they are, interrupted ones resume): {shlex.join(['python', 'compare.py', *again])}",
            file=sys.stderr,
        )
        return 128 + stop.received
    if all(code == 2 for code in codes):
        return 2  # the shared flags are wrong: every run refused them
    summary = plot_results.main(["--results_dir", results_dir])
    failed = sum(code != 0 for code in codes)
    if failed:
        print(f"{failed} of {len(runs)} runs did not complete; the summary covers the rest.", file=sys.stderr)
    return 1 if failed or summary else 0


if __name__ == "__main__":
    sys.exit(main())
