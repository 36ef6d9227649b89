"""Every setting of a run, in one place, and the command-line parser that fills them.

Defaults mirror the original experiment: bert-base-uncased on GLUE SST-2, 10 epochs,
batch 16, learning rate 1e-6, sequences of at most 128 tokens, seed 42, and prefix
tuning with 20 virtual tokens and a projection (14.78M trainable parameters).

Flags carry Hugging Face's names. Ours are in `ExperimentArguments`; every
`TrainingArguments` flag (`--max_steps`, `--use_cpu`, `--bf16`, ...) works too.
Precedence, each layer over the one before: TrainingArguments' defaults < `DEFAULT_SETTINGS`
with the preset's learning rate < the recipe, as resolved for this device < what the user typed.
"""

import argparse
import math
import os
import re
import sys
from dataclasses import dataclass, field, fields
from typing import Optional

from transformers import HfArgumentParser, TrainingArguments

from methods import METHODS
from results import utc_stamp


class ConfigError(ValueError):
    """A setting that cannot work. The message is written for the user, as is."""


# The original's shared settings and ours, where they differ from TrainingArguments' defaults.
DEFAULT_SETTINGS = dict(
    num_train_epochs=10,
    per_device_train_batch_size=16,
    learning_rate=1e-6,
    seed=42,
    eval_strategy="epoch",  # the per-epoch accuracy history
    logging_strategy="epoch",  # the per-epoch train loss, and no host sync per step for logging
    save_strategy="epoch",  # a run can resume after an interruption or a crash
    save_total_limit=1,  # keep only what resuming needs: a BERT-base checkpoint is 1.3 GB with its optimizer
    report_to="none",  # no surprise wandb or tensorboard logins
)

# --lr_preset tuned: each method's learning rate, chosen by sweep.py on held-out training sentences, never on
# dev (pretrained all-MiniLM-L6-v2, the first 4,000 SST-2 sentences, 1 epoch). Every trial, its command and the
# choice are in results/reference/sweeps/<method>/ (tests/test_reference_results.py checks these rates against
# them; `python sweep.py --table results/reference/sweeps` prints them).
TUNED_LEARNING_RATES = {
    "full": 1e-4,
    "prefix": 5e-4,
    "prefix-v2": 3e-2,
    "prompt": 1e-1,
    "ptuning": 3e-2,
    "lora": 2e-3,
    "ia3": 1e-2,
    "bitfit": 1e-3,
    "adapter": 1e-3,
    "head": 3e-1,
}
# A run of more than one epoch takes its method's rate from a ten-epoch sweep of the same sentences where there is
# one (results/reference/ten-epoch-sweeps/sweeps/<method>/). Prefix tuning's one-epoch 5e-4 fell to the majority
# class in 2 of 6 ten-epoch runs, as early as epoch 2 and once for good; sweep.py leaves out a rate that fell.
TUNED_TEN_EPOCH_LEARNING_RATES = {"prefix": 2e-4}


def tuned_learning_rate(method: str, num_train_epochs: float, max_steps: int) -> float:
    """--lr_preset tuned's rate for this schedule. A step budget counts as one epoch: no sweep measured steps."""
    if max_steps <= 0 and num_train_epochs > 1:
        return TUNED_TEN_EPOCH_LEARNING_RATES.get(method, TUNED_LEARNING_RATES[method])
    return TUNED_LEARNING_RATES[method]


def original_rate_note(experiment, training) -> Optional[str]:
    """What to tell a user who runs a method the original did not run at the original's 1e-6, or None."""
    method = experiment.method
    if experiment.lr_preset != "original" or method in ("full", "prefix"):
        return None
    if training.learning_rate != DEFAULT_SETTINGS["learning_rate"]:
        return None  # the user's own --learning_rate
    return (
        f"note: {method} trains at the original experiment's learning rate, 1e-6 (--lr_preset original), which it "
        f"set for full fine-tuning and prefix tuning; our sweeps chose {TUNED_LEARNING_RATES[method]:g} for {method} "
        "(--lr_preset tuned: results/reference/sweeps/)."
    )


