"""The one pipeline behind every train script, in the order it runs:

    plan_resume -> build_model -> prepare_data -> build_trainer -> train_resiliently -> evaluate -> save_model

The scripts differ only in the method they pass; the method itself is data (methods.py).
A run survives interruption: it checkpoints every epoch into results/checkpoints/<run_name>/,
Ctrl-C or SIGTERM saves a checkpoint and records status "interrupted", an exception records
status "failed", and running the same --run_name again (or --resume) continues where it stopped.
Once it completes, the trained model is saved for predict.py under results/models/<run_name>/, and the
checkpoints, which serve only resuming, are removed.
"""

import contextlib
import os
import shlex
import signal
import sys
import tempfile
import time
import types
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Optional

import datasets
import torch
import torch._functorch.config
import torch.fx.experimental._config
from accelerate.utils import gather_object
from datasets import Dataset
from transformers import PreTrainedModel, set_seed
from transformers.utils import logging as hf_logging

from config import (
    ConfigError,
    checkpoints_folder,
    compile_note,
    data_parallel_note,
    gpu_note,
    gpu_support,
    original_rate_note,
    parse_args,
    tuned_rate_note,
)
from data_loader import (
    OFFLINE_DATA,
    SUBSET_SEED,
    DataError,
    PaddingCollator,
    data_source,
    indices_checksum,
    load_sst2,
    nested_subset,
    split_holdout,
    tokenize,
)
from methods import MethodError, apply_method, place_prompt_tokens
from metrics import ScoredAccuracy, argmax_logits, count_parameters, peak_memory_mb, reset_peak_memory
from models import (
    ModelError,
    declare_mean_loss,
    load_model_and_tokenizer,
    longest_input,
    save_for_reuse,
    save_trained_tensors,
)
from resilience import (
    RUN_STATE,
    LogAtCheckpoints,
    ResilientTrainer,
    RunFailed,
    RunInterrupted,
    RunStateRecorder,
    StopOnSignal,
    hint_for,
    last_complete_checkpoint,
    output_that_outlives_its_reader,
    plan_resume,
    remove_checkpoints,
)
from results import SCHEMA_VERSION, portable, results_path, write_json_atomic
from utils import environment


class ModulesListedOnce:
    """model.train(), model.zero_grad() and model.parameters() over lists made once, on the model object
    the Trainer's loop calls them on at every step, until undo().

    Each of the three walks every module (231 in BERT-base): 1.3 ms of host time per step together for full
    fine-tuning and 2.5 for LoRA, on one core of our CPU, against 0.04 and 0.06 listed once
    (results/reference/module-walks-cpu/module_walks.json). A GPU step that waits on the host pays that in
    full. A model keeps its modules while it trains, so they are listed once. train(mode) does nothing when
    every module is already in that mode, and otherwise runs the model's own train(), so an evaluation that
    switched some modules to eval by any route is undone; where a module overrides train() (peft's DoRA
    clears a cache at every call), it always runs the model's own.
    """

    NAMES = ("train", "zero_grad", "parameters")
    PLAIN_TRAIN = (torch.nn.Module.train, PreTrainedModel.train)  # only change state that `training` shows

    def __init__(self, model):
        self.model = model
        modules, parameters = tuple(model.modules()), tuple(model.parameters())
        own_train, own_zero_grad, own_parameters = model.train, model.zero_grad, model.parameters
        plain = all(type(module).train in self.PLAIN_TRAIN for module in modules)

        def train(mode=True):
            if not (plain and all(module.training is mode for module in modules)):
                own_train(mode)
            return model

        def zero_grad(set_to_none=True):
            if not set_to_none:
                return own_zero_grad(set_to_none)
            for parameter in parameters:
                parameter.grad = None

        def listed_parameters(recurse=True):
            return iter(parameters) if recurse else own_parameters(recurse)

        for name, function in zip(self.NAMES, (train, zero_grad, listed_parameters)):
            object.__setattr__(model, name, function)  # an instance attribute, ahead of the class's method

    def undo(self):
        for name in self.NAMES:
            self.model.__dict__.pop(name, None)


