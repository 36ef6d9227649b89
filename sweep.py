"""Choose a method's learning rate on held-out training sentences, never on dev.

    python sweep.py --method lora --grid 1e-4,5e-4,1e-3 [any train flag, e.g. --max_train_samples 4000]
    python sweep.py --table results/reference/sweeps    # every sweep there, as a Markdown table

Each rate runs once per --seeds seed through the shared pipeline, training on the training sentences minus a
stratified 5 % slice (fixed seed) and scored on that slice. Every trial's results file goes under
results/sweeps/<method>/, with a summary sweep-<UTC time>.json naming the chosen rate: the highest mean held-out
accuracy over the seeds, ties broken by the lower mean held-out loss, among the rates where no seed fell. A trial
fell if, after an epoch more than 5 points above the held-out slice's majority class, an epoch came back to within
half a point of it: the end of a long schedule can hide a collapse that the run recovered from, and the next seed
may not (results/reference/ten-epoch-sweeps/). If every rate fell, the best of them is chosen all the same. A
trial that already completed in that folder with the same flags, versions, device and threads is taken as it is,
so a sweep can be resumed, or extended by seeds or rates. Ctrl-C stops the whole sweep, not just its trial; run
it again to continue, and the interrupted trial resumes from its checkpoint.
"""

import argparse
import glob
import math
import os
import shlex
import signal
import statistics
import sys

from config import ConfigError, refuse_flags
from experiment import main as run_experiment
from methods import METHODS
from results import earlier_run, flag_value, read_record, utc_stamp, without_machine_paths, write_json_atomic
from summary import fell
from utils import environment

INTERRUPTED = (128 + signal.SIGINT, 128 + signal.SIGTERM)  # the exit codes of a run stopped by Ctrl-C or SIGTERM


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--method", choices=list(METHODS), help="the method to tune")
    parser.add_argument("--grid", help="comma-separated learning rates, e.g. 1e-4,5e-4,1e-3")
    parser.add_argument(
        "--seeds",
        default="42",
        help="comma-separated seeds; a rate scores the mean over them (a rate that works "
        "for one seed can collapse for another)",
    )
    parser.add_argument("--holdout_fraction", type=float, default=0.05, help="share of training sentences held out")
    parser.add_argument("--results_dir", default="results", help="trials go to RESULTS_DIR/sweeps/<method>/")
    parser.add_argument(
        "--table", metavar="DIR", help="run nothing: print every sweep in DIR/<method>/ as a Markdown table"
    )
    args, train_flags = parser.parse_known_args(argv)
    if args.table:
        return args, None, None, train_flags
    if not (args.method and args.grid):
        parser.error("--method and --grid are required (or --table DIR)")
    try:
        grid = [float(value) for value in args.grid.split(",")]
        seeds = [int(value) for value in args.seeds.split(",")]
    except ValueError:
        raise ConfigError(f"--grid {args.grid!r} and --seeds {args.seeds!r} must be comma-separated numbers.") from None
    if not grid or not all(rate > 0 and math.isfinite(rate) for rate in grid):
        raise ConfigError("--grid needs positive learning rates.")
    refuse_flags(
        "sweep.py",
        train_flags,
        ("--learning_rate", "--results_dir", "--run_name", "--method", "--holdout_fraction", "--seed"),
    )
    return args, grid, seeds, train_flags


def run_trial(args, folder, run_name, rate, seed, train_flags):
    """One run scored on the held-out slice, or the same run that completed in this folder before (a sweep
    interrupted, or extended by seeds or rates). Returns (exit code, trial)."""
    argv = ["--method", args.method, "--learning_rate", str(rate), "--seed", str(seed), "--results_dir", folder]
    argv += ["--run_name", run_name, "--holdout_fraction", str(args.holdout_fraction), "--save_model", "False"]
    argv += train_flags  # after our --save_model False: a user's --save_model True wins
    record = earlier_run(folder, argv, environment())
    if record is None or record["status"] != "completed":
        run_name = record["run_name"] if record else run_name  # an interrupted trial resumes from its checkpoint
        argv[argv.index("--run_name") + 1] = run_name
        code = run_experiment(argv)
        record = read_record(os.path.join(folder, f"{run_name}.json"))
    else:
        code, run_name = 0, record["run_name"]
    trial = {
        "learning_rate": rate,
        "seed": seed,
        "run_name": run_name,
        "status": (record or {}).get("status", "failed"),
    }
    if trial["status"] == "completed":
        metrics = record["metrics"]
        trial.update(
            holdout_accuracy=metrics["eval_accuracy"],
            holdout_loss=metrics["eval_loss"],
            train_loss=metrics["train_loss"],
            fell=fell(record["history"], record["labels"]),
        )
    return code, trial


def rate_text(rate):
    """5e-4, not 0.0005: how rates are written in a grid."""
    return f"{rate:g}" if rate >= 1 else f"{rate:.0e}".replace("e-0", "e-")