def tuned_rate_note(experiment, training) -> Optional[str]:
    """What to tell a user who runs --lr_preset tuned's one-epoch rate over a longer schedule, or None."""
    if experiment.lr_preset != "tuned" or training.max_steps > 0 or training.num_train_epochs <= 1:
        return None
    one_epoch = TUNED_LEARNING_RATES[experiment.method]
    if experiment.method in TUNED_TEN_EPOCH_LEARNING_RATES or training.learning_rate != one_epoch:
        return None  # a rate chosen for a long schedule, or the user's own --learning_rate
    return (
        f"note: --lr_preset tuned's rate for {experiment.method} ({training.learning_rate:g}) was chosen for one "
        f"epoch, and this run trains {training.num_train_epochs:g}; a one-epoch rate can fail over more (prefix "
        "tuning's 5e-4 fell to the majority class in 2 of 6 ten-epoch runs, so its preset takes a ten-epoch "
        "sweep's 2e-4: results/reference/ten-epoch-sweeps/; the other methods' rates did not fall in ten epochs, "
        "one or two seeds each: results/reference/ten-epochs-every-method-minilm-4000/). "
        f"sweep.py --method {experiment.method} --num_train_epochs {training.num_train_epochs:g} chooses one for "
        "this schedule."
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
        walk_modules_once=True,  # the Trainer's per-step walks over every module: host time a GPU step waits on
        prompt_tokens_on_device=True,  # else peft copies prompt learning's token ids to a GPU each step, and waits
    ),
}
# On a GPU a BERT step is launch-bound (13 tokens per SST-2 sentence on average), so graphs pay.
FAST_ON_GPU = dict(
    bf16=True,
    torch_compile=True,
    torch_compile_mode="reduce-overhead",  # CUDA graphs: one launch per step instead of hundreds
    pad_to_multiple_of=16,  # a handful of lengths, so CUDA graphs are reused, not recorded anew
    torch_compile_dynamic=True,  # one compile for every length and the short last batch, not one per shape
    bf16_frozen_weights=True,  # frozen weights in bf16: what autocast feeds the matmuls anyway, at half the memory
    # The backward casts each trained weight to bf16 again rather than keep autocast's copy from the forward: a
    # BERT-base step of 80-token sentences keeps 298 MiB less for its backward, 163 of them the copies
    # (results/reference/saved-activations-cpu/).
    recompute_in_backward=True,
    optim="adamw_torch_fused",  # one kernel for the update instead of one per parameter tensor
    per_device_eval_batch_size=512,
    # The loop's thread collates each batch (data_loader.PaddingCollator): 0.35 ms on our CPU, where taking
    # one from a worker process cost it 2.54 (results/reference/batch-time-cpu/batch_time.json).
    dataloader_num_workers=0,
    accelerator_config={"non_blocking": True},  # a blocking copy would wait for the previous step: a sync per step
)
# What stands in where a GPU cannot run all of FAST_ON_GPU (GpuSupport). Not measured: we borrow H100s and H200s.
# Before Ampere (T4, V100, P100) bf16 is emulated, and inductor runs any graph that holds it eagerly: fp16
# autocast with the Trainer's loss scaling instead, as those cards train BERT (fused AdamW takes the scale).
WITHOUT_NATIVE_BF16 = dict(bf16=False, bf16_frozen_weights=False, fp16=True)
# torch.compile's GPU kernels are Triton's: none below compute capability 7.0 (P100), nor without triton
# installed (torch's Windows wheels); there inductor raises at the first step. Eager instead.
COMPILE_SETTINGS = ("torch_compile", "torch_compile_mode", "torch_compile_dynamic", "recompute_in_backward")
PRECISIONS = ("bf16", "fp16")  # one typed replaces the recipe's, so --bf16 False means fp32 on every card


@dataclass(frozen=True)
class GpuSupport:
    """What of FAST_ON_GPU this machine's GPU runs (gpu_support); recipe_settings leaves out the rest."""

    name: str = "GPU"
    native_bf16: bool = True  # compute capability 8.0 (Ampere) and newer, and AMD's: what inductor compiles
    triton: bool = True  # triton installed, and compute capability 7.0 or newer


