"""Every setting of a run, in one place, and the command-line parser that fills them.

Defaults mirror the original experiment: bert-base-uncased on GLUE SST-2, 10 epochs,
batch 16, learning rate 1e-6, sequences of at most 128 tokens, seed 42, and prefix
tuning with 20 virtual tokens and a projection (14.78M trainable parameters).

Flags carry Hugging Face's names. Ours are in `ExperimentArguments`; every
`TrainingArguments` flag (`--max_steps`, `--use_cpu`, `--bf16`, ...) works too.
Precedence, lowest first: TrainingArguments' defaults, the original's settings
(`ORIGINAL_SETTINGS`), the recipe (`RECIPES`), the learning-rate preset, and last
whatever the user typed.
"""

import argparse
import os
import sys
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import Optional

from transformers import HfArgumentParser, TrainingArguments

from methods import METHODS


class ConfigError(ValueError):
    """A setting that cannot work. The message is written for the user, as is."""


# The original's shared settings, where they differ from TrainingArguments' defaults.
ORIGINAL_SETTINGS = dict(
    num_train_epochs=10,
    per_device_train_batch_size=16,
    learning_rate=1e-6,
    seed=42,
    eval_strategy="epoch",  # the per-epoch accuracy history
    logging_strategy="epoch",  # the per-epoch train loss, and no host sync per step for logging
    save_strategy="no",  # a BERT-base checkpoint is 1.3 GB with its optimizer state
    report_to="none",  # no surprise wandb or tensorboard logins
)

# How a run is executed. Both recipes keep batch size, epochs and schedule, so they learn the same thing.
RECIPES = {
    # The original's mechanics: fp32, every sentence padded to max_seq_length, eager, torch's AdamW.
    "original": dict(pad_to_max_length=True, bf16=False, torch_compile=False, optim="adamw_torch"),
    # Whatever is fastest on the device: on a CPU, steps are compute-bound, so dynamic padding is the win.
    "fast": dict(
        pad_to_max_length=False,
        per_device_eval_batch_size=128,  # evaluation holds no gradients, so big batches are free
        logging_nan_inf_filter=False,  # its isnan check syncs host and device at every step
    ),
}
# On a GPU a BERT step is launch-bound (13 tokens per SST-2 sentence on average), so graphs pay.
FAST_ON_GPU = dict(
    bf16=True,
    torch_compile=True,
    torch_compile_mode="reduce-overhead",  # CUDA graphs: one launch per step instead of hundreds
    pad_to_multiple_of=16,  # a handful of lengths, so compiled graphs are reused, not recompiled
    optim="adamw_torch_fused",  # one kernel for the update instead of one per parameter tensor
    per_device_eval_batch_size=512,
    dataloader_num_workers=2,  # collate the next batch while the GPU runs this one
    accelerator_config={"non_blocking": True},  # a blocking copy would wait for the previous step: a sync per step
)


def default_run_name(method: str) -> str:
    return f"{method}-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"


@dataclass
class ExperimentArguments:
    """Our settings; `TrainingArguments` holds the Trainer's."""

    method: str = field(
        default="full",
        metadata={"help": "Tuning method.", "choices": sorted(METHODS)},
    )
    model_name_or_path: str = field(
        default="bert-base-uncased",
        metadata={"help": "Hub model id, or a local folder with config.json, weights and tokenizer files."},
    )
    data_dir: Optional[str] = field(
        default=None,
        metadata={
            "help": "Local SST-2 folder: GLUE's train.tsv and dev.tsv, or train.* and dev.*/validation.* "
            "(csv, json, jsonl, parquet) with 'sentence' and 'label' columns. Default: GLUE SST-2 from the Hub."
        },
    )
    max_seq_length: int = field(
        default=128, metadata={"help": "Longest input in word pieces; longer sentences are truncated and counted."}
    )
    max_train_samples: Optional[int] = field(
        default=None, metadata={"help": "Train on the first N training sentences only (quick runs)."}
    )
    max_eval_samples: Optional[int] = field(
        default=None, metadata={"help": "Evaluate on the first N dev sentences only."}
    )
    results_dir: str = field(default="results", metadata={"help": "Where the run's JSON file is written."})
    recipe: str = field(
        default="fast",
        metadata={
            "help": "'original': the original's mechanics (fp32, padding to max_seq_length, eager). "
            "'fast': the fastest path on this device (on a GPU: bf16, length buckets, CUDA graphs, fused AdamW).",
            "choices": sorted(RECIPES),
        },
    )
    pad_to_max_length: bool = field(
        default=False, metadata={"help": "Pad every sentence to max_seq_length (set by the recipe)."}
    )
    pad_to_multiple_of: Optional[int] = field(
        default=None, metadata={"help": "Pad each batch up to a multiple of this many tokens (set by the recipe)."}
    )
    num_virtual_tokens: int = field(
        default=20, metadata={"help": "Prompt-learning methods: number of virtual tokens."}
    )
    prefix_projection: bool = field(
        default=True, metadata={"help": "Prefix tuning: reparameterise the prefix through a two-layer MLP."}
    )
    prefix_hidden_size: Optional[int] = field(
        default=None,
        metadata={"help": "Prefix tuning: hidden size of the projection MLP (default: the model's, 768 for BERT-base)."},
    )

    def __post_init__(self):
        if self.max_seq_length < 4:
            raise ConfigError(f"--max_seq_length must be at least 4 (got {self.max_seq_length}).")
        for name in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name} must be a positive number of sentences (got {value}).")
        if self.pad_to_multiple_of is not None and self.pad_to_multiple_of < 1:
            raise ConfigError(f"--pad_to_multiple_of must be positive (got {self.pad_to_multiple_of}).")
        if self.num_virtual_tokens < 1:
            raise ConfigError(f"--num_virtual_tokens must be at least 1 (got {self.num_virtual_tokens}).")
        if self.prefix_hidden_size is not None and self.prefix_hidden_size < 1:
            raise ConfigError(f"--prefix_hidden_size must be positive (got {self.prefix_hidden_size}).")
        if self.data_dir is not None and not os.path.isdir(self.data_dir):
            raise ConfigError(f"--data_dir {self.data_dir} is not a folder.")


