"""The tuning methods. A method is data: how to turn a classifier into the model that trains.

Adding a method is one entry in METHODS: a peft config built from the run's settings and the model, or, for
a method peft lacks, a rule naming the parameters that stay trainable (after inserting any modules the
method adds). Each works out its settings from the model it gets (architectures.py), and says why it
cannot train a model before anything runs. Its knobs are flags in config.ExperimentArguments, and its tuned
learning rate goes in config.TUNED_LEARNING_RATES.
"""

import warnings
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
from peft.utils.constants import (
    TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING,
    TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING,
)

from architectures import (
    KEY,
    QUERY,
    VALUE,
    bias_parameters,
    embedding_width,
    head_modules,
    head_parameters,
    is_norm,
    model_type,
    norm_parameters,
    num_layers,
    projections,
    sublayer_outputs,
    takes_past_key_values,
)
from houlsby import adapter_parameters, add_adapters

# peft 0.21 reads an attribute that transformers 5 deprecates at every peft model it builds or loads: a warning
# about two libraries' versions at each run and each prediction, which the user cannot act on.
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)


class MethodError(ValueError):
    """A method that cannot train this model. The message names the methods that can."""


@dataclass(frozen=True)
class Method:
    help: str
    # Builds the peft config from the run's ExperimentArguments and the model.
    peft_config: Optional[Callable] = None
    # For methods without peft: the names of the parameters that keep training; the rest freeze.
    trainable: Optional[Callable] = None
    # For methods without peft that add modules: inserts them into the model, given the run's arguments.
    insert: Optional[Callable] = None
    # Why the method cannot train this model, or None when it can.
    cannot: Callable = lambda model: None
    # Virtual tokens take position embeddings too, so they shorten the longest input the model takes.
    virtual_tokens: Callable = lambda args: 0


def _geometry(model, token_dim):
    """What peft's prompt learning reads from the config, taken from the model: DistilBERT's config spells it
    differently, and prompts sit in the embedding width, which ELECTRA keeps narrower than its hidden size."""
    return dict(
        num_layers=num_layers(model),
        num_attention_heads=model.config.num_attention_heads,
        token_dim=token_dim,
        modules_to_save=head_modules(model),
    )


def _prefix(projection):
    return lambda args, model: PrefixTuningConfig(
        task_type=TaskType.SEQ_CLS,
        num_virtual_tokens=args.num_virtual_tokens,
        prefix_projection=projection if projection is not None else args.prefix_projection,
        encoder_hidden_size=args.prefix_hidden_size,  # None: peft takes the model's hidden size
        **_geometry(model, model.config.hidden_size),  # keys and values have the attention's width
    )


def _virtual_tokens(args):
    return args.num_virtual_tokens


def _needs_past_key_values(model):
    if not takes_past_key_values(model):
        return "its attention takes no past_key_values, where the prefix goes"
    return None


def _lora_targets(model):
    """peft's targets for the model type where it has them (query and value), else found from the model."""
    if model_type(model) in TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING:
        return None
    return projections(model, QUERY, VALUE) or None


def _lora(args, model):
    targets = args.lora_target_modules.split(",") if args.lora_target_modules else _lora_targets(model)
    return LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=targets,
        modules_to_save=head_modules(model),
    )


def _lora_cannot(model):
    known = model_type(model) in TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
    return None if known or projections(model, QUERY, VALUE) else "it has no query and value projections"


def _ia3(args, model):
    """peft's targets where it has them; else keys, values and the feed-forward output, as in the paper."""
    targets = feed_forward = None
    if model_type(model) not in TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING:
        feed_forward = sublayer_outputs(model)[1]
        targets = projections(model, KEY, VALUE) + feed_forward
    return IA3Config(
        task_type=TaskType.SEQ_CLS,
        target_modules=targets,
        feedforward_modules=feed_forward,
        modules_to_save=head_modules(model),
    )


def _ia3_cannot(model):
    if model_type(model) in TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING:
        return None
    if not projections(model, KEY, VALUE) or not sublayer_outputs(model)[1]:
        return "it has no key and value projections and feed-forward outputs that IA3 knows"
    return None


def _adapter_cannot(model):
    return None if sublayer_outputs(model)[0] else "its layers have no attention and feed-forward outputs it knows"


