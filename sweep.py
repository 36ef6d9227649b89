"""Choose a method's learning rate on held-out training sentences, never on dev.

    python sweep.py --method lora --grid 1e-4,5e-4,1e-3 [any train flag, e.g. --max_train_samples 4000]

Each rate is one run of the shared pipeline that trains on the training sentences minus a stratified
5 % slice (fixed seed) and is scored on that slice. Every trial's results file goes under
results/sweeps/<method>/, with a summary sweep-<UTC time>.json naming the chosen rate: the highest
held-out accuracy, ties broken by the lower held-out loss.
"""

import argparse
import math
import os
import sys
from datetime import datetime, timezone

from config import ConfigError
from experiment import main as run_experiment
from methods import METHODS
from results import read_record
from utils import write_json_atomic


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--method", required=True, choices=list(METHODS), help="the method to tune")
    parser.add_argument("--grid", required=True, help="comma-separated learning rates, e.g. 1e-4,5e-4,1e-3")
    parser.add_argument("--holdout_fraction", type=float, default=0.05, help="share of training sentences held out")
    parser.add_argument("--results_dir", default="results", help="trials go to RESULTS_DIR/sweeps/<method>/")
    args, train_flags = parser.parse_known_args(argv)
    try:
        grid = [float(value) for value in args.grid.split(",")]
    except ValueError:
        raise ConfigError(f"--grid {args.grid!r} must be comma-separated numbers.") from None
    if not grid or not all(rate > 0 and math.isfinite(rate) for rate in grid):
        raise ConfigError("--grid needs positive learning rates.")
    for flag in ("--learning_rate", "--results_dir", "--run_name", "--method", "--holdout_fraction"):
        if any(item == flag or item.startswith(flag + "=") for item in train_flags):
            raise ConfigError(f"sweep.py sets {flag} itself.")
    return args, grid, train_flags


def main(argv=None) -> int:
    try:
        args, grid, train_flags = parse(sys.argv[1:] if argv is None else argv)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    folder = os.path.join(args.results_dir, "sweeps", args.method)
    stamp = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"
    trials = []
    for rate in grid:
        run_name = f"{args.method}-lr{rate:g}-{stamp}"
        code = run_experiment(
            [
                "--method",
                args.method,
                "--learning_rate",
                str(rate),
                "--results_dir",
                folder,
                "--run_name",
                run_name,
                "--holdout_fraction",
                str(args.holdout_fraction),
                *train_flags,
            ]
        )
        record = read_record(os.path.join(folder, f"{run_name}.json"))
        if code == 2:
            return 2  # the flags are wrong for every rate alike
        trial = {"learning_rate": rate, "run_name": run_name, "status": record.get("status") if record else "failed"}
        if trial["status"] == "completed":
            trial.update(
                holdout_accuracy=record["metrics"]["eval_accuracy"],
                holdout_loss=record["metrics"]["eval_loss"],
                train_loss=record["metrics"]["train_loss"],
            )
        trials.append(trial)
        print(f"sweep {args.method}: lr {rate:g} -> {trial.get('holdout_accuracy', trial['status'])}", flush=True)

    scored = [t for t in trials if t["status"] == "completed"]
    if not scored:
        print(f"error: every trial of the sweep failed; see {folder}.", file=sys.stderr)
        return 1
    best = max(scored, key=lambda t: (t["holdout_accuracy"], -t["holdout_loss"]))
    summary = {
        "schema_version": 1,
        "kind": "sweep",
        "method": args.method,
        "grid": grid,
        "holdout_fraction": args.holdout_fraction,
        "train_flags": train_flags,
        "trials": trials,
        "chosen_learning_rate": best["learning_rate"],
    }
    path = os.path.join(folder, f"sweep-{stamp}.json")
    write_json_atomic(path, summary)
    print(
        f"chosen for {args.method}: {best['learning_rate']:g} "
        f"(held-out accuracy {best['holdout_accuracy']:.2%}) -> {path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
