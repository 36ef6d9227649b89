"""The results files: one JSON per run, the contract that every analysis reads, and how files are written.

Schema version 1 (see README): schema_version, status, method, run_name, created_at,
config, params, metrics, efficiency, history, environment.
"""

import glob
import json
import math
import os
import shlex
import tempfile
from datetime import datetime, timezone

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
UNREADABLE = (OSError, UnicodeDecodeError, json.JSONDecodeError)


def utc_stamp() -> str:
    """The time in file names: sortable, and to the microsecond, so runs started together differ."""
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S%fZ}"


def portable(value, names: dict):
    """The value with no absolute path of this machine in it: a path in `names` becomes its name there (a local
    model folder becomes the model's name), any other absolute path its last component."""
    if isinstance(value, dict):
        return {key: portable(item, names) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable(item, names) for item in value]
    if isinstance(value, str) and value in names:
        return names[value]
    if isinstance(value, str) and os.path.isabs(value):
        return os.path.basename(os.path.normpath(value))
    return value


def without_machine_paths(words):
    """Command-line words as results files record them: the model folder as its --model_name, no absolute path."""
    value = dict(zip(words, words[1:]))
    names = (
        {value["--model_name_or_path"]: value["--model_name"]}
        if {"--model_name_or_path", "--model_name"} <= set(value)
        else {}
    )
    return portable(words, names)


def write_measurements(path, kind, script, argv, model, rows, environment, **extra):
    """A tool's measurements as committed under results/reference/: "kind" keeps them out of the run
    summaries; the command that made them, without machine paths; the model by name; one row each."""
    record = {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "created_at": utc_stamp(),
        "command": shlex.join(["python", script, *without_machine_paths(argv)]),
        "model": model,
        **extra,
        "environment": environment,
        "rows": rows,
    }
    write_json_atomic(path, record)
    print(f"-> {path}")


def measured_with(report, row) -> dict:
    """The card, versions and commit that measured a row of gpu_report.py's report: those of the part that wrote
    it (its "part"), which may differ from the report's latest ("environment")."""
    return report.get("environments", {}).get(row.get("part")) or report["environment"]


def flag_value(words, flag):
    """The value given to flag among command-line words, as `--flag VALUE` or `--flag=VALUE`; None if absent."""
    for word, following in zip(words, [*words[1:], None]):
        if word == flag:
            return following
        if word.startswith(flag + "="):
            return word.split("=", 1)[1]
    return None


def without_flags(words, *flags):
    """Command-line words less the given flags and their values (`--flag VALUE` or `--flag=VALUE`)."""
    kept, skip = [], False
    for word in words:
        if skip:
            skip = False
        elif word in flags:
            skip = True
        elif word.split("=", 1)[0] not in flags:
            kept.append(word)
    return kept


def earlier_run(folder, argv, environment):
    """The run in folder that argv (a train script's flags) would make again, else None: same recorded command but
    for --run_name, same versions, device and threads (they change the rounding, and with it the result).

    A completed one is preferred, so a grid run again takes it as it is; else an interrupted one, which its
    --run_name resumes from its checkpoint.
    """

    wanted = without_flags(without_machine_paths(argv), "--run_name")
    here = {k: v for k, v in environment.items() if k != "git_commit"}
    found = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
        record = read_record(path)
        if not isinstance(record, dict) or "command" not in record or "kind" in record:
            continue
        ran = {k: v for k, v in record.get("environment", {}).items() if k != "git_commit"}
        if without_flags(shlex.split(record["command"])[2:], "--run_name") == wanted and ran == here:
            found.setdefault(record.get("status"), record)
    return found.get("completed") or found.get("interrupted")


def results_path(results_dir, run_name):
    return os.path.join(results_dir, f"{run_name}.json")


def write_json_atomic(path, data, overwrite=True):
    """Writes a whole file or nothing: a crash mid-write leaves no half file behind. NaN and infinity become null.

    With overwrite=False an existing file is never replaced (FileExistsError), even by a racing process.
    """
    data = _finite(data)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(handle, "w") as file:
            json.dump(data, file, indent=2, allow_nan=False)
            file.write("\n")
            file.flush()
            os.fsync(file.fileno())
        if overwrite:
            os.replace(temporary, path)
        else:
            os.link(temporary, path)  # fails if the path exists, atomically
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def read_json(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _finite(value):
    """JSON has no NaN or infinity: such numbers (a diverged loss, say) are written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


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
        if isinstance(record, dict) and "kind" in record:
            continue  # a report beside the runs (a sweep's choice, bench.py, gpu_report.py), not a run
        reason = problem_with(record)
        if reason:
            skipped.append((path, reason))
        else:
            records.append(record)
    return records, skipped
