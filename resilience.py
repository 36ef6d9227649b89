"""What lets a run survive: checkpoints that resume exactly, Ctrl-C and SIGTERM, failures and NaN losses.

The pipeline (experiment.py) uses these; each is a Trainer hook (a subclass method or a callback),
so the Trainer stays the engine.
"""

import contextlib
import os
import shutil
import signal
import sys
import time
from dataclasses import asdict

import torch
from transformers import Trainer, TrainerCallback

from config import ConfigError
from metrics import peak_memory_mb
from results import read_json, read_record, write_json_atomic

RUN_STATE = "run_state.json"  # beside the checkpoints: the settings and the time each part of the run spent
# Settings a resumed run must share with the run it continues.
RESUME_MUST_MATCH = (
    "method",
    "model_name_or_path",
    "data_dir",
    "max_train_samples",
    "max_seq_length",
    "num_virtual_tokens",
    "prefix_projection",
    "learning_rate",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "seed",
)


class RunFailed(RuntimeError):
    """Training stopped on an error; the results file says so, and the message says what to change."""


class RunInterrupted(RuntimeError):
    """Ctrl-C or SIGTERM: a checkpoint was saved and the results file says how to resume."""

    def __init__(self, message, signal_number):
        super().__init__(message)
        self.exit_code = 128 + signal_number


class NonFiniteLoss(ArithmeticError):
    pass


class CompletePeftCheckpoints(Trainer):
    """Checkpoints of peft models that hold every trainable tensor: the one place we override private hooks.

    peft saves a prompt-learning adapter as its output embeddings only, so prefix tuning's projection MLP,
    which trains, would be lost and the run could not resume. The Trainer offers no public hook for what a
    checkpoint holds. tests/test_resilience.py checks that peft still drops the MLP (then this is needed), and
    tests/test_resume.py that a resumed run ends where an uninterrupted one does.
    """

    TRAINABLE_STATE = "trainable_state.safetensors"

    def _trained_model(self, model=None):
        model = model if model is not None else self.model
        return getattr(model, "_orig_mod", model)  # unwrap torch.compile

    def _save(self, output_dir=None, state_dict=None):
        super()._save(output_dir, state_dict)
        if not self.args.should_save:  # the Trainer calls _save on every rank; two writers race on one file
            return
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


class ResilientTrainer(CompletePeftCheckpoints):
    """The Trainer, plus what a run needs to survive: complete checkpoints (above), and a stop on a
    non-finite loss within CHECK_EVERY steps, without a host sync every step."""

    CHECK_EVERY = 8

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._nonfinite, self._unchecked = None, 0  # losses not yet checked, kept on the device

    def training_step(self, model, inputs, *args, **kwargs):
        loss = super().training_step(model, inputs, *args, **kwargs)
        nonfinite = ~torch.isfinite(loss.detach())
        self._nonfinite = nonfinite if self._nonfinite is None else self._nonfinite | nonfinite
        self._unchecked += 1
        if self._unchecked >= self.CHECK_EVERY:
            if bool(self._nonfinite):
                raise NonFiniteLoss(f"the training loss became NaN or infinite by step {self.state.global_step + 1}")
            self._nonfinite, self._unchecked = None, 0
        return loss


class CatchesStopSignals:
    """Inside a `with` block, Ctrl-C and SIGTERM go to self._handle; the previous handlers come back after it."""

    def __enter__(self):
        self._previous = {number: signal.signal(number, self._handle) for number in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc):
        for number, handler in self._previous.items():
            signal.signal(number, handler)


class StopOnSignal(CatchesStopSignals, TrainerCallback):
    """Turns Ctrl-C and SIGTERM into: save a checkpoint after this step, then stop. A second Ctrl-C stops at once."""

    def __init__(self):
        self.received = None

    def _handle(self, number, frame):
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = number
        print(
            f"\n{signal.Signals(number).name}: saving a checkpoint after this step, then stopping "
            "(press Ctrl-C again to stop at once).",
            file=sys.stderr,
            flush=True,
        )

    def on_step_end(self, args, state, control, **kwargs):
        if self.received is not None:
            control.should_save = True
            control.should_training_stop = True


