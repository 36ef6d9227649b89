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

from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, set_seed

from config import ConfigError, parse_args
from data_loader import DataError, load_sst2, split_holdout, tokenize
from methods import METHODS, apply_method
from resilience import (
    RUN_STATE,
    ResilientTrainer,
    RunFailed,
    RunInterrupted,
    RunStateRecorder,
    StopOnSignal,
    hint_for,
    last_complete_checkpoint,
    plan_resume,
)
from results import SCHEMA_VERSION, results_path
from utils import (
    accuracy_metrics,
    argmax_logits,
    count_parameters,
    environment,
    gather_from_ranks,
    peak_memory_mb,
    reset_peak_memory,
    write_json_atomic,
)

LABELS = {0: "negative", 1: "positive"}
# What BERT would set on its first forward; set before it, so torch.compile does not recompile on step two.
PROBLEM_TYPE = "single_label_classification"


class ModelError(RuntimeError):
    """A model that cannot be loaded. The message says how to get one."""


class ExperimentTrainer(ResilientTrainer):
    """The pipeline's Trainer (bench.py times this same class): ResilientTrainer, plus a loss fix and two
    speed hooks.

    - The loss is a mean over each batch, for every method: BERT's classification loss ignores the
      Trainer's count of labels (num_items_in_batch). Its forward takes **kwargs, though, so the Trainer
      assumes it uses the count. It then skips dividing by --gradient_accumulation_steps and multiplies
      by the number of processes: N times the gradients and the logged train and eval losses.
      Measured with 2 processes, or with 2 accumulation steps, on the tiny test model: 1.39 instead of
      ln 2 = 0.69 at the start. Telling the Trainer that the model takes no loss arguments fixes both.
      It also drops a label count per batch (a gather across processes).
    - compile_dynamic goes to torch.compile (through accelerate's dynamo plugin, which the Trainer
      builds but does not expose).
    - The Trainer estimates each step's FLOPs by re-counting the model's parameters, a walk over every
      module and parameter: about 0.5 ms of host time per step for BERT-base's structure (timed on a
      2-core CPU), which a CUDA-graph step cannot hide. The count never changes while training, so it
      is taken once per model.
    """

    _counted = (None, 0)  # (the model counted, its non-embedding parameters)

    def __init__(self, *args, compile_dynamic=None, **kwargs):
        self._compile_dynamic = compile_dynamic  # before super().__init__, which builds the accelerator
        super().__init__(*args, **kwargs)
        self.model_accepts_loss_kwargs = False  # see the class docstring: the loss is a per-batch mean

    def _build_accelerator_args(self, **kwargs):
        args = super()._build_accelerator_args(**kwargs)
        if self._compile_dynamic is not None and "dynamo_plugin" in args:
            args["dynamo_plugin"].dynamic = self._compile_dynamic
        return args

    def floating_point_ops(self, inputs):
        main_input = getattr(self.model, "main_input_name", "input_ids")
        if main_input not in inputs or not hasattr(self.model, "num_parameters"):
            return 0
        if self._counted[0] is not self.model:
            self._counted = (self.model, self.model.num_parameters(exclude_embeddings=True))
        return 6 * inputs[main_input].numel() * self._counted[1]


def load_model_and_tokenizer(name_or_path):
    looks_local = name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1  # hub ids: name or org/name
    if looks_local and not os.path.isdir(name_or_path):
        raise ModelError(f"--model_name_or_path {name_or_path} is not a folder.")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        model = AutoModelForSequenceClassification.from_pretrained(
            name_or_path,
            num_labels=2,
            id2label=LABELS,
            label2id={v: k for k, v in LABELS.items()},
            problem_type=PROBLEM_TYPE,
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
    """max_seq_length, shortened where virtual tokens or padding would push positions past the model's table."""
    positions = getattr(model.config, "max_position_embeddings", experiment.max_seq_length)
    room = positions - METHODS[experiment.method].virtual_tokens(experiment)
    if experiment.pad_to_multiple_of:  # a batch is padded up to the next multiple, which must fit too
        room -= room % experiment.pad_to_multiple_of
    return min(experiment.max_seq_length, room)


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
        compile_dynamic=experiment.torch_compile_dynamic,
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
        record.update(
            status=status,
            history=epoch_history(trainer.state.log_history),
            resumed=len(run_state["segments"]) > 1,
            segments=run_state["segments"],
            step=trainer.state.global_step,
            **extra,
        )
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
            raise RunInterrupted(
                "stopped at once; the last checkpoint is the one to resume from.", signal.SIGINT
            ) from None
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
            f"(or add --run_name {training.run_name} --resume) to continue.",
            stopper.received,
        )

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
        "train_samples_per_s": round(trainer.state.global_step * sentences_per_step(training) / train_time, 3)
        if train_time
        else None,
        "peak_memory_mb": max(memory) if memory else None,  # of training, per-epoch evaluation included
        "peak_memory_reserved_mb": max(reserved) if reserved else None,
        "peak_memory_mb_per_rank": memory_per_rank,
        "world_size": training.world_size,
        "inference_samples_per_s": final.get("eval_samples_per_second"),
    }
    record["adapter_size_mb"] = adapter_size_mb(trainer.model)
    record["predictions"] = [int(p) for p in prediction.predictions.reshape(-1)]
    record["labels"] = [int(y) for y in prediction.label_ids.reshape(-1)]
    finish("completed")
    if trainer.is_world_process_zero():
        print(summary_line(record, path))
    return record


def sentences_per_step(training) -> int:
    """Sentences behind one optimizer step: every process's batch, for every accumulation step."""
    return training.per_device_train_batch_size * training.gradient_accumulation_steps * training.world_size


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