METHODS = {
    "full": Method(
        help="full fine-tuning: every weight trains",
        trainable=lambda model: {name for name, _ in model.named_parameters()},
    ),
    "prefix": Method(
        help="prefix tuning (Li & Liang, 2021): keys and values prepended in every layer, "
        "through an MLP by default (--prefix_projection), as in the original",
        peft_config=_prefix(projection=None),
        cannot=_needs_past_key_values,
        virtual_tokens=_virtual_tokens,
    ),
    "prefix-v2": Method(
        help="prefix tuning without the projection MLP (P-tuning v2 style)",
        peft_config=_prefix(projection=False),
        cannot=_needs_past_key_values,
        virtual_tokens=_virtual_tokens,
    ),
    "prompt": Method(
        help="prompt tuning (Lester et al., 2021): trainable embeddings prepended to the input",
        peft_config=lambda args, model: PromptTuningConfig(
            task_type=TaskType.SEQ_CLS,
            num_virtual_tokens=args.num_virtual_tokens,
            **_geometry(model, embedding_width(model)),
        ),
        virtual_tokens=_virtual_tokens,
    ),
    "ptuning": Method(
        help="P-tuning (Liu et al., 2021): prompt embeddings produced by peft's PromptEncoder (an MLP)",
        peft_config=lambda args, model: PromptEncoderConfig(
            task_type=TaskType.SEQ_CLS,
            num_virtual_tokens=args.num_virtual_tokens,
            encoder_hidden_size=args.prefix_hidden_size,
            **_geometry(model, embedding_width(model)),
        ),
        virtual_tokens=_virtual_tokens,
    ),
    "lora": Method(
        help="LoRA (Hu et al., 2021): low-rank updates of the attention's query and value",
        peft_config=_lora,
        cannot=_lora_cannot,
    ),
    "ia3": Method(
        help="IA3 (Liu et al., 2022): learned scaling of keys, values and feed-forward activations",
        peft_config=_ia3,
        cannot=_ia3_cannot,
    ),
    "bitfit": Method(
        help="BitFit (Ben Zaken et al., 2022): only the biases and the classification head train",
        trainable=lambda model: bias_parameters(model) | head_parameters(model),
        cannot=lambda model: None if bias_parameters(model.base_model) else "it has no bias terms",
    ),
    "adapter": Method(
        help="bottleneck adapters (Houlsby et al., 2019) after each attention and feed-forward output "
        "(--adapter_size); the adapters, the LayerNorms and the head train",
        insert=lambda model, args: add_adapters(model, args.adapter_size),
        trainable=lambda model: adapter_parameters(model) | norm_parameters(model) | head_parameters(model),
        cannot=_adapter_cannot,
    ),
    "head": Method(
        help="the control every method must beat: only the classification head trains",
        trainable=head_parameters,
    ),
}


def methods_for(model) -> list[str]:
    """The methods that can train this model."""
    return [name for name, method in METHODS.items() if method.cannot(model) is None]


def apply_method(model, name: str, args):
    """Returns the model to train, with only the method's parameters requiring gradients.

    Raises MethodError, naming the methods that work, when the method cannot train this model: known
    before it is applied, or found by peft or by one forward pass on a few tokens, before any data is read.
    """
    method, kind, works = METHODS[name], model_type(model), methods_for(model)  # before the method changes it
    reason = method.cannot(model)
    if reason is None:
        model, reason = _apply(model, method, args)
    if reason is not None:
        others = ", ".join(other for other in works if other != name) or "none"
        reason = reason.rstrip(".")
        raise MethodError(f"--method {name} cannot train a {kind} model: {reason}; methods that can: {others}.")
    if args.bf16_frozen_weights:
        # bf16 autocast rounds every matmul's weights to bf16 at each step anyway; frozen weights never
        # update, so storing them rounded once halves their memory. What trains stays fp32.
        for module in model.modules():
            if is_norm(module):
                continue  # normalisation runs in fp32 under autocast, and a mixed-dtype one fails on CPU
            for parameter in module.parameters(recurse=False):
                if not parameter.requires_grad and parameter.is_floating_point():
                    parameter.data = parameter.data.to(torch.bfloat16)
    return model


def _apply(model, method, args):
    """(the model the method trains, None), or (the model, why it cannot): what peft refuses, or what fails on
    a forward pass of four tokens in eval mode (no dropout, so no random numbers drawn), as it would at step 0."""
    if method.insert is not None:
        method.insert(model, args)
    if method.peft_config is not None:
        config = method.peft_config(args, model)
        try:
            model = get_peft_model(model, config)
        except ValueError as error:  # peft's refusals: no target modules found, a geometry it cannot read
            return model, _first_line(error)
    else:
        trainable = method.trainable(model)
        for parameter_name, parameter in model.named_parameters():
            parameter.requires_grad_(parameter_name in trainable)
    model.eval()
    try:
        with torch.no_grad():
            ids = torch.arange(1, 5, device=model.device).unsqueeze(0)
            model(input_ids=ids, attention_mask=torch.ones_like(ids))
    except (ValueError, RuntimeError) as error:  # peft's checks at the first step, and shape mismatches
        return model, _first_line(error)
    return model.train(), None


def place_prompt_tokens(model) -> None:
    """Moves a prompt-learning model's virtual-token ids to the device of the prompt encoder that reads them.

    peft keeps them in a plain dict beside the module tree, so model.to(device) leaves them on the CPU, and each
    forward copies them to the encoder's device (PeftModel.get_prompt): on a GPU, a copy from pageable memory
    that waits for every kernel queued before it, once a step. Compiled, they are a CPU input of the step's
    graph, and inductor keeps CPU work and device copies out of CUDA graphs (its graph partitions), so the
    forward runs as more than one CUDA graph, around that same blocking copy. They never change, so moving them
    once computes the same step. Any other model is left as it is.
    """
    tokens = getattr(model, "prompt_tokens", None) or {}
    for name, ids in tokens.items():
        device = model.prompt_encoder[name].embedding.weight.device  # where get_prompt sends them
        if ids.device != device:
            tokens[name] = ids.to(device)


def _first_line(error) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
