"""Classify sentences with a run's saved model.

    python predict.py --model results/models/<run_name> "a gorgeous, witty film" "a dull mess"
    python predict.py --model DIR --input sentences.txt --output predictions.csv

--input takes one sentence per line, or a TSV, CSV, JSON or JSON Lines file with a `sentence` column
(SST-2's own files work). With --output, writes the columns sentence,label,score (the label's name and
its probability); without it, prints a table. Where the file has a `label` column (0/1 as in SST-2's dev.tsv,
0.0/1.0 as pandas writes them, or negative/positive), it also prints the accuracy against it. A peft adapter
loads onto the base model that its adapter_config.json names; --base_model_name_or_path points elsewhere, for
instance at a local folder.
"""

import argparse
import csv
import json
import os
import sys
from typing import Optional

import torch
from transformers.utils import logging as hf_logging

from models import LABELS, ModelError, load_for_prediction


class InputError(ValueError):
    """Sentences that cannot be read. The message names the file."""


def read_sentences(path) -> tuple[list[str], Optional[list]]:
    """The sentences, and the file's `label` column as it is written, or None where it has none."""
    if not os.path.isfile(path):
        raise InputError(f"--input {path} is not a file.")
    extension = os.path.splitext(path)[1].lower()
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            if extension in (".tsv", ".csv"):  # GLUE's TSVs are unquoted: a sentence may start with a quote
                quoting = csv.QUOTE_NONE if extension == ".tsv" else csv.QUOTE_MINIMAL
                rows = list(csv.DictReader(handle, delimiter="\t" if extension == ".tsv" else ",", quoting=quoting))
            elif extension == ".jsonl":
                rows = [json.loads(line) for line in handle if line.strip()]
            elif extension == ".json":
                rows = json.load(handle)
            else:
                sentences = [line.rstrip("\r\n") for line in handle if line.strip()]
                rows = None
    except (UnicodeDecodeError, json.JSONDecodeError, csv.Error) as error:
        raise InputError(f"{path} could not be read ({type(error).__name__}): save it as UTF-8 text.") from None
    labels = None
    if rows is not None:
        if not isinstance(rows, list) or (rows and not all(isinstance(r, dict) and "sentence" in r for r in rows)):
            raise InputError(f"{path} has no 'sentence' column.")
        sentences = [str(row["sentence"]) for row in rows]
        if rows and all("label" in row for row in rows):
            labels = [row["label"] for row in rows]
    if not sentences:
        raise InputError(f"{path} holds no sentences.")
    return sentences, labels


LABEL_NUMBERS = {name: number for number, name in LABELS.items()}


def label_number(label) -> Optional[int]:
    """0 or 1 from a label as files write it: 0/1, 0.0/1.0 (pandas, where a column had a gap), or the name."""
    text = str(label).strip().lower()
    if text in LABEL_NUMBERS:
        return LABEL_NUMBERS[text]
    try:
        number = float(text)
    except ValueError:
        return None
    return int(number) if number in (0, 1) else None


def accuracy_line(predictions, labels, path) -> str:
    """How many predictions match the file's labels, in the words a run uses for its dev accuracy."""
    numbers = [label_number(label) for label in labels]
    if None in numbers:
        unknown = str(labels[numbers.index(None)]).strip()
        return f"no accuracy: {path}'s label column holds {unknown!r}, where 0, 1, negative or positive were expected"
    correct = sum(LABELS[number] == name for number, (name, _) in zip(numbers, predictions))
    return f"accuracy {100 * correct / len(numbers):.2f}% ({correct}/{len(numbers)}) against {path}'s labels"


@torch.no_grad()
def classify(model, tokenizer, sentences, max_length, batch_size=128):
    """[(label name, probability)] for each sentence, in order."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = model.to(device).eval()
    names = model.config.id2label
    results = []
    for start in range(0, len(sentences), batch_size):
        batch = tokenizer(
            sentences[start : start + batch_size],
            truncation=True,
            max_length=max_length,
            padding=True,
            return_tensors="pt",
        ).to(device)
        probabilities = model(**batch).logits.float().softmax(dim=-1)
        scores, labels = probabilities.max(dim=-1)
        results += [(names[int(label)], float(score)) for label, score in zip(labels, scores)]
    return results


def write_output(path, sentences, predictions):
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sentence", "label", "score"])
        for sentence, (label, score) in zip(sentences, predictions):
            writer.writerow([sentence, label, f"{score:.6f}"])


def print_table(sentences, predictions):
    print(f"{'label':<9} {'score':>6}  sentence")
    for sentence, (label, score) in zip(sentences, predictions):
        print(f"{label:<9} {score:>6.3f}  {sentence}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("sentences", nargs="*", help="sentences to classify")
    parser.add_argument("--model", required=True, help="a run's saved model: results/models/<run_name>")
    parser.add_argument("--input", help="a file of sentences: one per line, or TSV/CSV/JSON with a 'sentence' column")
    parser.add_argument("--output", help="write sentence,label,score to this CSV file instead of printing")
    parser.add_argument("--base_model_name_or_path", help="load a peft adapter onto this base model instead")
    parser.add_argument("--batch_size", type=int, default=128, help="sentences per forward pass")
    args = parser.parse_args(argv)
    try:
        if bool(args.sentences) == bool(args.input):
            raise InputError("give sentences on the command line or --input FILE (one of the two).")
        sentences, labels = read_sentences(args.input) if args.input else (args.sentences, None)
        hf_logging.disable_progress_bar()  # the output is the table: no bar for loading the weights above it
        model, tokenizer, info = load_for_prediction(args.model, args.base_model_name_or_path)
    except (InputError, ModelError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    predictions = classify(model, tokenizer, sentences, info.get("max_length", 512), args.batch_size)
    if args.output:
        write_output(args.output, sentences, predictions)
        print(f"{len(sentences)} sentences -> {args.output}")
    else:
        print_table(sentences, predictions)
    if labels is not None:
        print(accuracy_line(predictions, labels, args.input))
    return 0


if __name__ == "__main__":
    sys.exit(main())
