"""Training-step speed and memory of each method under each recipe, side by side, with no download.

    python bench.py                      # BERT-base architecture (BertConfig(), random init), GPU
    python bench.py --quick --use_cpu    # a small model and few steps, to check the script on a CPU

Speed and memory of BERT-base do not depend on its weight values, so a random init measures
bert-base-uncased. Each configuration runs the real pipeline (config.parse_args, methods, the
pipeline's Trainer with the recipe's settings and collator) on sentences whose lengths follow SST-2's
train set: read from --data_dir (with --model_name_or_path's tokenizer), else drawn from
SST2_TRAIN_LENGTHS. Prints a table and writes results/bench/bench-<UTC time>.json.
"""

import cProfile
import functools
import gc
import itertools
import math
import os
import pstats
import random
import re
import shlex
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

import torch
from datasets import Dataset
from torch._dynamo.utils import compilation_time_metrics, counters
from torch.autograd import DeviceType
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    BertTokenizer,
    HfArgumentParser,
    TrainerCallback,
)

from config import ConfigError, parse_args
from data_loader import load_sst2, tokenize
from experiment import build_trainer, partition_for_memory, sentences_per_step
from methods import METHODS, apply_method
from metrics import held_memory_mb, peak_memory_mb, reset_peak_memory
from models import PROBLEM_TYPE, longest_input, tiny_bert_config
from results import utc_stamp, write_json_atomic
from utils import environment

# Word pieces per sentence (with [CLS] and [SEP], bert-base-uncased vocabulary) over all 67,349
# sentences of GLUE SST-2's train.tsv: mean 13.3, median 10, longest 66.
SST2_TRAIN_LENGTHS = {
    3: 1978,
    4: 5322,
    5: 6065,
    6: 5345,
    7: 4749,
    8: 4155,
    9: 3713,
    10: 3267,
    11: 2947,
    12: 2650,
    13: 2413,
    14: 2138,
    15: 1950,
    16: 1777,
    17: 1661,
    18: 1515,
    19: 1373,
    20: 1285,
    21: 1132,
    22: 1106,
    23: 1046,
    24: 909,
    25: 820,
    26: 806,
    27: 733,
    28: 692,
    29: 628,
    30: 538,
    31: 491,
    32: 442,
    33: 448,
    34: 400,
    35: 337,
    36: 304,
    37: 286,
    38: 242,
    39: 195,
    40: 203,
    41: 192,
    42: 155,
    43: 148,
    44: 130,
    45: 89,
    46: 82,
    47: 85,
    48: 73,
    49: 55,
    50: 42,
    51: 50,
    52: 40,
    53: 36,
    54: 19,
    55: 21,
    56: 22,
    57: 15,
    58: 8,
    59: 6,
    60: 3,
    61: 2,
    62: 5,
    63: 5,
    64: 1,
    65: 2,
    66: 2,
}
SST2_TRAIN_SENTENCES = 67_349
BARE_LOOP = "bare loop"  # a --variants entry: the recipe's step through bare_loop instead of trainer.train()
REFERENCE_LOOP = "reference loop"  # a --variants entry: the GPU issue's reference step (reference_loop)
REFERENCE_LOOP_DYNAMIC = "reference loop dynamic"  # the same, compiled for symbolic shapes as the recipe compiles
REFERENCE_LENGTH = 64  # that reference ran BERT-base on batches of [16, 64] tokens