def table(folder):
    """Markdown rows, one per sweep in folder/<method>/, oldest first (the newest sets the tuned rate): the chosen
    rate, and each rate's mean held-out accuracy (%) with every seed's in brackets where there are several; a rate
    that failed, or where a seed fell, is marked. A sweep on a subset (--train_size) names its size, and comes
    after the sweeps on the whole set, smallest subset first."""
    lines = ["| method | chosen | held-out accuracy (%) at each rate |", "|---|---|---|"]
    for method in METHODS:
        sweeps = [read_record(path) for path in sorted(glob.glob(os.path.join(folder, method, "sweep-*.json")))]
        for sweep in sorted(sweeps, key=lambda s: int(flag_value(s.get("train_flags", []), "--train_size") or 0)):
            lines.append(table_row(method, sweep))
    return "\n".join(lines)


def table_row(method, sweep):
    """One sweep's row of table()."""
    cells = []
    for rate in sweep["grid"]:
        trials = [t for t in sweep["trials"] if t["learning_rate"] == rate]
        if not all(t["status"] == "completed" for t in trials):
            cells.append(f"{rate_text(rate)}: failed")
            continue
        scores = [100 * t["holdout_accuracy"] for t in trials]
        text = f"{rate_text(rate)}: {statistics.fmean(scores):.1f}"
        text = f"**{text}**" if rate == sweep["chosen_learning_rate"] else text
        text += " (" + "/".join(f"{x:.1f}" for x in scores) + ")" if len(scores) > 1 else ""
        falls = sum(t.get("fell", False) for t in trials)  # sweeps before 2026-11-27 did not record it
        cells.append(text + (f" fell in {falls} of {len(trials)}" if falls else ""))
    seeds = ", ".join(str(seed) for seed in sweep["seeds"])
    size = flag_value(sweep.get("train_flags", []), "--train_size")
    size = f"; {int(size):,} sentences" if size else ""
    return (
        f"| {method} (seed{'s' * (len(sweep['seeds']) > 1)} {seeds}{size}) "
        f"| {rate_text(sweep['chosen_learning_rate'])} | {', '.join(cells)} |"
    )


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args, grid, seeds, train_flags = parse(argv)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.table:
        print(table(args.table))
        return 0
    folder = os.path.join(args.results_dir, "sweeps", args.method)
    stamp = utc_stamp()
    trials, rates = [], []
    for rate in grid:
        scores = []
        for seed in seeds:
            code, trial = run_trial(
                args, folder, f"{args.method}-lr{rate:g}-seed{seed}-{stamp}", rate, seed, train_flags
            )
            if code == 2:
                return 2  # the flags are wrong for every rate alike
            if code in INTERRUPTED:  # Ctrl-C stops the sweep, not just this trial
                print(
                    f"interrupted: sweep stopped at lr {rate:g} seed {seed}; run the same command again to continue "
                    "(completed trials are taken as they are, and this one resumes from its checkpoint).",
                    file=sys.stderr,
                )
                return code
            trials.append(trial)
            scores.append(trial)
            print(
                f"sweep {args.method}: lr {rate:g} seed {seed} -> {trial.get('holdout_accuracy', trial['status'])}",
                flush=True,
            )
        if all(t["status"] == "completed" for t in scores):  # a rate that crashes for any seed is out
            rates.append(
                {
                    "learning_rate": rate,
                    "mean_holdout_accuracy": statistics.fmean(t["holdout_accuracy"] for t in scores),
                    "min_holdout_accuracy": min(t["holdout_accuracy"] for t in scores),
                    "mean_holdout_loss": statistics.fmean(t["holdout_loss"] for t in scores),
                    "seeds_that_fell": sum(t["fell"] for t in scores),
                }
            )

    if not rates:
        print(f"error: every rate of the sweep failed; see {folder}.", file=sys.stderr)
        return 1
    best = max(rates, key=lambda r: (not r["seeds_that_fell"], r["mean_holdout_accuracy"], -r["mean_holdout_loss"]))
    summary = {
        "schema_version": 1,
        "kind": "sweep",
        "method": args.method,
        "grid": grid,
        "seeds": seeds,
        "holdout_fraction": args.holdout_fraction,
        "command": shlex.join(["python", "sweep.py", *without_machine_paths(argv)]),
        "train_flags": without_machine_paths(train_flags),
        "trials": trials,
        "rates": rates,
        "chosen_learning_rate": best["learning_rate"],
    }
    path = os.path.join(folder, f"sweep-{stamp}.json")
    write_json_atomic(path, summary)
    print(
        f"chosen for {args.method}: {best['learning_rate']:g} "
        f"(mean held-out accuracy {best['mean_holdout_accuracy']:.2%} over {len(seeds)} seed(s)) -> {path}"
    )
    fallen = ", ".join(f"{r['learning_rate']:g}" for r in rates if r["seeds_that_fell"])
    if best["seeds_that_fell"]:
        print(f"warning: at every rate a seed fell back to the majority class ({fallen}); try lower rates.")
    elif fallen:
        print(f"left out because a seed fell back to the majority class: {fallen}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