class _OutlivesItsReader:
    """A text stream that, once nobody reads it (BrokenPipeError), sends its file descriptor to /dev/null."""

    def __init__(self, stream):
        self._stream = stream

    def _retry(self, name, *args):
        try:
            return getattr(self._stream, name)(*args)
        except BrokenPipeError:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())  # the descriptor, so that what is still buffered flushes too
            os.close(devnull)
            return getattr(self._stream, name)(*args)

    def write(self, text):
        return self._retry("write", text)

    def flush(self):
        return self._retry("flush")

    def __getattr__(self, name):
        return getattr(self._stream, name)


@contextlib.contextmanager
def output_that_outlives_its_reader():
    """Lets a run go on when its output's reader is gone.

    `python train_prefix.py | tee log`, then Ctrl-C: the shell's SIGINT ends tee too, and every later print
    or progress bar raises BrokenPipeError. Without this the run fails on the first of them, before it saves
    the checkpoint it was stopping for (tests/test_resume.py).
    """
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = (_OutlivesItsReader(stream) for stream in streams)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = streams


class LogAtCheckpoints(TrainerCallback):
    """Logs the training loss whenever a checkpoint is saved, so that the checkpoint's log holds every step's loss.

    The Trainer keeps the loss since its last log in memory only: a run resumed from a mid-epoch checkpoint
    would lose the loss of the steps before it, and record a different train loss for that epoch
    (tests/test_resume.py). It must come after any callback that asks for a save (StopOnSignal).
    """

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_save:
            control.should_log = True


class RunStateRecorder(TrainerCallback):
    """At each checkpoint, records how far this part of the run got and what it spent, even if it is killed later."""

    def __init__(self, path, state, segment):
        self.path, self.state, self.segment = path, state, segment
        self.started = time.perf_counter()

    def update(self, step):
        self.segment.update(
            end_step=step, train_time_s=round(time.perf_counter() - self.started, 3), **peak_memory_mb()
        )

    def on_save(self, args, state, control, **kwargs):
        self.update(state.global_step)
        if args.should_save:
            write_json_atomic(self.path, self.state)


def remove_checkpoints(folder, parent=None):
    """Deletes a completed run's checkpoints and run state, and the folder if nothing else is in it; then `parent`
    (the results' checkpoints/, which holds every run's folder) if the folder was in it and nothing else is."""
    if not os.path.isdir(folder):
        return
    for name in os.listdir(folder):
        if (name.startswith("checkpoint-") and name[11:].isdigit()) or name == RUN_STATE:
            path = os.path.join(folder, name)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    if not os.listdir(folder):
        os.rmdir(folder)
    if parent and os.path.dirname(os.path.abspath(folder)) == os.path.abspath(parent):
        with contextlib.suppress(OSError):  # not empty: another run's checkpoints, or one just starting
            os.rmdir(parent)


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
        # A setting added to RESUME_MUST_MATCH after the checkpoint was made is not held against it.
        changed = [key for key in RESUME_MUST_MATCH if state["settings"].get(key, wanted[key]) != wanted[key]]
        if changed:
            raise ConfigError(
                f"run '{training.run_name}' has a checkpoint made with other settings ({', '.join(changed)}); "
                "resume it with its own settings, or choose another --run_name."
            )
    return checkpoint, state or {"settings": wanted, "segments": []}


def hint_for(error) -> str:
    if isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower():
        return (
            "the GPU ran out of memory: use --recipe fast, or halve --per_device_train_batch_size and double "
            "--gradient_accumulation_steps (the same batch per optimizer step), or lower --max_seq_length."
        )
    if isinstance(error, NonFiniteLoss):
        return f"{error}: lower --learning_rate."
    if isinstance(error, OSError):
        return f"could not write ({error}): free disk space or choose another --results_dir."
    return f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else 'no message'}"