@dataclass
class BenchArguments:
    methods: str = field(default="full,prefix", metadata={"help": "Comma-separated methods to measure."})
    recipes: str = field(
        default="original,fast", metadata={"help": "Comma-separated recipes; the first is the baseline."}
    )
    variants: Optional[str] = field(
        default=None,
        metadata={
            "help": "Semicolon-separated sets of train flags, each measured as one more row of the fast recipe "
            "with those flags on top, e.g. '--torch_compile_dynamic False;--torch_compile_mode default'; "
            f"'{BARE_LOOP}' steps the fast recipe through a plain PyTorch loop instead of the Trainer's (bare_loop); "
            f"'{REFERENCE_LOOP}' times the GPU issue's reference step on the recipe's model (reference_loop); "
            f"'{REFERENCE_LOOP_DYNAMIC}' the same step compiled for symbolic shapes, as the recipe compiles."
        },
    )
    model_name_or_path: Optional[str] = field(
        default=None,
        metadata={
            "help": "A local model folder; default: BertConfig() (bert-base-uncased's architecture), random init."
        },
    )
    data_dir: Optional[str] = field(
        default=None,
        metadata={
            "help": "SST-2 folder whose train sentences set the lengths (needs a tokenizer in --model_name_or_path)."
        },
    )
    warmup_steps: int = field(default=50, metadata={"help": "Steps before timing starts (compilation happens here)."})
    measure_steps: int = field(default=300, metadata={"help": "Timed steps."})
    batch_size: int = field(default=16, metadata={"help": "Per-device batch size, as in the original."})
    epochs: int = field(default=10, metadata={"help": "Epochs of the protocol whose wall time is projected."})
    quick: bool = field(
        default=False, metadata={"help": "A small BERT and few steps: checks the script in a minute or two."}
    )
    use_cpu: bool = field(default=False, metadata={"help": "Run on the CPU even if a GPU is present."})
    results_dir: str = field(default=os.path.join("results", "bench"), metadata={"help": "Where the JSON goes."})
    seed: int = field(default=0, metadata={"help": "Seed for lengths, tokens and weights."})
    profile: bool = field(
        default=False,
        metadata={
            "help": "Profile --profile_steps steps after the warm-up of each configuration (a table and a Chrome "
            "trace); the profiler slows the timed steps, so time without it."
        },
    )
    profile_steps: int = field(default=10, metadata={"help": "Steps in the profiler's window."})

    def __post_init__(self):
        if self.quick:
            self.warmup_steps, self.measure_steps = min(self.warmup_steps, 5), min(self.measure_steps, 15)
        for name in ("warmup_steps", "measure_steps", "batch_size", "epochs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be at least 1.")
        if self.data_dir and not self.model_name_or_path:
            raise ConfigError("--data_dir needs --model_name_or_path: its tokenizer turns sentences into word pieces.")
        unknown = [m for m in self.methods.split(",") if m not in METHODS]
        if unknown:
            raise ConfigError(f"unknown method {unknown[0]!r}; choose from {', '.join(METHODS)}.")


class StepTimer(TrainerCallback):
    """Wall time of the warm-up steps and of the timed steps; the device is synced only at the edges."""

    def __init__(self, warmup_steps):
        self.warmup_steps = warmup_steps
        self.begin = self.warm = self.end = None

    @staticmethod
    def _now():
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_train_begin(self, args, state, control, **kwargs):
        self.begin = self._now()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.warmup_steps:
            self.warm = self._now()

    def on_train_end(self, args, state, control, **kwargs):
        self.end = self._now()


class StageTimer(TrainerCallback):
    """Wall time of each stage of the timed steps, read at the Trainer's own callbacks, with no sync.

    While the GPU waits on the host, as a step that launches CUDA graphs does, a stage's time is the host's work
    in it: where a host-bound step goes. On a CPU it includes the compute. The stages, in the Trainer's order:
    the batch (and the last step's logging) before on_step_begin; forward, backward and gradient clipping up to
    on_pre_optimizer_step; the optimizer's step up to on_optimizer_step; the scheduler and zero_grad up to
    on_step_end. With gradient accumulation, the batches after a step's first count in its forward-backward.
    A loop of our own (bare_loop, reference_loop) also splits that stage into its forward, backward and
    clipping (lap_part), where the Trainer has no callback."""

    STAGES = ("batch", "forward_backward_clip", "optimizer", "scheduler_zero_grad")

    def __init__(self, warmup_steps):
        self.warmup_steps = warmup_steps
        self.totals, self.steps, self.last, self.counting = dict.fromkeys(self.STAGES, 0.0), 0, None, False
        self.parts, self.part_last = {}, None

    def lap(self, stage):
        """Ends `stage` now; the first stage of a step is begin_step's."""
        now = time.perf_counter()
        if self.counting and self.last is not None:
            self.totals[stage] += now - self.last
        self.last = self.part_last = now

    def lap_part(self, part):
        """Ends `part` of the stage under way now, from the stage's start or the part before it."""
        now = time.perf_counter()
        if self.counting and self.part_last is not None:
            self.parts[part] = self.parts.get(part, 0.0) + now - self.part_last
        self.part_last = now

    def begin_step(self, steps_done):
        self.counting = steps_done >= self.warmup_steps
        self.lap("batch")

    def end_step(self):
        self.lap("scheduler_zero_grad")
        self.steps += self.counting

    def on_step_begin(self, args, state, control, **kwargs):
        self.begin_step(state.global_step)

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.lap("forward_backward_clip")

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.lap("optimizer")

    def on_step_end(self, args, state, control, **kwargs):
        self.end_step()

    def ms_per_step(self):
        return (
            {stage: round(1000 * total / self.steps, 3) for stage, total in self.totals.items()} if self.steps else None
        )

    def ms_per_part(self):
        """The parts' host ms per step, in the order they ran; None where none was timed (the Trainer's loop)."""
        return (
            {part: round(1000 * total / self.steps, 3) for part, total in self.parts.items()}
            if self.steps and self.parts
            else None
        )


