"""Runs the pipeline, and sends this very process a signal right after the checkpoint of one step is saved.

    python tests/signal_after_save.py STEP SIGNAL METHOD [train flags]

Deterministic, unlike a signal sent from outside at some moment: the run is always caught at the same step.
"""

import os
import signal
import sys

from transformers import TrainerCallback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import experiment  # noqa: E402


class SignalAfterSave(TrainerCallback):
    def __init__(self, step, number):
        self.step, self.number = step, number

    def on_save(self, args, state, control, **kwargs):  # after the checkpoint and the run state are on disk
        if state.global_step == self.step:
            os.kill(os.getpid(), self.number)


if __name__ == "__main__":
    step, number, method, *argv = sys.argv[1:]
    build_trainer = experiment.build_trainer

    def with_signal(*args, callbacks=(), **kwargs):
        return build_trainer(
            *args, callbacks=[*callbacks, SignalAfterSave(int(step), getattr(signal, number))], **kwargs
        )

    experiment.build_trainer = with_signal
    sys.exit(experiment.main(argv, method=method))
