"""The classifier: loaded from the Hub or a local folder to start a run, saved for reuse when the run
completes, and loaded again from that folder by predict.py; and a tiny BERT for checks."""

import logging
import os
import sys
from types import SimpleNamespace

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig

from architectures import head_parameters
from methods import METHODS
from results import read_json, write_json_atomic

LABELS = {0: "negative", 1: "positive"}
# What BERT would set on its first forward; set before it, so torch.compile does not recompile on step two.
PROBLEM_TYPE = "single_label_classification"


# Weights in fp32 whatever the checkpoint holds: transformers 5 loads a half-precision checkpoint as it is
# ("auto"), and the optimizer would then update half-precision weights, where small steps round to nothing.
# Autocast (--bf16) still runs the matmuls in bf16, and --bf16_frozen_weights stores the frozen ones so.
MASTER_DTYPE = torch.float32


class ModelError(RuntimeError):
    """A model that cannot be loaded. The message says how to get one."""


def classifier_from_pretrained(name_or_path, **options):
    """SST-2's two-label classifier, in fp32, from a Hub id or a folder; options go to from_pretrained."""
    return AutoModelForSequenceClassification.from_pretrained(
        name_or_path,
        dtype=MASTER_DTYPE,
        num_labels=2,
        id2label=LABELS,
        label2id={v: k for k, v in LABELS.items()},
        problem_type=PROBLEM_TYPE,
        **options,
    )


def load_model_and_tokenizer(name_or_path, offline_too=None):
    """(model, tokenizer) from a Hub id or a folder. `offline_too`: what else the run fetches from the Hub, named
    beside the model's way out when the Hub is unreachable, so that one failed run names every flag to pass."""
    looks_local = name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1  # hub ids: name or org/name
    if looks_local and not os.path.isdir(name_or_path):
        raise ModelError(f"--model_name_or_path {name_or_path} is not a folder.")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        model = classifier_from_pretrained(name_or_path)
    except (OSError, ValueError) as error:
        if os.path.isdir(name_or_path):
            first_line = str(error).strip().splitlines()[0]
            raise ModelError(f"{name_or_path} could not be loaded as a model and tokenizer: {first_line}") from None
        raise ModelError(
            f"could not fetch the model '{name_or_path}' from the Hugging Face Hub ({type(error).__name__}); "
            "to run offline, pass a local folder with config.json, weights and tokenizer files as "
            f"--model_name_or_path DIR{f', and {offline_too}' if offline_too else ''}."
        ) from None
    return model, tokenizer


RUN_INFO = "sst2_run.json"  # beside a saved model: which run made it, and the input length it was trained at
# What a method that inserts modules into the model trained (--method adapter): from_pretrained would drop it.
TRAINED_WEIGHTS = "trained_weights.safetensors"


def save_for_reuse(model, tokenizer, folder, run_info: dict):
    """What reuse needs, as the libraries load it: peft's adapter (its config names the base model), the
    trained tensors of a method that adds modules (RUN_INFO names the base model), or the whole model; with the
    tokenizer, and RUN_INFO."""
    model = getattr(model, "_orig_mod", model)  # unwrap torch.compile
    if hasattr(model, "get_base_model"):  # peft: the adapter, plus the classifier head it trained
        model.save_pretrained(folder)
    elif METHODS[run_info["method"]].insert is not None:
        os.makedirs(folder, exist_ok=True)
        save_trained_tensors(model, os.path.join(folder, TRAINED_WEIGHTS))
    else:  # frozen weights kept in bf16 (--bf16_frozen_weights) are saved in fp32, so they load like any model
        model.float().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    write_json_atomic(os.path.join(folder, RUN_INFO), run_info)


def save_trained_tensors(model, path):
    """Only the parameters that trained, in fp32: all a method that adds modules needs besides its base model."""
    from safetensors.torch import save_file

    save_file({name: p.detach().float().contiguous() for name, p in model.named_parameters() if p.requires_grad}, path)