class StepProfiler(TrainerCallback):
    """torch.profiler over a few steps after the warm-up: where a step's time goes, host and device.

    Leaves `summary`: the device's kernel milliseconds per step and the share of the window they fill (GPU busy),
    host milliseconds per step (CPU time inside the profiled operations) and the operations that take most of
    it, with their calls per step, host operations per step (nested ones too: host time spread over thousands
    of small operations reads differently from a few slow ones), kernel launches per step (a CUDA graph's
    replay counts once) and host-device synchronisations per step.
    Then cProfile over as many steps again, for the Python functions with the most host time: the torch
    profiler sees operations, not the Python between them (the first H100 profile left 89% of its host time
    outside its table's rows).
    """

    LAUNCHES = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx", "cudaGraphLaunch")
    SYNCS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy")
    TOP_HOST = 15  # operations with the most host time, kept in the summary

    def __init__(self, warmup_steps, trace_path, steps=10):
        activities = [torch.profiler.ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        schedule = torch.profiler.schedule(wait=max(0, warmup_steps - 1), warmup=1, active=steps, repeat=1)
        self.trace_path, self.steps, self.warmup_steps = trace_path, steps, warmup_steps
        self.profiler = torch.profiler.profile(activities=activities, schedule=schedule)
        self.window = [None, None]
        self.summary = None
        self.python, self.python_steps = cProfile.Profile(), 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.profiler.start()

    def on_step_end(self, args, state, control, **kwargs):
        self.profiler.step()
        if state.global_step in (self.warmup_steps, self.warmup_steps + self.steps):
            self.window[state.global_step != self.warmup_steps] = StepTimer._now()
        python_window = self.warmup_steps + self.steps, self.warmup_steps + 2 * self.steps
        if state.global_step == python_window[0]:
            self.python.enable()
        elif python_window[0] < state.global_step <= python_window[1]:
            self.python_steps += 1
            if state.global_step == python_window[1]:
                self.python.disable()

    def on_train_end(self, args, state, control, **kwargs):
        self.python.disable()
        self.profiler.stop()
        self.profiler.export_chrome_trace(self.trace_path)
        averages = self.profiler.key_averages()
        if torch.cuda.is_available():
            print(averages.table(sort_by="self_cuda_time_total", row_limit=25))
        print(averages.table(sort_by="self_cpu_time_total", row_limit=25))  # a host-bound step: where it goes
        print(f"profile of {self.steps} steps -> {self.trace_path} (open in Perfetto, ui.perfetto.dev)")
        self.summary = self.summarise(averages)
        if self.python_steps:
            pstats.Stats(self.python).sort_stats("tottime").print_stats(self.TOP_HOST)
            self.summary["python_steps"] = self.python_steps
            self.summary["top_python_ms_per_step"] = top_python(self.python, self.python_steps, self.TOP_HOST)

    def summarise(self, averages):
        wall_ms = 1000 * (self.window[1] - self.window[0]) if None not in self.window else None
        count = lambda names: sum(e.count for e in averages if e.key in names) / self.steps  # noqa: E731
        on_gpu = torch.cuda.is_available()
        kernel_ms = kernel_time_us(averages) / 1000
        host = sorted(averages, key=lambda e: e.self_cpu_time_total, reverse=True)[: self.TOP_HOST]
        return {
            "steps": self.steps,
            "ms_per_step": round(wall_ms / self.steps, 3) if wall_ms else None,
            "kernel_ms_per_step": round(kernel_ms / self.steps, 3) if on_gpu else None,
            "gpu_busy_fraction": round(min(1.0, kernel_ms / wall_ms), 3) if on_gpu and wall_ms else None,
            "host_ms_per_step": round(sum(e.self_cpu_time_total for e in averages) / 1000 / self.steps, 3),
            "kernel_launches_per_step": round(count(self.LAUNCHES), 1) if on_gpu else None,
            "syncs_per_step": round(count(self.SYNCS), 1) if on_gpu else None,
            "host_ops_per_step": round(sum(e.count for e in averages if e.device_type == DeviceType.CPU) / self.steps),
            "top_host_ms_per_step": {e.key[:80]: round(e.self_cpu_time_total / 1000 / self.steps, 3) for e in host},
            "top_host_calls_per_step": {e.key[:80]: round(e.count / self.steps, 1) for e in host},
            "trace": os.path.basename(self.trace_path),
        }


def top_python(profile, steps, count):
    """{function: [own ms, ms with its callees] per step} of the `count` functions with the most own time."""
    stats = pstats.Stats(profile).stats  # (file, line, name) -> (primitive calls, calls, own s, cumulative s, callers)
    top = sorted(stats.items(), key=lambda item: item[1][2], reverse=True)[:count]
    where = lambda file: file.split("site-packages" + os.sep)[-1] if "site-packages" in file else os.path.basename(file)  # noqa: E731
    return {
        (name if file == "~" else f"{where(file)}:{line}({name})"): [  # "~": a built-in, such as a torch op
            round(1000 * own / steps, 3),
            round(1000 * cumulative / steps, 3),
        ]
        for (file, line, name), (_, _, own, cumulative, _) in top
    }


def kernel_time_us(events):
    """Time the device spent in kernels and copies, in microseconds: the events on the device that are not
    annotations. The profiler mirrors each annotation (a ProfilerStep, the optimizer step, a compiled graph's
    call) on the device's timeline, spanning the kernels under it, so counting those too counts the kernels
    twice or more (an H100 profile read GPU busy 0.691 where the kernels took 0.124: results/gpu_report.json).
    The same rule as the total of torch's own profiler table."""
    return sum(
        e.self_device_time_total
        for e in events
        if str(getattr(e, "device_type", "")).endswith("CUDA") and not getattr(e, "is_user_annotation", False)
    )


def compiled_summary(phases=12):
    """What torch.compile made of a configuration since measure cleared torch's counters and timers: dynamo's
    graphs and graph breaks; the graphs inductor ran without the CUDA graphs the mode asked for (cudagraph_skips:
    each such graph launches its kernels one by one, host work per kernel; inductor says why only in its logs);
    the pieces of the graphs inductor cut around work that CUDA graphs cannot hold, such as CPU work or a copy
    between devices (cudagraph_partitions, 0 where none was cut: each piece is a graph of its own to replay, and
    the work between them runs op by op); and where the compile's time went, by torch's own timers: seconds and
    calls of the `phases` longest (nested, so they overlap: dynamo's tracing, AOTAutograd's joint graph,
    inductor's forward and backward, the wait for kernel compiles). A warm-up much longer than
    "_compile.compile_inner" spent its time outside the compiler: CUDA graphs recorded, first steps run."""
    longest = sorted(compilation_time_metrics.items(), key=lambda item: sum(item[1]), reverse=True)[:phases]
    return {
        "graphs": counters["stats"]["unique_graphs"],
        "graph_breaks": sum(counters["graph_break"].values()),
        "cudagraph_skips": counters["inductor"]["cudagraph_skips"],
        "cudagraph_partitions": counters["inductor"]["cudagraph_partitions"],
        "phases_s": {name: [round(sum(times), 2), len(times)] for name, times in longest},
    }


def model_factory(bench):
    """A function that builds a fresh model with the same weights each time."""
    if bench.model_name_or_path:
        return lambda: AutoModelForSequenceClassification.from_pretrained(
            bench.model_name_or_path, num_labels=2, problem_type=PROBLEM_TYPE
        )
    config = BertConfig(num_labels=2, problem_type=PROBLEM_TYPE)
    if bench.quick:
        config = tiny_bert_config(
            config.vocab_size, hidden_size=128, intermediate_size=256, max_position_embeddings=512
        )
    return lambda: BertForSequenceClassification(config)


def placeholder_tokenizer(vocab_size, folder):
    """A WordPiece tokenizer with the model's vocabulary size, for padding synthetic token ids."""
    path = os.path.join(folder, "vocab.txt")
    with open(path, "w") as handle:
        special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        handle.write("\n".join(special + [f"w{i}" for i in range(vocab_size - len(special))]) + "\n")
    return BertTokenizer(vocab=path)


def synthetic_sentences(count, tokenizer, rng):
    lengths = rng.choices(list(SST2_TRAIN_LENGTHS), weights=list(SST2_TRAIN_LENGTHS.values()), k=count)
    ids = [
        [tokenizer.cls_token_id]
        + [rng.randrange(5, tokenizer.vocab_size) for _ in range(n - 2)]
        + [tokenizer.sep_token_id]
        for n in lengths
    ]
    return Dataset.from_dict(
        {"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids], "label": [rng.randint(0, 1) for _ in ids]}
    )


def primed(sentences, batch_size, multiple, repeats=3, seed=0):
    """(sentences reordered, warm-up steps): the first batches reach every length bucket (a multiple of
    `multiple` tokens) `repeats` times each, each batch a sentence of its bucket among shorter ones, so that
    with sequential sampling every CUDA graph is recorded, and every compile done, before timing starts."""
    rng = random.Random(seed)
    lengths = [len(ids) for ids in sentences["input_ids"]]
    bucket_of = [math.ceil(n / multiple) * multiple for n in lengths]
    by_bucket = {}
    for index, bucket in enumerate(bucket_of):
        by_bucket.setdefault(bucket, []).append(index)
    shortest = by_bucket[min(by_bucket)]
    order, used = [], set()
    for bucket in sorted(by_bucket):
        for _ in range(repeats):
            batch = [rng.choice(by_bucket[bucket])] + [rng.choice(shortest) for _ in range(batch_size - 1)]
            order += batch
            used.update(batch)
    order += [i for i in range(len(lengths)) if i not in used]
    return sentences.select(order), len(by_bucket) * repeats


def pad_to_max_length(dataset, tokenizer, max_length):
    def pad(row):
        ids = (
            row["input_ids"][: max_length - 1] + [tokenizer.sep_token_id]
            if len(row["input_ids"]) > max_length
            else row["input_ids"]
        )
        padding = max_length - len(ids)
        return {"input_ids": ids + [tokenizer.pad_token_id] * padding, "attention_mask": [1] * len(ids) + [0] * padding}

    return dataset.map(pad)


def timed_steps(batches, warmup_steps, stages, forward_backward, optimizer, scheduler=None):
    """A plain training loop over `batches`, timed by `stages` at the Trainer's four points. Returns (start, end of
    the warm-up, end), read as StepTimer reads them."""
    begin = warm = StepTimer._now()
    for done, batch in enumerate(batches):
        stages.begin_step(done)
        forward_backward(batch)
        stages.lap("forward_backward_clip")
        optimizer.step()
        stages.lap("optimizer")
        if scheduler is not None:
            scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        stages.end_step()
        if done + 1 == warmup_steps:
            warm = StepTimer._now()
    return begin, warm, StepTimer._now()


def bare_loop(trainer, warmup_steps, stages):
    """Trains the Trainer's model on its batches, with its optimizer and scheduler, in a plain PyTorch loop
    instead of trainer.train(): the step without the Trainer's loop around it, so that a row of it against the
    Trainer's row says how much host time that loop adds (a compiled loop without the Trainer, the GPU issue's
    reference, ran BERT-base in 5.3 ms per step on an H200).

    The Trainer's accelerator prepares the model as the Trainer's loop does (device, autocast, torch.compile),
    so the compiled graphs are the same. The step is the Trainer's: forward, backward, clipping at
    max_grad_norm, optimizer, scheduler, zero_grad, timed by `stages` at the same four points, with the forward,
    the backward and the clipping apart (StageTimer.lap_part). What it leaves out is the rest: callbacks,
    accelerate's wrappers around the optimizer and scheduler, the loss kept for logging, and train() at every
    step. Returns timed_steps' times.
    """
    args = trainer.args
    if args.gradient_accumulation_steps != 1:
        raise ConfigError("the bare loop takes one batch per step: --gradient_accumulation_steps 1.")
    loader = trainer.get_train_dataloader()  # the Trainer's sampler, collator, workers and device placement
    trainer.create_optimizer_and_scheduler(num_training_steps=args.max_steps)
    model = trainer.accelerator.prepare_model(trainer.model)
    trained = [parameter for parameter in trainer.model.parameters() if parameter.requires_grad]

    def forward_backward_clip(batch):
        loss = model(**batch).loss
        stages.lap_part("forward")
        loss.backward()
        stages.lap_part("backward")
        if args.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(trained, args.max_grad_norm)
            stages.lap_part("clipping")

    model.train()
    batches = itertools.islice(loader, args.max_steps)
    return timed_steps(batches, warmup_steps, stages, forward_backward_clip, trainer.optimizer, trainer.lr_scheduler)


def reference_batch(model, args):
    """reference_loop's one batch: random tokens, [batch size, 64] (fewer where the model has fewer positions)."""
    length = min(REFERENCE_LENGTH, model.config.max_position_embeddings)
    generator = torch.Generator().manual_seed(args.seed)
    size = args.per_device_train_batch_size
    batch = {
        "input_ids": torch.randint(model.config.vocab_size, (size, length), generator=generator),
        "labels": torch.randint(model.config.num_labels, (size,), generator=generator),
    }
    return {name: tensor.to(args.device) for name, tensor in batch.items()}


def reference_loop(trainer, warmup_steps, stages, dynamic=False):
    """The GPU issue's reference (5.3 ms per BERT-base step on an H200): the Trainer's model compiled on its own
    (torch.compile with the recipe's mode, for one fixed shape), under the recipe's bf16 autocast, with the
    recipe's optimizer stepping eagerly, on one batch already on the device (reference_batch) and at a constant
    rate: no data loader, clipping, scheduler, accelerate or Trainer, and torch's own split of the step between
    forward and backward (partition_for_memory). Its row, beside the bare loop's on the same card, says how far
    the pipeline's step is from that floor, and the floor itself depends on the card and its host. Timed by
    `stages` as bare_loop is; returns timed_steps' times.

    The issue's reference compiled for its one shape. `dynamic` compiles the same step for symbolic shapes, as
    the recipe compiles the pipeline's (one graph for every length bucket), still on the one batch: the row
    beside the other says what symbolic shapes alone cost a step on the card."""
    args, model = trainer.args, trainer.model
    if args.fp16:
        raise ConfigError("the reference loop runs bf16 or fp32: fp16 would need the Trainer's loss scaling.")
    batch = reference_batch(model, args)
    partition_for_memory(False)  # torch's own split of the step, as the reference compiled
    step = torch.compile(model, mode=args.torch_compile_mode, dynamic=dynamic) if args.torch_compile else model

    def forward_backward(batch):
        with torch.autocast(args.device.type, dtype=torch.bfloat16, enabled=args.bf16):
            loss = step(**batch).loss
        stages.lap_part("forward")
        loss.backward()
        stages.lap_part("backward")

    model.train()
    batches = itertools.repeat(batch, args.max_steps)
    return timed_steps(batches, warmup_steps, stages, forward_backward, trainer.create_optimizer())


LOOPS = {  # variants that step the recipe's model themselves
    BARE_LOOP: bare_loop,
    REFERENCE_LOOP: reference_loop,
    REFERENCE_LOOP_DYNAMIC: functools.partial(reference_loop, dynamic=True),
}


def measure(bench, method, recipe, variant, make_model, tokenizer, sentences, scratch, flags=(), eval_set=None):
    """One configuration's row. `flags` go before the variant's, and a variant of LOOPS steps the recipe's model
    through that loop. With `eval_set`, the first evaluation of it and the second are timed, for
    the projected wall time of the original's protocol."""
    loop = LOOPS.get(variant)
    steps = bench.warmup_steps + bench.measure_steps
    argv = [
        "--method",
        method,
        "--recipe",
        recipe,
        "--max_steps",
        str(steps),
        "--per_device_train_batch_size",
        str(bench.batch_size),
        "--eval_strategy",
        "no",
        "--logging_strategy",
        "no",
        "--save_strategy",
        "no",
        "--disable_tqdm",
        "True",
        "--seed",
        str(bench.seed),
        "--results_dir",
        scratch,
        "--output_dir",
        scratch,
    ]
    if bench.use_cpu:
        argv.append("--use_cpu")
    argv += [*flags, *([] if loop else shlex.split(variant or ""))]
    experiment, training, settings = parse_args(argv)
    ran = {**training.to_dict(), **asdict(experiment)}

    torch.manual_seed(bench.seed)
    model = apply_method(make_model(), method, experiment)
    max_length = longest_input(model, experiment)
    data = sentences.select(range(steps * bench.batch_size))
    if experiment.pad_to_max_length:
        data = pad_to_max_length(data, tokenizer, max_length)
    timer, stages = StepTimer(bench.warmup_steps), StageTimer(bench.warmup_steps)
    callbacks = [timer, stages]
    if bench.profile:
        os.makedirs(bench.results_dir, exist_ok=True)
        suffix = "-" + re.sub(r"[^A-Za-z0-9]+", "_", variant).strip("_") if variant else ""
        # gzipped: 20 fast steps of BERT-base's structure left a 27 MB trace on our CPU (1.7 MB gzipped), and
        # the GPU machine we borrow returns no file over 16 MiB
        trace = os.path.join(bench.results_dir, f"trace-{method}-{recipe}{suffix}.json.gz")
        callbacks.append(StepProfiler(bench.warmup_steps, trace, steps=min(bench.profile_steps, bench.measure_steps)))
    trainer = build_trainer(experiment, training, model, tokenizer, data, callbacks=callbacks)
    reset_peak_memory()
    counters.clear()  # torch.compile's counts and timers, for this configuration's compiled_summary
    compilation_time_metrics.clear()
    if loop:
        begin, warm, end = loop(trainer, bench.warmup_steps, stages)
    else:
        trainer.train()
        begin, warm, end = timer.begin, timer.warm, timer.end
    memory = peak_memory_mb()
    held = held_memory_mb(trainer.model, trainer.optimizer)
    ms_per_step = 1000 * (end - warm) / bench.measure_steps
    warmup_s = warm - begin
    eval_s = eval_first_s = None
    if eval_set is not None and not loop:  # the Trainer evaluates, not a training loop
        if experiment.pad_to_max_length:
            eval_set = pad_to_max_length(eval_set, tokenizer, max_length)
        started = StepTimer._now()
        # The Trainer evaluates its uncompiled model (trainer.model, not the compiled model_wrapped), so the first
        # evaluation compiles nothing: what it pays over the second is a first call's warm-up, once per run.
        trainer.evaluate(eval_set)
        eval_first_s = StepTimer._now() - started
        trainer.evaluate(eval_set)
        eval_s = StepTimer._now() - started - eval_first_s
    per_step = sentences_per_step(training)  # a variant may change the batch or accumulate gradients
    steps_per_epoch = math.ceil(SST2_TRAIN_SENTENCES / per_step)
    row = {
        "method": method,
        "recipe": recipe,
        "variant": variant,
        "ms_per_step": round(ms_per_step, 3),
        "warmup_s": round(warmup_s, 2),
        "compile_overhead_s": round(max(0.0, warmup_s - bench.warmup_steps * ms_per_step / 1000), 2),
        "sentences_per_step": per_step,
        "samples_per_s": round(1000 * per_step / ms_per_step, 1),
        **memory,
        "held_mb": held,  # weights and optimizer state, held between steps; and the gradients a step makes
        "eval_s": None if eval_s is None else round(eval_s, 3),
        "eval_first_s": None if eval_first_s is None else round(eval_first_s, 3),
        "projected_protocol_s": None  # a loop without evaluations, the Trainer's checkpoints and logs: no protocol
        if loop
        else round(
            warmup_s
            + (steps_per_epoch * bench.epochs - bench.warmup_steps) * ms_per_step / 1000
            + (eval_first_s or 0.0)
            + (bench.epochs - 1) * (eval_s or 0.0),
            1,
        ),
        "host_ms_per_stage": stages.ms_per_step(),
        "host_ms_per_part": stages.ms_per_part(),  # forward, backward, clipping: a loop of LOOPS times them
        "compiled": compiled_summary() if training.torch_compile else None,
        "settings": {**{name: ran[name] for name in settings}, "max_length": max_length},  # as run, variant included
    }
    if bench.profile:
        row["profile"] = callbacks[-1].summary
    del trainer, model
    gc.collect()
    torch._dynamo.reset()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return row


def recipe_label(recipe, variant):
    return f"{recipe} {variant}" if variant else recipe


def print_table(rows):
    width = max([26] + [len(recipe_label(row["recipe"], row.get("variant"))) for row in rows])
    header = (
        f"{'method':<8} {'recipe':<{width}} {'ms/step':>8} {'warm-up s':>9} {'samples/s':>9} {'peak MB':>8} "
        f"{'reserved MB':>11} {'10 epochs':>10} {'speed-up':>8}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        recipe = recipe_label(row["recipe"], row.get("variant"))
        if "error" in row:
            print(f"{row['method']:<8} {recipe:<{width}} failed: {row['error'][:80]}")
            continue
        memory = "n/a" if row["peak_memory_mb"] is None else f"{row['peak_memory_mb']:.0f}"
        reserved = "n/a" if row["peak_memory_reserved_mb"] is None else f"{row['peak_memory_reserved_mb']:.0f}"
        projected = "n/a" if row["projected_protocol_s"] is None else f"{row['projected_protocol_s'] / 60:.1f} min"
        speedup = f"{row['speedup']:.2f}x" if row.get("speedup") else "n/a"  # n/a: its baseline failed
        print(
            f"{row['method']:<8} {recipe:<{width}} {row['ms_per_step']:>8.2f} {row['warmup_s']:>9.1f} "
            f"{row['samples_per_s']:>9.0f} "
            f"{memory:>8} {reserved:>11} {projected:>10} {speedup:>8}"
        )


def main(argv=None) -> int:
    try:
        (bench,) = HfArgumentParser(BenchArguments).parse_args_into_dataclasses(args=argv)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    rng = random.Random(bench.seed)
    make_model = model_factory(bench)
    steps = bench.warmup_steps + bench.measure_steps
    with tempfile.TemporaryDirectory() as scratch:
        if bench.model_name_or_path:
            tokenizer = AutoTokenizer.from_pretrained(bench.model_name_or_path)
        else:
            tokenizer = placeholder_tokenizer(make_model().config.vocab_size, scratch)
        if bench.data_dir:
            train = load_sst2(bench.data_dir)["train"].shuffle(seed=bench.seed)
            sentences, _ = tokenize(
                train.select(range(min(len(train), steps * bench.batch_size))), tokenizer, 512, False
            )
            if len(sentences) < steps * bench.batch_size:
                print(
                    f"error: {bench.data_dir} has fewer than {steps * bench.batch_size} train sentences.",
                    file=sys.stderr,
                )
                return 2
        else:
            sentences = synthetic_sentences(steps * bench.batch_size, tokenizer, rng)

        rows = []
        recipes = [(r, None) for r in bench.recipes.split(",")]
        recipes += [("fast", v.strip()) for v in (bench.variants or "").split(";") if v.strip()]
        path = os.path.join(bench.results_dir, f"bench-{utc_stamp()}.json")
        for method in bench.methods.split(","):
            baseline = None
            for recipe, variant in recipes:
                label = f"{method} / {recipe_label(recipe, variant)}"
                print(f"measuring {label} ...", flush=True)
                try:
                    row = measure(bench, method, recipe, variant, make_model, tokenizer, sentences, scratch)
                    ms_per_sentence = row["ms_per_step"] / row["sentences_per_step"]
                    baseline = baseline or ms_per_sentence
                    row["speedup"] = round(baseline / ms_per_sentence, 3)
                    print(f"{label}: {row['ms_per_step']:.2f} ms/step, peak {row['peak_memory_mb']} MB", flush=True)
                except Exception as error:  # one broken configuration must not hide the others' numbers
                    print(f"{label} failed: {type(error).__name__}: {str(error).strip()[:500]}", flush=True)
                    message = f"{type(error).__name__}: {str(error).strip()[:2000]}"
                    row = {"method": method, "recipe": recipe, "variant": variant, "error": message}
                rows.append(row)
                # Rewritten after every row, so a run cut short still leaves its measurements.
                write_json_atomic(
                    path,
                    {
                        "schema_version": 1,
                        "kind": "bench",
                        "arguments": asdict(bench),
                        "rows": rows,
                        "environment": environment(),
                    },
                )

    print_table(rows)
    print(f"-> {path}")
    return 0 if all("error" not in row for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
