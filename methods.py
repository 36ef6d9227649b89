"""The tuning methods. A method is data: how to turn a classifier into the model that trains.

Adding a method is one entry in METHODS: a peft config built from the run's settings,
or, for a method peft lacks, the names of the parameters that stay trainable.
"""

from dataclasses import dataclass
from typing import Callable, Optional

from peft import PrefixTuningConfig, TaskType, get_peft_model


@dataclass(frozen=True)
class Method:
    help: str
    # Builds the peft config from the run's ExperimentArguments; None for methods without peft.
    peft_config: Optional[Callable] = None
    # Virtual tokens take position embeddings too, so they shorten the longest input the model takes.
    virtual_tokens: Callable = lambda args: 0


METHODS = {
    "full": Method(help="full fine-tuning: every weight trains"),
    "prefix": Method(
        help="prefix tuning (Li & Liang, 2021): trainable keys and values prepended in every layer",
        peft_config=lambda args: PrefixTuningConfig(
            task_type=TaskType.SEQ_CLS,
            num_virtual_tokens=args.num_virtual_tokens,
            prefix_projection=args.prefix_projection,
            encoder_hidden_size=args.prefix_hidden_size,  # None: peft takes the model's hidden size
        ),
        virtual_tokens=lambda args: args.num_virtual_tokens,
    ),
}


def apply_method(model, name: str, args):
    """Returns the model to train, with only the method's parameters requiring gradients."""
    method = METHODS[name]
    if method.peft_config is None:
        return model
    return get_peft_model(model, method.peft_config(args))


def peft_config_dict(name: str, args) -> Optional[dict]:
    """The method's peft config as plain JSON data, for the results file."""
    method = METHODS[name]
    if method.peft_config is None:
        return None
    config = method.peft_config(args).to_dict()
    return {key: (sorted(value) if isinstance(value, set) else value) for key, value in config.items()}