class _Parser(HfArgumentParser):
    """Raises ConfigError instead of printing usage and exiting, so every refusal looks alike."""

    def error(self, message):
        raise ConfigError(f"{message} (see --help)")


def build_parser(method: Optional[str] = None) -> _Parser:
    parser = _Parser((ExperimentArguments, TrainingArguments), allow_abbrev=False)
    parser.set_defaults(**ORIGINAL_SETTINGS)
    if method is not None:
        parser.set_defaults(method=method)
    return parser


def _explicit_flags(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The settings the user typed, found by parsing once more with every default suppressed."""
    saved = {action.dest: action.default for action in parser._actions}
    try:
        for action in parser._actions:
            action.default = argparse.SUPPRESS
        typed, _ = parser.parse_known_args(argv, namespace=argparse.Namespace())
    finally:
        for action in parser._actions:
            action.default = saved[action.dest]
    return set(vars(typed))


def parse_args(argv: Optional[list[str]] = None, method: Optional[str] = None):
    """Returns (ExperimentArguments, TrainingArguments, recipe settings applied). Raises ConfigError."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(method)
    namespace = parser.parse_args(argv)
    typed = _explicit_flags(parser, argv)
    if method is not None and "method" in typed and namespace.method != method:
        raise ConfigError(f"this script always runs '{method}'; use train_peft.py --method {namespace.method}.")

    values = vars(namespace)
    on_gpu = _cuda_available() and not values.get("use_cpu")
    recipe = dict(RECIPES[values["recipe"]])
    if values["recipe"] == "fast" and on_gpu:
        recipe.update(FAST_ON_GPU)
    for name, value in recipe.items():
        if name not in typed:
            values[name] = value
    if values["learning_rate"] <= 0:
        raise ConfigError(f"--learning_rate must be positive (got {values['learning_rate']}).")
    if values["num_train_epochs"] <= 0 and values["max_steps"] <= 0:
        raise ConfigError(f"--num_train_epochs must be positive (got {values['num_train_epochs']}).")
    if values["per_device_train_batch_size"] < 1 or values["per_device_eval_batch_size"] < 1:
        raise ConfigError("batch sizes must be at least 1.")
    if not values.get("run_name"):
        values["run_name"] = default_run_name(values["method"])
    if os.sep in values["run_name"] or values["run_name"].startswith("."):
        raise ConfigError(f"--run_name {values['run_name']!r} must be a plain file name.")
    if not values.get("output_dir"):
        values["output_dir"] = os.path.join(values["results_dir"], "checkpoints", values["run_name"])

    ours = {f.name for f in fields(ExperimentArguments)}
    try:
        experiment = ExperimentArguments(**{k: v for k, v in values.items() if k in ours})
        training = TrainingArguments(**{k: v for k, v in values.items() if k not in ours})
    except ConfigError:
        raise
    except (ValueError, TypeError) as error:  # TrainingArguments' own checks
        raise ConfigError(str(error).strip().splitlines()[0]) from None
    return experiment, training, recipe


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()
