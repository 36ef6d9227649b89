"""Run a grid of methods x seeds with shared settings, then summarise it with statistics.

    python compare.py --methods full,prefix,lora --seeds 1,2,3 --lr_preset tuned [any train flag] [--jobs N]

Every train flag passes through to each run. Each run is its own process (train_peft.py) writing
its own file, <results_dir>/<grid>-<method>-seed<seed>.json, so parallel runs never share a file.
With --jobs N, N runs go at once: one per visible GPU, or N CPU processes sharing the cores.
Then plot_results.py writes summary.md, summary.json and the figures for the folder.
"""

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import plot_results
from config import ConfigError, refuse_flags
from methods import METHODS
from results import utc_stamp

HERE = os.path.dirname(os.path.abspath(__file__))


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--methods", default="full,prefix", help=f"comma-separated, from: {', '.join(METHODS)}")
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated seeds; each method runs once per seed")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once: one per GPU, or CPU processes")
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
    refuse_flags("compare.py", train_flags, ("--method", "--seed", "--run_name", "--results_dir"))
    return args, methods, seeds, train_flags


def job_environments(jobs):
    """One environment per concurrent slot: its own GPU where there are GPUs, else a share of the CPU threads."""
    import torch

    gpus = torch.cuda.device_count()
    if gpus:
        return [{"CUDA_VISIBLE_DEVICES": str(slot % gpus)} for slot in range(jobs)]
    threads = str(max(1, (os.cpu_count() or 1) // jobs))  # two torch processes with all threads each thrash
    return [{"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads} for _ in range(jobs)]


def main(argv=None) -> int:
    try:
        args, methods, seeds, train_flags = parse(sys.argv[1:] if argv is None else argv)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    grid = f"compare-{utc_stamp()}"
    results_dir = args.results_dir or os.path.join("results", grid)
    runs = [(method, seed) for seed in seeds for method in methods]
    slots = job_environments(args.jobs)

    def launch(index_and_run):
        index, (method, seed) = index_and_run
        run_name = f"{grid}-{method}-seed{seed}"
        env = {**os.environ, **slots[index % len(slots)]}
        command = [
            sys.executable,
            os.path.join(HERE, "train_peft.py"),
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
            *train_flags,
        ]
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        last = (done.stdout.strip().splitlines() or [""])[-1] if done.returncode == 0 else done.stderr.strip()[-500:]
        print(
            f"[{method} seed {seed}] exit {done.returncode} after {time.perf_counter() - started:.0f} s: {last}",
            flush=True,
        )
        return done.returncode

    print(
        f"{len(runs)} runs ({', '.join(methods)} x seeds {', '.join(map(str, seeds))}), "
        f"{args.jobs} at a time -> {results_dir}"
    )
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        codes = list(pool.map(launch, enumerate(runs)))
    if all(code == 2 for code in codes):
        return 2  # the shared flags are wrong: every run refused them
    summary = plot_results.main(["--results_dir", results_dir])
    failed = sum(code != 0 for code in codes)
    if failed:
        print(f"{failed} of {len(runs)} runs did not complete; the summary covers the rest.", file=sys.stderr)
    return 1 if failed or summary else 0


if __name__ == "__main__":
    sys.exit(main())