def gpu_support() -> Optional["GpuSupport"]:
    """This machine's GPU, or None without one."""
    import torch

    if not torch.cuda.is_available():
        return None
    from torch.utils._triton import has_triton  # what inductor asks before it compiles for a GPU

    native = torch.cuda.is_bf16_supported(including_emulation=False)  # the Trainer's own check counts emulation
    return GpuSupport(torch.cuda.get_device_name(), native, has_triton())


RUN_NAME = re.compile(r"[A-Za-z0-9_+=-][A-Za-z0-9._+=-]{0,199}")  # becomes a file and a folder name


def default_run_name(method: str) -> str:
    return f"{method}-{utc_stamp()}"


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
    model_name: Optional[str] = field(
        default=None,
        metadata={
            "help": "How the results name the model, in place of a local folder's path (e.g. its Hub id, "
            "sentence-transformers/all-MiniLM-L6-v2). Default: --model_name_or_path, or the folder's name."
        },
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
    train_size: Optional[int] = field(
        default=None,
        metadata={
            "help": "Train on N training sentences drawn at random, stratified by label, from a fixed seed; nested: "
            "a smaller N's sentences are among a larger N's (compare.py --train_sizes draws learning curves)."
        },
    )
    max_eval_samples: Optional[int] = field(
        default=None, metadata={"help": "Evaluate on the first N dev sentences only."}
    )
    results_dir: str = field(default="results", metadata={"help": "Where the run's JSON file is written."})
    recipe: str = field(
        default="fast",
        metadata={
            "help": "'original': the original's mechanics (fp32, padding to max_seq_length, eager). "
            "'fast': the fastest path on this device (on a GPU: bf16, or fp16 before Ampere; length buckets; CUDA "
            "graphs where Triton runs; fused AdamW).",
            "choices": sorted(RECIPES),
        },
    )
    # The recipe's own knobs: --recipe sets them, so --help does not list them. They still parse, for
    # measuring one change at a time (bench.py --variants "--torch_compile_dynamic False").
    pad_to_max_length: bool = field(
        default=False,
        metadata={"help": argparse.SUPPRESS},  # pad every sentence to max_seq_length
    )
    pad_to_multiple_of: Optional[int] = field(
        default=None,
        metadata={"help": argparse.SUPPRESS},  # pad each batch up to a multiple of this many tokens
    )
    # With --torch_compile: compile once for symbolic shapes (True) or per shape (False); unset: torch's
    # default, which compiles for the first shape and again when a dimension changes.
    torch_compile_dynamic: Optional[bool] = field(default=None, metadata={"help": argparse.SUPPRESS})
    # With --bf16: store the weights the method freezes in bfloat16. Autocast rounds them to bf16 for every
    # matmul anyway; stored so, they take half the memory. Trained weights stay fp32.
    bf16_frozen_weights: bool = field(default=False, metadata={"help": argparse.SUPPRESS})
    # List the model's modules and parameters once, for the three walks the Trainer's loop makes at every
    # step (experiment.ModulesListedOnce). Off: the Trainer's own walks, as the original ran.
    walk_modules_once: bool = field(default=False, metadata={"help": argparse.SUPPRESS})
    # Prompt-learning methods: move peft's virtual-token ids to the prompt encoder's device before the first step
    # (methods.place_prompt_tokens). Off: peft copies them from the CPU at every forward, as the original ran.
    prompt_tokens_on_device: bool = field(default=False, metadata={"help": argparse.SUPPRESS})
    # With torch.compile: the backward recomputes what it can rebuild cheaply from what it holds anyway, such as
    # autocast's bf16 copies of the trained weights, instead of keeping it from the forward
    # (experiment.partition_for_memory). Off: torch's own split, as the H100 report ran.
    recompute_in_backward: bool = field(default=False, metadata={"help": argparse.SUPPRESS})
    # With torch.compile: trace one of the encoder's identical layers and reuse what it compiled to for the others
    # (experiment.compile_layers_once), still one graph for the step. Off: every layer traced and compiled anew, as
    # the H100 report ran. Not yet the recipe's: no GPU has timed its step (gpu_report.py --part bench_layers_once).
    compile_layers_once: bool = field(default=False, metadata={"help": argparse.SUPPRESS})
    num_virtual_tokens: int = field(default=20, metadata={"help": "Prompt-learning methods: number of virtual tokens."})
    prefix_projection: bool = field(
        default=True, metadata={"help": "Prefix tuning: reparameterise the prefix through a two-layer MLP."}
    )
    prefix_hidden_size: Optional[int] = field(
        default=None,
        metadata={
            "help": "Prefix tuning: hidden size of the projection MLP (default: the model's, 768 for BERT-base)."
        },
    )

    holdout_fraction: Optional[float] = field(
        default=None,
        metadata={
            "help": "Evaluate on a stratified slice of this fraction of the training sentences (fixed seed), "
            "removed from training, instead of on dev: for choosing hyper-parameters (sweep.py uses 0.05)."
        },
    )
    lora_r: int = field(default=8, metadata={"help": "LoRA: rank of the update."})
    lora_alpha: float = field(
        default=16, metadata={"help": "LoRA: scaling numerator (the update is scaled by alpha / r)."}
    )
    lora_dropout: float = field(default=0.1, metadata={"help": "LoRA: dropout on the update's input."})
    lora_target_modules: Optional[str] = field(
        default=None,
        metadata={
            "help": "LoRA: comma-separated names of the modules to adapt. Default: the model's attention query "
            "and value projections (peft's targets for its model type, or found by name)."
        },
    )
    adapter_size: int = field(
        default=64, metadata={"help": "Adapter method: bottleneck width of each adapter (Houlsby et al., 2019)."}
    )
    lr_preset: str = field(
        default="original",
        metadata={
            "help": "Learning rate when --learning_rate is not given. 'original': 1e-6 for every method, as in "
            "the original. 'tuned': each method's rate from a one-epoch sweep (config.TUNED_LEARNING_RATES), or "
            "for a run of more than one epoch from a ten-epoch sweep where there is one "
            "(config.TUNED_TEN_EPOCH_LEARNING_RATES: prefix); otherwise sweep again with sweep.py.",
            "choices": ["original", "tuned"],
        },
    )
    resume: bool = field(
        default=False,
        metadata={
            "help": "Continue run --run_name from its last checkpoint (running the same --run_name again does too)."
        },
    )
    save_model: bool = field(
        default=True,
        metadata={
            "help": "When the run completes, save what reuse needs into RESULTS_DIR/models/<run_name>/ for "
            "predict.py: peft's adapter and the tokenizer, or the whole model. sweep.py and compare.py turn it off "
            "unless given."
        },
    )
    keep_checkpoints: bool = field(
        default=False,
        metadata={
            "help": "Keep the run's checkpoints once it completes. They serve only resuming, and hold the optimizer "
            "state: 1.3 GB for BERT-base full fine-tuning."
        },
    )

    def __post_init__(self):
        if self.max_seq_length < 4:
            raise ConfigError(f"--max_seq_length must be at least 4 (got {self.max_seq_length}).")
        for name in ("max_train_samples", "max_eval_samples", "train_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name} must be a positive number of sentences (got {value}).")
        if self.pad_to_multiple_of is not None and self.pad_to_multiple_of < 1:
            raise ConfigError(f"--pad_to_multiple_of must be positive (got {self.pad_to_multiple_of}).")
        if self.num_virtual_tokens < 1:
            raise ConfigError(f"--num_virtual_tokens must be at least 1 (got {self.num_virtual_tokens}).")
        if self.prefix_hidden_size is not None and self.prefix_hidden_size < 1:
            raise ConfigError(f"--prefix_hidden_size must be positive (got {self.prefix_hidden_size}).")
        if self.holdout_fraction is not None and not 0 < self.holdout_fraction < 0.5:
            raise ConfigError(f"--holdout_fraction must be between 0 and 0.5 (got {self.holdout_fraction}).")
        if self.adapter_size < 1:
            raise ConfigError(f"--adapter_size must be at least 1 (got {self.adapter_size}).")
        if self.lora_r < 1 or not self.lora_alpha > 0 or not 0 <= self.lora_dropout < 1:
            raise ConfigError("LoRA needs --lora_r >= 1, --lora_alpha > 0 and 0 <= --lora_dropout < 1.")
        if self.data_dir is not None and not os.path.isdir(self.data_dir):
            raise ConfigError(f"--data_dir {self.data_dir} is not a folder.")


def recipe_settings(recipe: str, gpu: Optional[GpuSupport]) -> dict:
    """The settings a recipe stands for on this device: `gpu` (gpu_support()), or None for the CPU."""
    settings = dict(RECIPES[recipe])
    if gpu is None:
        settings["dataloader_pin_memory"] = False  # pinning needs an accelerator; torch warns otherwise
    elif recipe == "fast":
        settings.update(FAST_ON_GPU)
        if not gpu.native_bf16:
            settings.update(WITHOUT_NATIVE_BF16)
        if not gpu.triton:
            settings = {name: value for name, value in settings.items() if name not in COMPILE_SETTINGS}
    return settings


def fast_recipe_here(gpu: Optional[GpuSupport]) -> str:
    """What the fast recipe runs on this device (gpu_support(), None for the CPU), in a few words."""
    settings = recipe_settings("fast", gpu)
    precision = "bf16" if settings.get("bf16") else "fp16 with loss scaling" if settings.get("fp16") else "fp32"
    if settings.get("torch_compile"):
        multiple = settings["pad_to_multiple_of"]
        return f"{precision}, torch.compile with CUDA graphs, lengths padded to multiples of {multiple}"
    return f"{precision}, eager{', each batch padded to its longest sentence' if gpu is None else ''}"


def gpu_note(gpu: Optional[GpuSupport], experiment, training) -> Optional[str]:
    """What to tell a user whose GPU the fast recipe runs without some of its settings, or None."""
    if gpu is None or experiment.recipe != "fast":
        return None
    instead = []
    if not gpu.native_bf16 and training.fp16:
        instead.append("fp16 autocast with loss scaling instead of bf16, which it does not run natively")
    if not gpu.triton and not training.torch_compile:
        instead.append("without torch.compile, which needs Triton here (compute capability 7.0 or newer)")
    if not instead:
        return None
    return f"note: the fast recipe on {gpu.name} runs {' and '.join(instead)}; --recipe original runs fp32, eagerly."


def compile_note(training) -> Optional[str]:
    """What to tell a user whose first steps will compile the model (the fast recipe on a GPU), so that a long
    first step does not look like a hang; or None."""
    if not training.torch_compile:
        return None
    return (
        "note: torch.compile compiles the model during the first steps: a minute or more the first time on a "
        "machine, less once inductor's cache holds it (README: Recipes); --recipe original does not compile."
    )


def data_parallel_note(training) -> Optional[str]:
    """What to tell a user whose one process sees several GPUs, which the Trainer then runs as nn.DataParallel
    with a batch that many times the per-device one, or None."""
    if training.n_gpu <= 1:
        return None
    return (
        f"note: this process sees {training.n_gpu} GPUs, so the Trainer splits each step's "
        f"{training.train_batch_size} sentences over them (nn.DataParallel, {training.per_device_train_batch_size} "
        "each); CUDA_VISIBLE_DEVICES=0 trains on one GPU at the per-device batch, and torchrun --nproc_per_node "
        f"{training.n_gpu} is data parallel that the pipeline tests (README: More than one GPU)."
    )


class _Parser(HfArgumentParser):
    """Raises ConfigError instead of printing usage and exiting, so every refusal looks alike."""

    def error(self, message):
        raise ConfigError(f"{message} (see --help)")


SETTINGS = (ExperimentArguments, TrainingArguments)
UNSET = object()  # the default of every setting in the parse that finds what was typed


def build_parser(method: Optional[str] = None) -> _Parser:
    """The parser whose --help shows the defaults a run starts from."""
    parser = _Parser(SETTINGS, allow_abbrev=False)
    parser.set_defaults(**DEFAULT_SETTINGS)
    if method is not None:
        parser.set_defaults(method=method)
    return parser


def typed_settings(argv: list[str]) -> dict:
    """The settings the user typed: the same parse with every default UNSET, so that what remains was typed."""
    parser = _Parser(SETTINGS, allow_abbrev=False)
    parser.set_defaults(**{f.name: UNSET for settings in SETTINGS for f in fields(settings)})
    return {name: value for name, value in vars(parser.parse_args(argv)).items() if value is not UNSET}


def layered_settings(method: str, lr_preset: str, recipe: dict, typed: dict) -> dict:
    """The module docstring's precedence: each layer overrides the one before; the library fills what none set."""
    if typed.keys() & set(PRECISIONS):
        recipe = {name: value for name, value in recipe.items() if name not in PRECISIONS}
    if typed.get("torch_compile") is False:  # TrainingArguments compiles whenever a mode is set, the recipe's too
        recipe = {name: value for name, value in recipe.items() if name not in COMPILE_SETTINGS}
    schedule = {"max_steps": -1, **DEFAULT_SETTINGS, **recipe, **typed}
    rate = tuned_learning_rate(method, schedule["num_train_epochs"], schedule["max_steps"])
    preset = {"learning_rate": rate} if lr_preset == "tuned" else {}
    return {**DEFAULT_SETTINGS, **preset, **recipe, **typed, "method": method}


def checkpoints_folder(results_dir: str) -> str:
    """Where each run's checkpoints go, a folder per run, unless --output_dir says otherwise."""
    return os.path.join(results_dir, "checkpoints")


def parse_args(argv: Optional[list[str]] = None, method: Optional[str] = None):
    """Returns (ExperimentArguments, TrainingArguments, recipe settings applied). Raises ConfigError."""
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = vars(build_parser(method).parse_args(argv))  # --help, unknown flags and unparsable values end here
    typed = typed_settings(argv)
    if method is not None and typed.get("method", method) != method:
        raise ConfigError(f"this script always runs '{method}'; use train_peft.py --method {typed['method']}.")
    if method is None and "method" not in typed:
        raise ConfigError(f"choose a method with --method ({', '.join(METHODS)}).")
    recipe = recipe_settings(chosen["recipe"], None if chosen["use_cpu"] else gpu_support())
    values = layered_settings(chosen["method"], chosen["lr_preset"], recipe, typed)
    if values.get("bf16_frozen_weights") and not values.get("bf16"):
        if "bf16_frozen_weights" in typed:
            raise ConfigError("--bf16_frozen_weights needs --bf16: without autocast, fp32 inputs meet bf16 weights.")
        values["bf16_frozen_weights"] = False  # the recipe's choice follows the user's --bf16 False
    if chosen["resume"] and chosen["run_name"] is None:
        raise ConfigError("--resume needs the --run_name of the run to continue.")
    values.setdefault("run_name", default_run_name(values["method"]))
    if not RUN_NAME.fullmatch(values["run_name"]):
        raise ConfigError(f"--run_name {values['run_name']!r} must be a plain file name (letters, digits, . _ + = -).")
    values.setdefault("output_dir", os.path.join(checkpoints_folder(chosen["results_dir"]), values["run_name"]))

    experiment, training = _build(values)
    _check_schedule(training)
    return experiment, training, recipe


def _build(values):
    ours = {f.name for f in fields(ExperimentArguments)}
    try:
        experiment = ExperimentArguments(**{k: v for k, v in values.items() if k in ours})
        training = TrainingArguments(**{k: v for k, v in values.items() if k not in ours})
    except ConfigError:
        raise
    except (ValueError, TypeError) as error:  # TrainingArguments' own checks
        raise ConfigError(str(error).strip().splitlines()[0]) from None
    return experiment, training


def _check_schedule(training):
    if not (training.learning_rate > 0 and math.isfinite(training.learning_rate)):
        raise ConfigError(f"--learning_rate must be positive (got {training.learning_rate}).")
    if training.max_steps <= 0 and not (training.num_train_epochs > 0 and math.isfinite(training.num_train_epochs)):
        raise ConfigError(f"--num_train_epochs must be positive (got {training.num_train_epochs}).")
    if training.per_device_train_batch_size < 1 or training.per_device_eval_batch_size < 1:
        raise ConfigError("batch sizes must be at least 1.")


def refuse_flags(script: str, train_flags: list[str], owned: tuple[str, ...]):
    """A grid script sets some train flags for each run itself; typing one of them is a mistake, not a wish."""
    for flag in owned:
        if any(item == flag or item.startswith(flag + "=") for item in train_flags):
            raise ConfigError(f"{script} sets {flag} itself.")
