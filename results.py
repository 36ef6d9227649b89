"""The results files: one JSON per run, the contract that every analysis reads.

Schema version 1 (see README): schema_version, status, method, run_name, created_at,
config, params, metrics, efficiency, history, environment.
"""

import glob
import json
import os

from utils import read_json

SCHEMA_VERSION = 1
NOT_RUNS = {"summary.json"}  # what plot_results.py writes beside the runs
REQUIRED = {
    "params": ("trainable", "total", "trainable_percent"),
    "metrics": (
        "eval_accuracy",
        "eval_correct",
        "eval_total",
        "eval_loss",
        "train_loss",
        "best_eval_accuracy",
        "best_epoch",
    ),
    "efficiency": ("train_time_s", "total_time_s", "train_samples_per_s", "peak_memory_mb", "peak_memory_reserved_mb"),
}


def results_path(results_dir, run_name):
    return os.path.join(results_dir, f"{run_name}.json")


UNREADABLE = (OSError, UnicodeDecodeError, json.JSONDecodeError)


def read_record(path):
    """The parsed results file at path, or None if there is none or it cannot be read."""
    try:
        return read_json(path)
    except UNREADABLE:
        return None


def problem_with(record) -> str | None:
    """Why a parsed results file cannot be used, or None if it can."""
    if not isinstance(record, dict):
        return "not a JSON object"
    if record.get("schema_version") != SCHEMA_VERSION:
        return f"schema_version {record.get('schema_version')!r}, expected {SCHEMA_VERSION}"
    if record.get("status") != "completed":
        return f"status {record.get('status')!r}, not 'completed'"
    for key in ("method", "run_name", "history"):
        if key not in record:
            return f"missing '{key}'"
    for section, keys in REQUIRED.items():
        missing = [key for key in keys if key not in record.get(section, {})]
        if missing:
            return f"missing {section}.{missing[0]}"
    return None


def load_results(results_dir):
    """Returns (usable records, [(path, reason)] for every file that was skipped)."""
    records, skipped = [], []
    for path in sorted(glob.glob(os.path.join(results_dir, "*.json"))):
        if os.path.basename(path) in NOT_RUNS:
            continue
        try:
            record = read_json(path)
        except UNREADABLE as error:
            skipped.append((path, f"unreadable ({type(error).__name__})"))
            continue
        reason = problem_with(record)
        if reason:
            skipped.append((path, reason))
        else:
            records.append(record)
    return records, skipped
