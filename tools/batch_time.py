"""Host time of one training batch in the training loop's thread, as the pipeline's Trainer serves it: the
collator the pipeline used (DataCollatorWithPadding) and its own (data_loader.PaddingCollator), each with no
loader workers, where the loop's thread collates, and with two, where it receives the workers' batches.

    python tools/batch_time.py --model_name_or_path $MINILM --data_dir $SST2 \
        --output results/reference/batch-time-cpu/batch_time.json

SST-2's training sentences in order, tokenized as the pipeline does, batches of 16 padded to multiples of 16
(the fast recipe's on a GPU). Times next() on the Trainer's train data loader, after an untimed --warmup, with
a busy wait of --gap_ms between batches standing in for the step, so that workers have the next batch ready
and what is timed is what the loop's thread pays. One torch thread; no pinning, as on a CPU (on a GPU each
batch is also pinned). Only the model's forward signature matters to the loader: a tiny BERT stands in.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch
from transformers import AutoTokenizer, BertForSequenceClassification, DataCollatorWithPadding

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from config import parse_args  # noqa: E402
from data_loader import PaddingCollator, data_source, load_sst2, tokenize  # noqa: E402
from experiment import build_trainer  # noqa: E402
from models import tiny_bert_config  # noqa: E402
from results import write_measurements  # noqa: E402
from utils import environment  # noqa: E402

COLLATORS = {"DataCollatorWithPadding": DataCollatorWithPadding, "PaddingCollator": PaddingCollator}
MULTIPLE = 16  # the fast recipe's pad_to_multiple_of on a GPU


def ms_per_batch(trainer, warmup, batches, gap_ms, repeats):
    """The median over `repeats` rounds of `batches` of the mean time of next(), after `warmup` untimed."""
    loader = iter(trainer.get_train_dataloader())
    for _ in range(warmup):
        next(loader)
    rounds = []
    for _ in range(repeats):
        spent = 0.0
        for _ in range(batches):
            started = time.perf_counter()
            next(loader)
            spent += time.perf_counter() - started
            until = time.perf_counter() + gap_ms / 1000
            while time.perf_counter() < until:  # busy, as a step is: sleeping would hand the workers the core
                pass
        rounds.append(1000 * spent / batches)
    return statistics.median(rounds)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_name_or_path", required=True, help="A local folder with the tokenizer.")
    parser.add_argument("--model_name", default="sentence-transformers/all-MiniLM-L6-v2", help="Its name.")
    parser.add_argument("--data_dir", required=True, help="The SST-2 folder.")
    parser.add_argument("--workers", default="0,2", help="Comma-separated loader worker counts.")
    parser.add_argument("--warmup", type=int, default=50, help="Untimed batches first (workers start).")
    parser.add_argument("--batches", type=int, default=200, help="Timed batches per round.")
    parser.add_argument("--repeats", type=int, default=5, help="Rounds per configuration; the median is kept.")
    parser.add_argument("--gap_ms", type=float, default=10.0, help="Busy wait between batches, for the step.")
    parser.add_argument("--output", help="Where the JSON goes; default: print only.")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path)
    batches = args.warmup + args.repeats * args.batches
    train = load_sst2(args.data_dir)["train"]
    if len(train) < 16 * batches:
        parser.error(f"{args.data_dir} has {len(train)} training sentences; this timing reads {16 * batches}.")
    train_set, _ = tokenize(train.select(range(16 * batches)), tokenizer, 128, False)
    rows = []
    for workers in (int(count) for count in args.workers.split(",")):
        for name, collator in COLLATORS.items():
            with tempfile.TemporaryDirectory() as scratch:
                flags = [
                    *("--method full --use_cpu --eval_strategy no --train_sampling_strategy sequential".split()),
                    *("--pad_to_multiple_of", str(MULTIPLE), "--dataloader_num_workers", str(workers)),
                    *("--max_steps", str(batches), "--output_dir", scratch, "--results_dir", scratch),
                ]
                experiment, training, _ = parse_args(flags)
                model = BertForSequenceClassification(tiny_bert_config(len(tokenizer)))
                trainer = build_trainer(experiment, training, model, tokenizer, train_set)
                trainer.data_collator = collator(tokenizer, pad_to_multiple_of=MULTIPLE)
                ms = ms_per_batch(trainer, args.warmup, args.batches, args.gap_ms, args.repeats)
            rows.append({"collator": name, "workers": workers, "ms_per_batch": round(ms, 4)})
            print(f"{name:24s} {workers} workers: {ms:.3f} ms per batch in the loop's thread", flush=True)
    if args.output:
        write_measurements(
            args.output,
            "batch_time",
            "tools/batch_time.py",
            argv,
            args.model_name,
            rows,
            environment(),
            data=data_source(args.data_dir),
            batch_size=16,
            pad_to_multiple_of=MULTIPLE,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