def load_for_prediction(folder, base_model_name_or_path=None):
    """(model, tokenizer, run info) from a folder that save_for_reuse wrote. Raises ModelError."""
    if not os.path.isdir(folder):
        raise ModelError(f"--model {folder} is not a folder.")
    peft = os.path.isfile(os.path.join(folder, "adapter_config.json"))
    inserted = os.path.isfile(os.path.join(folder, TRAINED_WEIGHTS))
    if not (peft or inserted or os.path.isfile(os.path.join(folder, "config.json"))):
        raise ModelError(
            f"{folder} is not a saved run: it has none of adapter_config.json, {TRAINED_WEIGHTS} or config.json."
        )
    info_path = os.path.join(folder, RUN_INFO)
    info = read_json(info_path) if os.path.isfile(info_path) else {}
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if not (peft or inserted):
        return AutoModelForSequenceClassification.from_pretrained(folder, dtype=MASTER_DTYPE), tokenizer, info
    from peft import PeftConfig, PeftModel

    named_in = "adapter_config.json" if peft else RUN_INFO
    base = base_model_name_or_path or (
        PeftConfig.from_pretrained(folder).base_model_name_or_path if peft else info.get("base_model")
    )
    try:
        model = load_base_model(base)
    except (OSError, ValueError, TypeError) as error:
        raise ModelError(
            f"could not load the base model '{base}' named in {folder}/{named_in} "
            f"({type(error).__name__}); pass --base_model_name_or_path DIR."
        ) from None
    if peft:
        return PeftModel.from_pretrained(model, folder), tokenizer, info
    from safetensors.torch import load_file

    METHODS[info["method"]].insert(model, SimpleNamespace(**info["settings"]))
    unexpected = model.load_state_dict(load_file(os.path.join(folder, TRAINED_WEIGHTS)), strict=False).unexpected_keys
    if unexpected:
        raise ModelError(f"{folder}/{TRAINED_WEIGHTS} does not fit the base model '{base}': {unexpected[0]}.")
    return model, tokenizer, info


def load_base_model(base):
    """The model a saved adapter or trained tensors go onto. The saved run brings its own task head, so the
    base's head may be missing (a pretrained model's) or of another size (another task's): transformers'
    report of it as newly initialised would mislead, and is held back unless loading fails. Weights missing or
    of another size outside the head start at random, and nothing saved replaces them: those are named."""
    held = []  # a filter, not a level: transformers 5.23 lists every layer when that logger's level is raised

    def hold_load_report(record):
        if "LOAD REPORT" in record.getMessage():
            held.append(record)
            return False
        return True

    report = logging.getLogger("transformers.modeling_utils")  # where from_pretrained logs its load report
    report.addFilter(hold_load_report)
    try:
        model, loading = classifier_from_pretrained(base, ignore_mismatched_sizes=True, output_loading_info=True)
    except BaseException:
        report.removeFilter(hold_load_report)
        for record in held:  # the error may point to it
            report.handle(record)
        raise
    report.removeFilter(hold_load_report)
    replaced = set(loading["missing_keys"]) | {key for key, *_ in loading["mismatched_keys"]}
    lacking = sorted(replaced - head_parameters(model))
    if lacking:
        print(
            f"warning: the base model '{base}' lacks {len(lacking)} weights outside the task head ({lacking[0]} "
            "first), which start at random: the predictions will not be the run's.",
            file=sys.stderr,
        )
    return model


def declare_mean_loss(model):
    """Tells the Trainer, through the model attribute it reads, that the loss is already a mean over the batch.

    BERT's classification loss ignores the Trainer's count of labels (num_items_in_batch), but its forward
    takes **kwargs, so the Trainer assumes the count is used: it then skips dividing by
    --gradient_accumulation_steps and multiplies by the number of processes, N times the gradients and the
    logged losses (tests/test_gradient_accumulation.py and tests/test_distributed.py fail without this).
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # the Trainer unwraps peft
    base.accepts_loss_kwargs = False
    return model


def longest_input(model, experiment) -> int:
    """max_seq_length, shortened where virtual tokens or padding would push positions past the model's table."""
    positions = getattr(model.config, "max_position_embeddings", experiment.max_seq_length)
    room = positions - METHODS[experiment.method].virtual_tokens(experiment)
    if experiment.pad_to_multiple_of:  # a batch is padded up to the next multiple, which must fit too
        room -= room % experiment.pad_to_multiple_of
    return min(experiment.max_seq_length, room)


def tiny_bert_config(vocab_size, **overrides) -> BertConfig:
    """A two-layer BERT small enough for a check or a test to train on a CPU in seconds."""
    settings = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=2,
        problem_type=PROBLEM_TYPE,
    )
    return BertConfig(**{**settings, **overrides})
