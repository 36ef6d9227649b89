"""Does a step compute the same under both recipes? One forward and backward pass of the first 16 training sentences,
padded to --max_seq_length (the original recipe) and to the longest of them (the fast recipe on a CPU).

    python tools/same_step.py --model_name_or_path $MINILM --model_name sentence-transformers/all-MiniLM-L6-v2 \
        --data_dir $SST2 --output results/reference/same-step-minilm/same_step.json

Eval mode: dropout would draw its masks for the padded shape, so two paddings would draw different masks, as two
seeds do. Prints and writes, per method, the loss of each padding, and for each trainable tensor the largest
difference between its two gradients relative to its largest gradient. A tensor whose gradient is zero in exact
arithmetic (BERT's key biases: softmax ignores a shift shared by every key) is listed apart, with its size.
tests/test_recipes.py checks the same property on the tiny model.
"""

import argparse
import csv
import os
import sys

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from config import ExperimentArguments  # noqa: E402
from methods import apply_method  # noqa: E402
from models import longest_input  # noqa: E402
from results import write_measurements  # noqa: E402
from utils import environment  # noqa: E402

ZERO = 1e-8  # a tensor's largest gradient below this is zero up to rounding: relative differences mean nothing


def first_sentences(data_dir, count):
    with open(os.path.join(data_dir, "train.tsv"), encoding="utf-8", newline="") as handle:
        rows = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)  # GLUE's TSVs are unquoted
        rows = [row for _, row in zip(range(count), rows)]
    return [row["sentence"] for row in rows], torch.tensor([int(row["label"]) for row in rows])


def gradients(model, batch, labels):
    model.zero_grad()
    output = model(**batch, labels=labels)
    output.loss.backward()
    return output.loss.item(), {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}


def compare(method, args, tokenizer, sentences, labels):
    torch.manual_seed(0)  # the new classifier head: the same for both paddings, since one model takes both
    model = AutoModelForSequenceClassification.from_pretrained(args.model_name_or_path, num_labels=2)
    settings = ExperimentArguments(method=method, max_seq_length=args.max_seq_length)
    model = apply_method(model, method, settings).eval()
    length = longest_input(model, settings)  # as a run would: room for the virtual tokens in the position table
    features = [tokenizer(s, truncation=True, max_length=length) for s in sentences]
    padded = DataCollatorWithPadding(tokenizer, padding="max_length", max_length=length)(features)
    longest = DataCollatorWithPadding(tokenizer)(features)
    loss_padded, padded_grads = gradients(model, padded, labels)
    loss_longest, longest_grads = gradients(model, longest, labels)
    relative, zero = {}, {}
    for name, reference in padded_grads.items():
        scale = reference.abs().max().item()
        if scale < ZERO:
            zero[name] = max(scale, longest_grads[name].abs().max().item())
        else:
            relative[name] = (longest_grads[name] - reference).abs().max().item() / scale
    worst = max(relative, key=relative.get)
    return {
        "method": method,
        "widths": [padded["input_ids"].shape[1], longest["input_ids"].shape[1]],
        "loss_padded": loss_padded,
        "loss_longest": loss_longest,
        "loss_difference": abs(loss_padded - loss_longest),
        "trainable_tensors": len(padded_grads),
        "max_relative_gradient_difference": relative[worst],
        "worst_tensor": worst,
        "zero_gradient_tensors": zero,
    }


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_name_or_path", required=True, help="a local model folder, or a Hub id")
    parser.add_argument("--model_name", help="how the output names the model (default: the folder's name)")
    parser.add_argument("--data_dir", required=True, help="a folder with GLUE SST-2's train.tsv")
    parser.add_argument("--sentences", type=int, default=16, help="how many of the first training sentences")
    parser.add_argument("--max_seq_length", type=int, default=128, help="the original recipe's padded length")
    parser.add_argument("--output", help="write the JSON here too")
    args = parser.parse_args(argv)
    tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path)
    sentences, labels = first_sentences(args.data_dir, args.sentences)
    rows = [compare(method, args, tokenizer, sentences, labels) for method in ("full", "prefix")]
    print("| method | widths | loss difference | max relative gradient difference | zero-gradient tensors |")
    print("|---|---|---|---|---|")
    for row in rows:
        zero = ", ".join(f"{name} ({size:.1e})" for name, size in row["zero_gradient_tensors"].items()) or "none"
        print(
            f"| {row['method']} | {row['widths'][0]} vs {row['widths'][1]} | {row['loss_difference']:.1e} "
            f"| {row['max_relative_gradient_difference']:.1e} ({row['worst_tensor']}) | {zero} |"
        )
    if args.output:
        write_measurements(
            args.output,
            "same_step",
            "tools/same_step.py",
            argv,
            args.model_name or os.path.basename(os.path.normpath(args.model_name_or_path)),
            rows,
            {k: v for k, v in environment().items() if k != "git_commit"},
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
