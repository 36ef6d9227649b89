"""The one pipeline behind every train script: build the model, train, evaluate, record one JSON.

The scripts differ only in the method they pass; the method itself is data (methods.py).
A run survives interruption: it checkpoints every epoch into results/checkpoints/<run_name>/,
Ctrl-C or SIGTERM saves a checkpoint and records status "interrupted", an exception records
status "failed", and running the same --run_name again (or --resume) continues where it stopped.
"""

import os
import signal
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import datetime, timezone

import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainerCallback,
    set_seed,
)

from config import ConfigError, parse_args
from data_loader import DataError, load_sst2, split_holdout, tokenize
from methods import METHODS, apply_method
from results import SCHEMA_VERSION, read_record, results_path
from utils import (
    accuracy_metrics,
    argmax_logits,
    count_parameters,
    environment,
    gather_from_ranks,
    peak_memory_mb,
    read_json,
    reset_peak_memory,
    write_json_atomic,
)

LABELS = {0: "negative", 1: "positive"}
RUN_STATE = "run_state.json"  # beside the checkpoints: the settings and the time each part of the run spent
# Settings a resumed run must share with the run it continues.
RESUME_MUST_MATCH = ("method", "model_name_or_path", "data_dir", "max_train_samples", "max_seq_length",
                     "num_virtual_tokens", "prefix_projection", "learning_rate", "num_train_epochs",
                     "max_steps", "per_device_train_batch_size", "seed")


class ModelError(RuntimeError):
    """A model that cannot be loaded. The message says how to get one."""


class RunFailed(RuntimeError):
    """Training stopped on an error; the results file says so, and the message says what to change."""


class RunInterrupted(RuntimeError):
    """Ctrl-C or SIGTERM: a checkpoint was saved and the results file says how to resume."""

    def __init__(self, message, signal_number):
        super().__init__(message)
        self.exit_code = 128 + signal_number


class NonFiniteLoss(ArithmeticError):
    pass


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
    """One row per evaluation, with the step-weighted mean of the training losses logged since the previous one."""
    history, losses, last_step = [], [], 0
    for entry in log_history:
        if "loss" in entry:
            losses.append((entry["loss"], entry["step"] - last_step))
            last_step = entry["step"]
        if "eval_accuracy" in entry:
            steps = sum(n for _, n in losses)
            history.append(
                {
                    "epoch": round(entry["epoch"], 4),
                    "step": entry.get("step"),
                    "eval_accuracy": entry["eval_accuracy"],
                    "eval_loss": entry.get("eval_loss"),
                    "train_loss": sum(loss * n for loss, n in losses) / steps if steps else None,
                }
            )
            losses = []
    return history


def mean_train_loss(log_history):
    """The mean loss over every step trained, from the logs: the same whether or not the run was resumed."""
    weighted, steps, last_step = 0.0, 0, 0
    for entry in log_history:
        if "loss" in entry:
            weighted += entry["loss"] * (entry["step"] - last_step)
            steps, last_step = steps + entry["step"] - last_step, entry["step"]
    return weighted / steps if steps else None


class ExperimentTrainer(Trainer):
    """The Trainer, plus two things a run needs to survive.

    - It stops on a non-finite loss within CHECK_EVERY steps, without a host sync every step.
    - Its checkpoints of peft models hold every trainable tensor. peft saves a prompt-learning adapter
      as its output embeddings only, so prefix tuning's projection MLP, which trains, would be lost
      and the run could not resume.
    """

    CHECK_EVERY = 8
    TRAINABLE_STATE = "trainable_state.safetensors"

    def _trained_model(self, model=None):
        model = model if model is not None else self.model
        return getattr(model, "_orig_mod", model)  # unwrap torch.compile

    def _save(self, output_dir=None, state_dict=None):
        super()._save(output_dir, state_dict)
        from peft import PeftModel
        from safetensors.torch import save_file

        model = self._trained_model()
        if isinstance(model, PeftModel):
            trained = {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}
            save_file(trained, os.path.join(output_dir or self.args.output_dir, self.TRAINABLE_STATE))

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        from safetensors.torch import load_file

        path = os.path.join(resume_from_checkpoint, self.TRAINABLE_STATE)
        if not os.path.isfile(path):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        saved = load_file(path)
        parameters = dict(self._trained_model(model).named_parameters())
        wanted = {name for name, p in parameters.items() if p.requires_grad}
        if set(saved) != wanted:
            raise ValueError(f"{path} does not match this model's trainable parameters.")
        with torch.no_grad():
            for name, tensor in saved.items():
                parameters[name].copy_(tensor)

    def training_step(self, model, inputs, *args, **kwargs):
        loss = super().training_step(model, inputs, *args, **kwargs)
        nonfinite = ~torch.isfinite(loss.detach())
        self._nonfinite = nonfinite if getattr(self, "_nonfinite", None) is None else self._nonfinite | nonfinite
        self._unchecked = getattr(self, "_unchecked", 0) + 1
        if self._unchecked >= self.CHECK_EVERY:
            if bool(self._nonfinite):
                raise NonFiniteLoss(f"the training loss became NaN or infinite by step {self.state.global_step + 1}")
            self._nonfinite, self._unchecked = None, 0
        return loss


