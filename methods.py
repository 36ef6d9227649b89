"""The tuning methods. A method is data: how to turn a classifier into the model that trains.

Adding a method is one entry in METHODS: a peft config built from the run's settings, or, for a
method peft lacks, a rule naming the parameters that stay trainable. Its knobs are flags in
config.ExperimentArguments, and its tuned learning rate goes in config.TUNED_LEARNING_RATES.
"""

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from peft import (
    IA3Config,
    LoraConfig,
    PrefixTuningConfig,
    PromptEncoderConfig,
    PromptTuningConfig,
    TaskType,
    get_peft_model,
)


@dataclass(frozen=True)
class Method:
    help: str
    # Builds the peft config from the run's ExperimentArguments.
    peft_config: Optional[Callable] = None
    # For methods without peft: which parameters (by name) keep training; the rest freeze.
    trainable: Optional[Callable[[str], bool]] = None
    # Virtual tokens take position embeddings too, so they shorten the longest input the model takes.
    virtual_tokens: Callable = lambda args: 0


def _prefix(projection):
    return lambda args: PrefixTuningConfig(
        task_type=TaskType.SEQ_CLS,
        num_virtual_tokens=args.num_virtual_tokens,
        prefix_projection=projection if projection is not None else args.prefix_projection,
        encoder_hidden_size=args.prefix_hidden_size,  # None: peft takes the model's hidden size
    )


def _virtual_tokens(args):
    return args.num_virtual_tokens


METHODS = {
    "full": Method(help="full fine-tuning: every weight trains"),
    "prefix": Method(
        help="prefix tuning (Li & Liang, 2021): keys and values prepended in every layer, "
        "through an MLP by default (--prefix_projection), as in the original",
        peft_config=_prefix(projection=None),
        virtual_tokens=_virtual_tokens,
    ),
    "prefix-v2": Method(
        help="prefix tuning without the projection MLP (P-tuning v2 style)",
        peft_config=_prefix(projection=False),
        virtual_tokens=_virtual_tokens,
    ),
    "prompt": Method(
        help="prompt tuning (Lester et al., 2021): trainable embeddings prepended to the input",
        peft_config=lambda args: PromptTuningConfig(
            task_type=TaskType.SEQ_CLS, num_virtual_tokens=args.num_virtual_tokens
        ),
        virtual_tokens=_virtual_tokens,
    ),
    "ptuning": Method(
        help="P-tuning (Liu et al., 2021): prompt embeddings produced by peft's PromptEncoder (an MLP)",
        peft_config=lambda args: PromptEncoderConfig(
            task_type=TaskType.SEQ_CLS,
            num_virtual_tokens=args.num_virtual_tokens,
            encoder_hidden_size=args.prefix_hidden_size,
        ),
        virtual_tokens=_virtual_tokens,
    ),
    "lora": Method(
        help="LoRA (Hu et al., 2021): low-rank updates of the attention's query and value",
        peft_config=lambda args: LoraConfig(
            task_type=TaskType.SEQ_CLS,
            r=args.lora_r,
            lora_alpha=args.lora_alpha,
            lora_dropout=args.lora_dropout,
            target_modules=list(args.lora_target_modules.split(",")),
        ),
    ),
    "ia3": Method(
        help="IA3 (Liu et al., 2022): learned scaling of keys, values and feed-forward activations",
        peft_config=lambda args: IA3Config(task_type=TaskType.SEQ_CLS),
    ),
    "bitfit": Method(
        help="BitFit (Ben Zaken et al., 2022): only the biases and the classifier head train",
        trainable=lambda name: name.endswith(".bias") or name.startswith("classifier."),
    ),
}


def apply_method(model, name: str, args):
    """Returns the model to train, with only the method's parameters requiring gradients."""
    method = METHODS[name]
    if method.peft_config is not None:
        model = get_peft_model(model, method.peft_config(args))
    elif method.trainable is not None:
        for parameter_name, parameter in model.named_parameters():
            parameter.requires_grad_(method.trainable(parameter_name))
    if args.bf16_frozen_weights:
        # bf16 autocast rounds every matmul's weights to bf16 at each step anyway; frozen weights never
        # update, so storing them rounded once halves their memory. What trains stays fp32.
        for module in model.modules():
            if "norm" in type(module).__name__.lower():
                continue  # normalisation runs in fp32 under autocast, and a mixed-dtype one fails on CPU
            for parameter in module.parameters(recurse=False):
                if not parameter.requires_grad and parameter.is_floating_point():
                    parameter.data = parameter.data.to(torch.bfloat16)
    return model