class ExperimentTrainer(ResilientTrainer):
    """The pipeline's Trainer: ResilientTrainer, plus a FLOPs estimate that counts the parameters once; with
    `walk_modules_once` the loop's other walks over the model done once (ModulesListedOnce), and with
    `prompt_tokens_on_device` peft's virtual-token ids moved to the model's device once (place_prompt_tokens).

    The Trainer estimates each step's FLOPs by re-counting the model's parameters, a walk over every
    module and parameter whose host time a CUDA-graph step cannot hide (README, "Performance"). The count
    never changes while training. Build it with build_trainer, as the train scripts, sweep.py and bench.py do.
    """

    _counted = (None, 0)  # (the model counted, its non-embedding parameters)

    def __init__(self, *args, walk_modules_once=False, prompt_tokens_on_device=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.walk_modules_once, self.prompt_tokens_on_device = walk_modules_once, prompt_tokens_on_device
        self._listed = self._prepared_for = None

    def train(self, *args, **kwargs):
        try:
            return super().train(*args, **kwargs)
        finally:  # the model leaves training as it came: save_pretrained, predict.py and the next run see no lists
            if self._listed is not None:
                self._listed.undo()
            self._listed = self._prepared_for = None

    def training_step(self, model, inputs, *args, **kwargs):
        if model is not self._prepared_for:
            self._prepare_loop(model)
        return super().training_step(model, inputs, *args, **kwargs)

    def _prepare_loop(self, model):
        """Before a train()'s first forward: `model` is the one the loop holds (compiled or wrapped by then), and
        the model is on the device it trains on; a compiled model compiles at that forward."""
        if self.walk_modules_once:
            if self._listed is not None:
                self._listed.undo()
            self._listed = ModulesListedOnce(model)
        if self.prompt_tokens_on_device:
            place_prompt_tokens(self.model)
        self._prepared_for = model

    def floating_point_ops(self, inputs):
        main_input = getattr(self.model, "main_input_name", "input_ids")
        if main_input not in inputs or not hasattr(self.model, "num_parameters"):
            return 0
        if self._counted[0] is not self.model:
            self._counted = (self.model, self.model.num_parameters(exclude_embeddings=True))
        return 6 * inputs[main_input].numel() * self._counted[1]


def build_model(experiment, training):
    """The classifier with the method applied: (model, tokenizer)."""
    set_seed(training.seed)  # before loading: the new classifier head and the prefix are random
    offline_too = None if experiment.data_dir else OFFLINE_DATA  # SST-2 comes from the Hub too
    model, tokenizer = load_model_and_tokenizer(experiment.model_name_or_path, offline_too)
    return apply_method(model, experiment.method, experiment), tokenizer


@dataclass
class PreparedData:
    train: Dataset
    eval: Dataset
    max_length: int
    train_truncated: int
    eval_truncated: int
    subset: Optional[dict] = None  # --train_size: which sentences were drawn


def prepare_data(experiment, model, tokenizer) -> PreparedData:
    """SST-2 selected (first N; a held-out slice for sweeps; then a nested random subset for learning curves)
    and tokenized once, truncation counted."""
    data = load_sst2(experiment.data_dir)
    train_data, eval_data = data["train"], data["validation"]
    if experiment.max_train_samples:
        train_data = train_data.select(range(min(experiment.max_train_samples, len(train_data))))
    if experiment.holdout_fraction:
        train_data, eval_data = split_holdout(train_data, experiment.holdout_fraction)
    subset = None
    if experiment.train_size:
        pool = len(train_data)
        train_data, indices = nested_subset(train_data, experiment.train_size)
        subset = {"size": len(indices), "pool": pool, "seed": SUBSET_SEED, "indices_sha256": indices_checksum(indices)}
    if experiment.max_eval_samples:
        eval_data = eval_data.select(range(min(experiment.max_eval_samples, len(eval_data))))
    max_length = longest_input(model, experiment)
    train_set, train_truncated = tokenize(train_data, tokenizer, max_length, experiment.pad_to_max_length)
    eval_set, eval_truncated = tokenize(eval_data, tokenizer, max_length, experiment.pad_to_max_length)
    for split, count, total in (("train", train_truncated, len(train_set)), ("dev", eval_truncated, len(eval_set))):
        if count:
            print(f"note: {count} of {total} {split} sentences are longer than {max_length} tokens and were truncated.")
    return PreparedData(train_set, eval_set, max_length, train_truncated, eval_truncated, subset)


def build_trainer(experiment, training, model, tokenizer, train_set, eval_set=None, callbacks=()):
    """The pipeline's Trainer with the recipe's collator: what the train scripts train and bench.py times."""
    declare_mean_loss(model)
    if training.torch_compile:
        partition_for_memory(experiment.recompute_in_backward)
        if experiment.compile_layers_once:
            compile_layers_once(model)
    with _compile_dynamic(experiment.torch_compile_dynamic):
        return ExperimentTrainer(
            model=model,
            args=training,
            train_dataset=train_set,
            eval_dataset=eval_set,
            processing_class=tokenizer,
            data_collator=PaddingCollator(tokenizer, pad_to_multiple_of=experiment.pad_to_multiple_of),
            compute_metrics=ScoredAccuracy(),
            preprocess_logits_for_metrics=argmax_logits,
            callbacks=list(callbacks),
            walk_modules_once=experiment.walk_modules_once,
            prompt_tokens_on_device=experiment.prompt_tokens_on_device,
        )


def partition_for_memory(recompute):
    """How torch.compile splits a training step between the forward and the backward, for the graphs this process
    compiles next (a model compiles at its first step).

    torch keeps from the forward every value that the backward must build in memory to use, rather than recompute
    it (its min-cut partitioner's ban_recompute_materialized_backward): under autocast, that includes the bf16 copy
    of every trained weight that a matmul reads, while the optimizer holds each weight in fp32 anyway. `recompute`
    lifts that rule, so the backward casts those weights again (one more pass over them inside the step's graph:
    GPU time, which a step waiting on the host hides) and recomputes the other such values it can rebuild from
    what it keeps. On our CPU, a BERT-base step of 16 sentences of 80 tokens then kept 368 MiB beyond the
    parameters instead of 666 for full fine-tuning, 163 of them the weight copies, with every gradient bit for bit
    the same; prefix tuning, whose frozen weights are stored in bf16 already, kept 323 instead of 351, its prefix
    MLP's gradients within 0.5 % of each tensor's largest entry, bf16's rounding, and the rest bit for bit
    (results/reference/saved-activations-cpu/). One-epoch runs of MiniLM either way reached the same accuracy
    within noise, and took 9 to 10 % longer on our CPU, where a step is compute-bound
    (results/reference/recompute-minilm-4000/)."""
    torch._functorch.config.ban_recompute_materialized_backward = not recompute


def compile_layers_once(model):
    """Marks each layer of the model's stacks of identical layers (BERT's twelve encoder layers, peft's methods
    wrapped around them or not) as one of torch.compile's nested compile regions: dynamo traces the first layer
    it meets and stamps out what that compiled to for the others, in the same one graph, instead of tracing and
    compiling all twelve; each layer still draws its own dropout masks (tests/test_recipes.py). Outside
    torch.compile the mark does nothing, so evaluation and predict.py run as before.

    A model's first compiled step is nearly all compiling, paid in full on a freshly lent GPU (87 s for BERT-base on
    the H100, 155 for prefix tuning: results/gpu_report.json), and the original's protocol counts it. On our CPU,
    BERT-base's first step took 37.2 s instead of 63.7 for full fine-tuning and 48.6 instead of 59.0 for prefix
    tuning (results/reference/compile-time-cpu/). Under symbolic shapes it needs Python floats fixed, as
    _compile_dynamic fixes them: left symbolic, dynamo failed inside the region (KeyError, torch 2.13), as it did
    for a toy layer whose input had a symbolic size that the layer's weights fix. Returns how many layers it
    marked."""
    marked = {}  # one marked function per layer class: the regions dynamo may reuse are those of one function
    layers = [
        layer
        for stack in model.modules()
        if isinstance(stack, torch.nn.ModuleList) and len(stack) > 1 and len({type(layer) for layer in stack}) == 1
        for layer in stack
    ]
    for layer in layers:
        region = marked.setdefault(type(layer), torch.compiler.nested_compile_region(type(layer).forward))
        layer.forward = types.MethodType(region, layer)  # this instance's, so other models stay as they are
    return len(layers)


@contextlib.contextmanager
def _compile_dynamic(dynamic):
    """torch.compile's `dynamic`, through accelerate's documented variable: the Trainer builds accelerate's
    dynamo plugin, which reads it, while it is constructed, and offers no argument for it."""
    name, before = "ACCELERATE_DYNAMO_USE_DYNAMIC", os.environ.get("ACCELERATE_DYNAMO_USE_DYNAMIC")
    if dynamic is not None:
        os.environ[name] = str(bool(dynamic))
    if dynamic:
        # torch's duck sizing gives equal sizes one symbol: a first batch of 16 sentences padded to 16 tokens
        # compiled a graph for length == batch, and the next length compiled everything again (twice the
        # compile time; tests/test_recipes.py). The graph compiles at the first step, after this context
        # has closed, so the settings stay for the process.
        torch.fx.experimental._config.use_duck_shape = False
        # Symbolic shapes also make Python floats symbolic. BERT's are constants of its config; autograd's
        # tracing found it could not keep one symbolic, and dynamo traced the whole model again with the floats
        # fixed, to the same graph (inductor's cache takes one for the other). Fixed from the start, BERT-base
        # compiled in 10 s less on our CPU (results/reference/compile-time-cpu/compile_time.json).
        torch._dynamo.config.specialize_float = True
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


class ResultsFile:
    """The run's JSON as it fills: written, with what is known then, whenever the run's status changes."""

    def __init__(self, path, experiment, training, recipe, model, data: PreparedData, run_state, command):
        self.path, self.run_state = path, run_state
        self.segment = {"started_at": _now(), "start_step": 0, "end_step": 0, "train_time_s": 0.0, "outcome": "running"}
        run_state["segments"].append(self.segment)
        self.state_recorder = RunStateRecorder(os.path.join(training.output_dir, RUN_STATE), run_state, self.segment)
        model_name = model_name_of(experiment)
        machine_paths = {experiment.model_name_or_path: model_name}  # committed results name no local folder
        self.record = {
            "schema_version": SCHEMA_VERSION,
            "status": "running",
            "method": experiment.method,
            "run_name": training.run_name,
            "created_at": run_state["segments"][0]["started_at"],
            "command": shlex.join(portable(command, machine_paths)),
            "model": {"name": model_name, "model_type": getattr(model.config, "model_type", None)},
            "config": portable(
                {
                    **asdict(experiment),
                    "recipe_settings": recipe,
                    "effective_max_seq_length": data.max_length,
                    "peft_config": _peft_config(model),
                    "training_arguments": training.to_dict(),
                },
                machine_paths,
            ),
            "params": count_parameters(model),
            "data": {
                **data_source(experiment.data_dir),
                "eval_split": "holdout" if experiment.holdout_fraction else "dev",
                "train_sentences": len(data.train),
                "eval_sentences": len(data.eval),
                "train_truncated": data.train_truncated,
                "eval_truncated": data.eval_truncated,
                "subset": data.subset,
            },
            "environment": environment(),
        }

    def write(self, trainer, status, **extra):
        """Records the status and the training so far; only rank 0 writes."""
        self.segment["outcome"] = status
        self.record.update(
            status=status,
            history=epoch_history(trainer.state.log_history),
            resumed=len(self.run_state["segments"]) > 1,
            segments=self.run_state["segments"],
            step=trainer.state.global_step,
            **extra,
        )
        if trainer.is_world_process_zero():
            write_json_atomic(self.path, self.record)
            write_json_atomic(self.state_recorder.path, self.run_state)


def model_name_of(experiment) -> str:
    if experiment.model_name:
        return experiment.model_name
    path = experiment.model_name_or_path
    return os.path.basename(os.path.normpath(path)) if os.path.isdir(path) else path


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _check_writable(results_dir):
    try:
        os.makedirs(results_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=results_dir):
            pass
    except OSError as error:
        raise ConfigError(f"--results_dir {results_dir} cannot be written ({error.strerror}).") from None


def run(experiment, training, recipe, command=()) -> dict:
    """Trains and evaluates one configuration, writes results/<run_name>.json and returns its content."""
    started = time.perf_counter()
    if training.disable_tqdm:  # the Trainer's bars only, unless transformers and datasets are told too
        hf_logging.disable_progress_bar()
        datasets.disable_progress_bars()
    for note in (
        original_rate_note(experiment, training),
        tuned_rate_note(experiment, training),
        gpu_note(None if training.use_cpu else gpu_support(), experiment, training),
        compile_note(training),
        data_parallel_note(training),
    ):
        if note:
            print(note)
    path = results_path(experiment.results_dir, training.run_name)
    _check_writable(experiment.results_dir)
    checkpoint, run_state = plan_resume(experiment, training, path)
    model, tokenizer = build_model(experiment, training)
    data = prepare_data(experiment, model, tokenizer)
    results = ResultsFile(path, experiment, training, recipe, model, data, run_state, command)
    stopper = StopOnSignal()
    trainer = build_trainer(
        experiment,
        training,
        model,
        tokenizer,
        data.train,
        data.eval,
        callbacks=[results.state_recorder, stopper, LogAtCheckpoints()],
    )
    memory_per_rank = train_resiliently(trainer, results, stopper, checkpoint)
    evaluate(trainer, results, data.eval, memory_per_rank, started)
    results.record["model_dir"] = save_model(trainer, experiment, data.max_length)
    results.write(trainer, "completed")
    if trainer.is_world_process_zero():
        if not experiment.keep_checkpoints:
            # they serve only resuming, and the run is complete
            remove_checkpoints(training.output_dir, parent=checkpoints_folder(experiment.results_dir))
        if results.record["model_dir"]:
            model = shlex.quote(results.record["model_dir"])
            print(f'to classify with it: python predict.py --model {model} "a sentence"')
        print(summary_line(results.record, path))
    return results.record


def train_resiliently(trainer, results: ResultsFile, stopper: StopOnSignal, checkpoint) -> list:
    """Trains from the checkpoint, if any. A failure or an interruption is recorded, then raised.

    Returns each rank's peak memory.
    """
    if checkpoint:
        results.segment["start_step"] = int(os.path.basename(checkpoint).split("-")[1])
        print(f"resuming run '{trainer.args.run_name}' from {checkpoint}")
    reset_peak_memory()
    try:
        with stopper:
            trainer.train(resume_from_checkpoint=checkpoint)
    except (Exception, KeyboardInterrupt) as error:
        results.state_recorder.update(trainer.state.global_step)
        if isinstance(error, KeyboardInterrupt):  # a second Ctrl-C
            results.write(trainer, "interrupted", checkpoint=last_complete_checkpoint(trainer.args.output_dir))
            raise RunInterrupted(
                "stopped at once; the last checkpoint is the one to resume from.", signal.SIGINT
            ) from None
        message = f"training failed at step {trainer.state.global_step}: {hint_for(error)}"
        results.write(
            trainer, "failed", error={"type": type(error).__name__, "message": str(error)[:2000], "hint": message}
        )
        raise RunFailed(message) from error
    results.state_recorder.update(trainer.state.global_step)
    memory_per_rank = gather_object([peak_memory_mb()["peak_memory_mb"]])  # every rank must take part

    if stopper.received is not None:
        saved = last_complete_checkpoint(trainer.args.output_dir)
        results.write(trainer, "interrupted", checkpoint=saved)
        raise RunInterrupted(
            f"stopped at step {trainer.state.global_step}; checkpoint {saved}. Run the same command again "
            f"(or add --run_name {trainer.args.run_name} --resume) to continue.",
            stopper.received,
        )
    return memory_per_rank


def evaluate(trainer, results: ResultsFile, eval_set, memory_per_rank, started):
    """Puts the trained model's dev metrics and predictions (final_evaluation), and the run's costs, into the
    record."""
    training, record = trainer.args, results.record
    final, predictions, labels = final_evaluation(trainer, eval_set)
    history = epoch_history(trainer.state.log_history)
    best = max(history, key=lambda row: row["eval_accuracy"]) if history else None
    segments = results.run_state["segments"]
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
    record["predictions"] = [int(p) for p in predictions.reshape(-1)]
    record["labels"] = [int(y) for y in labels.reshape(-1)]


def final_evaluation(trainer, eval_set):
    """(metrics, predictions, labels) of the model the run ends with, on the dev set.

    When this process evaluated at the last step, that evaluation scored this very model, and its results are
    taken as they are: evaluating again would only repeat it (42 of the 300 s that the README's short CPU run of
    BERT-base took, when it did: git show d07f005:results/reference/cpu-try-bert-base/full.json). Otherwise
    (no evaluation at the last step, a run resumed from its last checkpoint, or the best checkpoint loaded at the
    end) the dev set is evaluated now."""
    scored = trainer.compute_metrics.last
    evaluations = [row for row in trainer.state.log_history if "eval_accuracy" in row]
    if (
        scored is not None
        and evaluations
        and evaluations[-1]["step"] == trainer.state.global_step
        and not trainer.args.load_best_model_at_end
    ):
        return evaluations[-1], scored.predictions, scored.label_ids
    prediction = trainer.predict(eval_set, metric_key_prefix="eval")
    return prediction.metrics, prediction.predictions, prediction.label_ids


def save_model(trainer, experiment, max_length):
    """Saves what predict.py needs into RESULTS_DIR/models/<run_name>/ (--save_model); returns the folder."""
    if not experiment.save_model:
        return None
    folder = os.path.join(experiment.results_dir, "models", trainer.args.run_name)
    if trainer.is_world_process_zero():
        info = {
            "run_name": trainer.args.run_name,
            "method": experiment.method,
            "max_length": max_length,
            "base_model": experiment.model_name_or_path,  # for a method that adds modules, to load them onto
            "settings": {"adapter_size": experiment.adapter_size},
        }
        save_for_reuse(trainer.model, trainer.processing_class, folder, info)
    return folder


def _loss_steps(log_history):
    """(entry, steps its training loss covers) for each entry: a logged loss is the mean since the previous one."""
    last_step = 0
    for entry in log_history:
        steps = 0
        if "loss" in entry:
            steps, last_step = entry["step"] - last_step, entry["step"]
        yield entry, steps


def _weighted_mean(losses):
    steps = sum(n for _, n in losses)
    return sum(loss * n for loss, n in losses) / steps if steps else None


def epoch_history(log_history):
    """One row per evaluation, with the step-weighted mean of the training losses logged since the previous one."""
    history, losses = [], []
    for entry, steps in _loss_steps(log_history):
        if "loss" in entry:
            losses.append((entry["loss"], steps))
        if "eval_accuracy" in entry:
            history.append(
                {
                    "epoch": round(entry["epoch"], 4),
                    "step": entry.get("step"),
                    "eval_accuracy": entry["eval_accuracy"],
                    "eval_loss": entry.get("eval_loss"),
                    "train_loss": _weighted_mean(losses),
                }
            )
            losses = []
    return history


def mean_train_loss(log_history):
    """The mean loss over every step trained, from the logs: the same whether or not the run was resumed."""
    return _weighted_mean([(entry["loss"], steps) for entry, steps in _loss_steps(log_history) if "loss" in entry])


def sentences_per_step(training) -> int:
    """Sentences behind one optimizer step: every process's batch, for every accumulation step."""
    return training.per_device_train_batch_size * training.gradient_accumulation_steps * training.world_size


def adapter_size_mb(model) -> float:
    """MB on disk of what must be kept to reuse the method: peft's adapter, or the trained tensors themselves."""
    from peft import PeftModel

    model = getattr(model, "_orig_mod", model)  # unwrap torch.compile
    with tempfile.TemporaryDirectory() as folder:
        if isinstance(model, PeftModel):
            model.save_pretrained(folder)
        else:
            save_trained_tensors(model, os.path.join(folder, "trained.safetensors"))
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
    """The run's outcome in one line: the last line a run prints, which compare.py shows for each of its runs."""
    metrics, efficiency = record["metrics"], record["efficiency"]
    memory = efficiency["peak_memory_mb"]
    return (
        f"{record['run_name']}: accuracy {metrics['eval_accuracy']:.2%} "
        f"({metrics['eval_correct']}/{metrics['eval_total']}), train loss {metrics['train_loss']:.4f}, "
        f"training {efficiency['train_time_s']:.1f} s, peak GPU memory "
        f"{'n/a (no CUDA device)' if memory is None else f'{memory:.0f} MB'}, "
        f"{record['params']['trainable']:,} trainable parameters -> {path}"
    )


SCRIPTS = {"full": "train_finetune.py", "prefix": "train_prefix.py"}  # the others run through train_peft.py


def command_line(argv, method=None) -> list[str]:
    """The command that runs this configuration again, word by word."""
    return ["python", SCRIPTS.get(method, "train_peft.py"), *argv]


def main(argv=None, method=None) -> int:
    """Runs one experiment from command-line flags; returns the process exit code."""
    with output_that_outlives_its_reader():
        try:
            experiment, training, recipe = parse_args(argv, method)
            run(experiment, training, recipe, command_line(sys.argv[1:] if argv is None else argv, method))
        except (ConfigError, DataError, ModelError, MethodError) as error:
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