class StopOnSignal(TrainerCallback):
    """Turns Ctrl-C and SIGTERM into: save a checkpoint after this step, then stop. A second Ctrl-C stops at once."""

    def __init__(self):
        self.received = None
        self._previous = {}

    def _handle(self, number, frame):
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = number
        print(f"\n{signal.Signals(number).name}: saving a checkpoint after this step, then stopping "
              "(press Ctrl-C again to stop at once).", file=sys.stderr, flush=True)

    def __enter__(self):
        for number in (signal.SIGINT, signal.SIGTERM):
            self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc):
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def on_step_end(self, args, state, control, **kwargs):
        if self.received is not None:
            control.should_save = True
            control.should_training_stop = True


class RunStateRecorder(TrainerCallback):
    """At each checkpoint, records how far this part of the run got and what it spent, even if it is killed later."""

    def __init__(self, path, state, segment):
        self.path, self.state, self.segment = path, state, segment
        self.started = time.perf_counter()

    def update(self, step):
        self.segment.update(end_step=step, train_time_s=round(time.perf_counter() - self.started, 3), **peak_memory_mb())

    def on_save(self, args, state, control, **kwargs):
        self.update(state.global_step)
        if args.should_save:
            write_json_atomic(self.path, self.state)


def last_complete_checkpoint(folder):
    """The newest checkpoint whose trainer state was written (the Trainer writes it last), or None."""
    if not os.path.isdir(folder):
        return None
    candidates = []
    for name in os.listdir(folder):
        if name.startswith("checkpoint-") and name[11:].isdigit():
            if os.path.isfile(os.path.join(folder, name, "trainer_state.json")):
                candidates.append((int(name[11:]), os.path.join(folder, name)))
    return max(candidates)[1] if candidates else None


def _check_writable(results_dir):
    try:
        os.makedirs(results_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=results_dir):
            pass
    except OSError as error:
        raise ConfigError(f"--results_dir {results_dir} cannot be written ({error.strerror}).") from None


def resume_settings(experiment, training):
    settings = {**asdict(experiment), **training.to_dict()}
    return {key: settings.get(key) for key in RESUME_MUST_MATCH}


def plan_resume(experiment, training, path):
    """Returns (checkpoint or None, run state) for this run_name; refuses to touch a completed run."""
    previous = read_record(path)
    if previous is not None and previous.get("status") == "completed":
        raise ConfigError(f"{path} already holds a completed run; choose another --run_name.")
    checkpoint = last_complete_checkpoint(training.output_dir)
    state_path = os.path.join(training.output_dir, RUN_STATE)
    state = read_json(state_path) if checkpoint and os.path.isfile(state_path) else None
    if experiment.resume and checkpoint is None:
        raise ConfigError(f"--resume: no checkpoint of run '{training.run_name}' in {training.output_dir}.")
    if checkpoint is None:
        return None, {"settings": resume_settings(experiment, training), "segments": []}
    wanted = resume_settings(experiment, training)
    if state is not None:
        changed = [key for key in RESUME_MUST_MATCH if state["settings"].get(key) != wanted[key]]
        if changed:
            raise ConfigError(
                f"run '{training.run_name}' has a checkpoint made with other settings ({', '.join(changed)}); "
                "resume it with its own settings, or choose another --run_name."
            )
    return checkpoint, state or {"settings": wanted, "segments": []}


