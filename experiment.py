"""The one pipeline behind every train script: build the model, train, evaluate, record one JSON.

The scripts differ only in the method they pass; the method itself is data (methods.py).
"""

import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import datetime, timezone

from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    set_seed,
)

from config import ConfigError, parse_args
from data_loader import DataError, load_sst2, tokenize
from methods import METHODS, apply_method, peft_config_dict
from results import SCHEMA_VERSION, results_path
from utils import (
    accuracy_metrics,
    argmax_logits,
    count_parameters,
    environment,
    peak_memory_mb,
    reset_peak_memory,
    write_json_atomic,
)

LABELS = {0: "negative", 1: "positive"}


class ModelError(RuntimeError):
    """A model that cannot be loaded. The message says how to get one."""


def load_model_and_tokenizer(name_or_path):
    looks_local = name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1  # hub ids: name or org/name
    if looks_local and not os.path.isdir(name_or_path):
        raise ModelError(f"--model_name_or_path {name_or_path} is not a folder.")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        model = AutoModelForSequenceClassification.from_pretrained(
            name_or_path, num_labels=2, id2label=LABELS, label2id={v: k for k, v in LABELS.items()}
        )
    except (OSError, ValueError) as error:
        if os.path.isdir(name_or_path):
            first_line = str(error).strip().splitlines()[0]
            raise ModelError(f"{name_or_path} could not be loaded as a model and tokenizer: {first_line}") from None
        raise ModelError(
            f"could not fetch the model '{name_or_path}' from the Hugging Face Hub ({type(error).__name__}); "
            "to run offline, pass a local folder with config.json, weights and tokenizer files as "
            "--model_name_or_path DIR."
        ) from None
    return model, tokenizer


def longest_input(model, experiment) -> int:
    """max_seq_length, shortened where virtual tokens would push positions past the model's table."""
    positions = getattr(model.config, "max_position_embeddings", experiment.max_seq_length)
    return min(experiment.max_seq_length, positions - METHODS[experiment.method].virtual_tokens(experiment))


def epoch_history(log_history):
    """One row per evaluation, with the mean of the training losses logged since the previous one."""
    history, losses = [], []
    for entry in log_history:
        if "loss" in entry:
            losses.append(entry["loss"])
        if "eval_accuracy" in entry:
            history.append(
                {
                    "epoch": round(entry["epoch"], 4),
                    "step": entry.get("step"),
                    "eval_accuracy": entry["eval_accuracy"],
                    "eval_loss": entry.get("eval_loss"),
                    "train_loss": statistics.fmean(losses) if losses else None,
                }
            )
            losses = []
    return history


def _check_writable(results_dir):
    try:
        os.makedirs(results_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=results_dir):
            pass
    except OSError as error:
        raise ConfigError(f"--results_dir {results_dir} cannot be written ({error.strerror}).") from None


def run(experiment, training, recipe) -> dict:
    """Trains and evaluates one configuration, writes results/<run_name>.json and returns its content."""
    started = time.perf_counter()
    created_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    path = results_path(experiment.results_dir, training.run_name)
    _check_writable(experiment.results_dir)
    if os.path.exists(path):
        raise ConfigError(f"{path} already holds an earlier run; choose another --run_name.")

    set_seed(training.seed)  # before loading: the new classifier head and the prefix are random
    model, tokenizer = load_model_and_tokenizer(experiment.model_name_or_path)
    model = apply_method(model, experiment.method, experiment)
    params = count_parameters(model)

    data = load_sst2(experiment.data_dir)
    train_data, eval_data = data["train"], data["validation"]
    if experiment.max_train_samples:
        train_data = train_data.select(range(min(experiment.max_train_samples, len(train_data))))
    if experiment.max_eval_samples:
        eval_data = eval_data.select(range(min(experiment.max_eval_samples, len(eval_data))))
    max_length = longest_input(model, experiment)
    train_set, train_truncated = tokenize(train_data, tokenizer, max_length, experiment.pad_to_max_length)
    eval_set, eval_truncated = tokenize(eval_data, tokenizer, max_length, experiment.pad_to_max_length)
    for split, count, total in (("train", train_truncated, len(train_set)), ("dev", eval_truncated, len(eval_set))):
        if count:
            print(f"note: {count} of {total} {split} sentences are longer than {max_length} tokens and were truncated.")

    trainer = Trainer(
        model=model,
        args=training,
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer, pad_to_multiple_of=experiment.pad_to_multiple_of),
        compute_metrics=accuracy_metrics,
        preprocess_logits_for_metrics=argmax_logits,
    )
    reset_peak_memory()
    train_started = time.perf_counter()
    train_output = trainer.train()
    train_time = time.perf_counter() - train_started
    memory = peak_memory_mb()  # of training, per-epoch evaluation included

    prediction = trainer.predict(eval_set, metric_key_prefix="eval")
    final = prediction.metrics
    history = epoch_history(trainer.state.log_history)
    best = max(history, key=lambda row: row["eval_accuracy"]) if history else None
    record = {
        "schema_version": SCHEMA_VERSION,
        "status": "completed",
        "method": experiment.method,
        "run_name": training.run_name,
        "created_at": created_at,
        "config": {
            **asdict(experiment),
            "recipe_settings": recipe,
            "effective_max_seq_length": max_length,
            "peft_config": peft_config_dict(experiment.method, experiment),
            "training_arguments": training.to_dict(),
        },
        "params": params,
        "metrics": {
            "eval_accuracy": final["eval_accuracy"],
            "eval_correct": final["eval_correct"],
            "eval_total": final["eval_total"],
            "eval_loss": final["eval_loss"],
            "train_loss": train_output.training_loss,
            "best_eval_accuracy": best["eval_accuracy"] if best else final["eval_accuracy"],
            "best_epoch": best["epoch"] if best else None,
        },
        "efficiency": {
            "train_time_s": round(train_time, 3),
            "eval_time_s": round(sum(e.get("eval_runtime", 0.0) for e in trainer.state.log_history), 3),
            "total_time_s": round(time.perf_counter() - started, 3),
            "train_steps": trainer.state.global_step,
            "train_samples_per_s": train_output.metrics.get("train_samples_per_second"),
            **memory,
        },
        "data": {
            "train_sentences": len(train_set),
            "eval_sentences": len(eval_set),
            "train_truncated": train_truncated,
            "eval_truncated": eval_truncated,
        },
        "history": history,
        "environment": environment(),
    }
    if trainer.is_world_process_zero():
        write_json_atomic(path, record, overwrite=False)
        print(summary_line(record, path))
    return record


def summary_line(record, path) -> str:
    metrics, efficiency = record["metrics"], record["efficiency"]
    memory = efficiency["peak_memory_mb"]
    return (
        f"{record['run_name']}: accuracy {metrics['eval_accuracy']:.2%} "
        f"({metrics['eval_correct']}/{metrics['eval_total']}), train loss {metrics['train_loss']:.4f}, "
        f"training {efficiency['train_time_s']:.1f} s, peak GPU memory "
        f"{'n/a (CPU)' if memory is None else f'{memory:.0f} MB'}, "
        f"{record['params']['trainable']:,} trainable parameters -> {path}"
    )


def main(argv=None, method=None) -> int:
    """Runs one experiment from command-line flags; returns the process exit code."""
    try:
        experiment, training, recipe = parse_args(argv, method)
        run(experiment, training, recipe)
    except (ConfigError, DataError, ModelError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