def hint_for(error) -> str:
    if isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower():
        return "the GPU ran out of memory: lower --per_device_train_batch_size or --max_seq_length, or use --recipe fast."
    if isinstance(error, NonFiniteLoss):
        return f"{error}: lower --learning_rate."
    if isinstance(error, OSError):
        return f"could not write ({error}): free disk space or choose another --results_dir."
    return f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else 'no message'}"


def run(experiment, training, recipe) -> dict:
    """Trains and evaluates one configuration, writes results/<run_name>.json and returns its content."""
    started = time.perf_counter()
    created_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    path = results_path(experiment.results_dir, training.run_name)
    _check_writable(experiment.results_dir)
    checkpoint, run_state = plan_resume(experiment, training, path)

    set_seed(training.seed)  # before loading: the new classifier head and the prefix are random
    model, tokenizer = load_model_and_tokenizer(experiment.model_name_or_path)
    model = apply_method(model, experiment.method, experiment)
    params = count_parameters(model)

    data = load_sst2(experiment.data_dir)
    train_data, eval_data = data["train"], data["validation"]
    if experiment.max_train_samples:
        train_data = train_data.select(range(min(experiment.max_train_samples, len(train_data))))
    if experiment.holdout_fraction:
        train_data, eval_data = split_holdout(train_data, experiment.holdout_fraction)
    if experiment.max_eval_samples:
        eval_data = eval_data.select(range(min(experiment.max_eval_samples, len(eval_data))))
    max_length = longest_input(model, experiment)
    train_set, train_truncated = tokenize(train_data, tokenizer, max_length, experiment.pad_to_max_length)
    eval_set, eval_truncated = tokenize(eval_data, tokenizer, max_length, experiment.pad_to_max_length)
    for split, count, total in (("train", train_truncated, len(train_set)), ("dev", eval_truncated, len(eval_set))):
        if count:
            print(f"note: {count} of {total} {split} sentences are longer than {max_length} tokens and were truncated.")

    segment = {"started_at": created_at, "start_step": 0, "end_step": 0, "train_time_s": 0.0, "outcome": "running"}
    run_state["segments"].append(segment)
    recorder = RunStateRecorder(os.path.join(training.output_dir, RUN_STATE), run_state, segment)
    stopper = StopOnSignal()
    trainer = ExperimentTrainer(
        model=model,
        args=training,
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer, pad_to_multiple_of=experiment.pad_to_multiple_of),
        compute_metrics=accuracy_metrics,
        preprocess_logits_for_metrics=argmax_logits,
        callbacks=[recorder, stopper],
    )
    if checkpoint:
        segment["start_step"] = int(os.path.basename(checkpoint).split("-")[1])
        print(f"resuming run '{training.run_name}' from {checkpoint}")

    record = {
        "schema_version": SCHEMA_VERSION,
        "status": "running",
        "method": experiment.method,
        "run_name": training.run_name,
        "created_at": run_state["segments"][0]["started_at"],
        "config": {
            **asdict(experiment),
            "recipe_settings": recipe,
            "effective_max_seq_length": max_length,
            "peft_config": _peft_config(model),
            "training_arguments": training.to_dict(),
        },
        "params": params,
        "data": {
            "eval_split": "holdout" if experiment.holdout_fraction else "dev",
            "train_sentences": len(train_set),
            "eval_sentences": len(eval_set),
            "train_truncated": train_truncated,
            "eval_truncated": eval_truncated,
        },
        "environment": environment(),
    }

    def finish(status, **extra):
        """Writes the record with what is known now; only rank 0 writes."""
        segment["outcome"] = status
        record.update(status=status, history=epoch_history(trainer.state.log_history), resumed=len(run_state["segments"]) > 1,
                      segments=run_state["segments"], step=trainer.state.global_step, **extra)
        if trainer.is_world_process_zero():
            write_json_atomic(path, record)
            write_json_atomic(recorder.path, run_state)

    reset_peak_memory()
    try:
        with stopper:
            trainer.train(resume_from_checkpoint=checkpoint)
    except (Exception, KeyboardInterrupt) as error:
        recorder.update(trainer.state.global_step)
        if isinstance(error, KeyboardInterrupt):
            finish("interrupted", checkpoint=last_complete_checkpoint(training.output_dir))
            raise RunInterrupted("stopped at once; the last checkpoint is the one to resume from.", signal.SIGINT) from None
        message = f"training failed at step {trainer.state.global_step}: {hint_for(error)}"
        finish("failed", error={"type": type(error).__name__, "message": str(error)[:2000], "hint": message})
        raise RunFailed(message) from error
    recorder.update(trainer.state.global_step)
    memory_per_rank = gather_from_ranks(peak_memory_mb()["peak_memory_mb"])  # every rank must take part

    if stopper.received is not None:
        saved = last_complete_checkpoint(training.output_dir)
        finish("interrupted", checkpoint=saved)
        raise RunInterrupted(
            f"stopped at step {trainer.state.global_step}; checkpoint {saved}. Run the same command again "
            f"(or add --run_name {training.run_name} --resume) to continue.", stopper.received)

    prediction = trainer.predict(eval_set, metric_key_prefix="eval")
    final = prediction.metrics
    history = epoch_history(trainer.state.log_history)
    best = max(history, key=lambda row: row["eval_accuracy"]) if history else None
    segments = run_state["segments"]
    memory = [s.get("peak_memory_mb") for s in segments if s.get("peak_memory_mb") is not None]
    reserved = [s.get("peak_memory_reserved_mb") for s in segments if s.get("peak_memory_reserved_mb") is not None]
    record["metrics"] = {
        "eval_accuracy": final["eval_accuracy"],
        "eval_correct": final["eval_correct"],
        "eval_total": final["eval_total"],
        "eval_loss": final["eval_loss"],
        "train_loss": mean_train_loss(trainer.state.log_history),
        "best_eval_accuracy": best["eval_accuracy"] if best else final["eval_accuracy"],
        "best_epoch": best["epoch"] if best else None,
    }
    train_time = sum(s["train_time_s"] for s in segments)
    record["efficiency"] = {
        "train_time_s": round(train_time, 3),  # every part of a resumed run, each up to where it stopped
        "eval_time_s": round(sum(e.get("eval_runtime", 0.0) for e in trainer.state.log_history), 3),
        "total_time_s": round(time.perf_counter() - started + sum(s["train_time_s"] for s in segments[:-1]), 3),
        "train_steps": trainer.state.global_step,
        "train_samples_per_s": round(trainer.state.global_step * training.per_device_train_batch_size
                                     * training.world_size / train_time, 3) if train_time else None,
        "peak_memory_mb": max(memory) if memory else None,  # of training, per-epoch evaluation included
        "peak_memory_reserved_mb": max(reserved) if reserved else None,
        "peak_memory_mb_per_rank": memory_per_rank,
        "world_size": training.world_size,
    }
    record["efficiency"]["inference_samples_per_s"] = final.get("eval_samples_per_second")
    record["adapter_size_mb"] = adapter_size_mb(trainer.model)
    record["predictions"] = [int(p) for p in prediction.predictions.reshape(-1)]
    record["labels"] = [int(y) for y in prediction.label_ids.reshape(-1)]
    finish("completed")
    if trainer.is_world_process_zero():
        print(summary_line(record, path))
    return record


def adapter_size_mb(model) -> float:
    """MB on disk of what must be kept to reuse the method: peft's adapter, or the trained tensors themselves."""
    from peft import PeftModel
    from safetensors.torch import save_file

    model = getattr(model, "_orig_mod", model)  # unwrap torch.compile
    with tempfile.TemporaryDirectory() as folder:
        if isinstance(model, PeftModel):
            model.save_pretrained(folder)
        else:
            trained = {name: p.detach().contiguous() for name, p in model.named_parameters() if p.requires_grad}
            save_file(trained, os.path.join(folder, "trained.safetensors"))
        size = sum(os.path.getsize(os.path.join(folder, name)) for name in os.listdir(folder))
    return round(size / 2**20, 3)


def _peft_config(model):
    """The peft config as the model resolved it (hidden sizes, layers), as plain JSON data."""
    configs = getattr(model, "peft_config", None)
    if not configs:
        return None
    config = next(iter(configs.values())).to_dict()
    return {key: (sorted(value) if isinstance(value, set) else value) for key, value in config.items()}


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
    except RunFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except RunInterrupted as error:
        print(f"interrupted: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("interrupted before training started; nothing to save.", file=sys.stderr)
        return 130
    return 0
