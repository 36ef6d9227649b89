"""GLUE SST-2, from the Hugging Face Hub or from local files, tokenized once, and padded into batches.

Evaluation uses GLUE's validation split (872 sentences): GLUE withholds the test labels.
Local files load as other tools write them: GLUE's unquoted TSVs, spreadsheet exports (a byte-order mark,
Windows line endings, quoted fields, semicolons), and pandas' csv, json (every orient that keeps column
names) and parquet, index column and float labels included. tests/test_data_loader.py has one file of each.
"""

import csv
import hashlib
import io
import json
import math
import os
import random
import re

import numpy as np
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Value, load_dataset
from transformers import DataCollatorWithPadding

SPLIT_NAMES = {"train": ("train",), "validation": ("dev", "validation")}
FORMATS = {".tsv": "csv", ".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
COLUMNS = ("sentence", "label")
OFFLINE_DATA = "a local folder with train.tsv and dev.tsv as --data_dir DIR"  # the way out when the Hub is unreachable


class DataError(ValueError):
    """Data that cannot be used. The message names the file and says what is wrong."""


def load_sst2(data_dir=None) -> DatasetDict:
    """Returns {'train', 'validation'} with exactly the columns 'sentence' and 'label' (0 or 1)."""
    if data_dir is None:
        splits = _load_from_hub()
        sources = {split: "GLUE SST-2 from the Hugging Face Hub" for split in splits}
    else:
        sources = {split: _find_split_file(data_dir, split) for split in SPLIT_NAMES}
        splits = {split: _read_file(path) for split, path in sources.items()}
    for split, dataset in splits.items():
        _check(dataset, sources[split])
    return DatasetDict({split: _columns(dataset) for split, dataset in splits.items()})


def _columns(dataset):
    """Exactly sentence and label, the label as an integer: pandas writes 1.0 where a column had a gap."""
    dataset = dataset.select_columns(list(COLUMNS))
    return dataset if dataset.features["label"].dtype == "int64" else dataset.cast_column("label", Value("int64"))


def data_source(data_dir) -> dict:
    """How the results name the data, with no path of this machine: the folder's name and each file's SHA-256."""
    if data_dir is None:
        return {"source": "glue/sst2 (Hugging Face Hub)"}
    files = [_find_split_file(data_dir, split) for split in SPLIT_NAMES]
    checksums = {os.path.basename(path): _sha256(path) for path in files}
    return {"source": os.path.basename(os.path.normpath(data_dir)), "sha256": checksums}


def _sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _load_from_hub():
    try:
        glue = load_dataset("glue", "sst2")
    except Exception as error:  # the hub raises ConnectionError, OSError or its own classes when offline
        raise DataError(
            f"could not fetch GLUE SST-2 from the Hugging Face Hub ({type(error).__name__}); "
            f"to run offline, pass {OFFLINE_DATA}."
        ) from None
    return {"train": glue["train"], "validation": glue["validation"]}


def _find_split_file(data_dir, split):
    for stem in SPLIT_NAMES[split]:
        for extension in FORMATS:
            path = os.path.join(data_dir, stem + extension)
            if os.path.isfile(path):
                return path
    wanted = " or ".join(f"{stem}.*" for stem in SPLIT_NAMES[split])
    raise DataError(f"{data_dir} has no {split} file: expected {wanted} (one of {', '.join(FORMATS)}).")


def _read_file(path):
    if os.path.getsize(path) == 0:
        raise DataError(f"{path} is empty.")
    if path.endswith(".tsv"):
        return _read_glue_tsv(path)
    if path.endswith((".csv", ".json", ".jsonl")):
        _check_utf8(path)
    if path.endswith(".json"):
        dataset = _read_json(path)
        if dataset is not None:
            return dataset
    options = {"delimiter": _csv_delimiter(path)} if path.endswith(".csv") else {}
    try:
        return load_dataset(FORMATS[os.path.splitext(path)[1]], data_files=path, split="train", **options)
    except Exception as error:
        raise DataError(f"{path} could not be read: {str(error).strip().splitlines()[0]}") from None


def _csv_delimiter(path):
    """A spreadsheet in a locale with decimal commas separates its CSV fields with semicolons."""
    with open(path, encoding="utf-8-sig") as handle:
        header = handle.readline()
    return ";" if header.count(";") > header.count(",") else ","


def _read_json(path):
    """A JSON document as pandas writes a frame, in any orient that keeps the column names (records, columns,
    index, split, table), or None for JSON lines, which datasets reads."""
    with open(path, encoding="utf-8-sig") as handle:
        try:
            data = json.load(handle)
        except json.JSONDecodeError as error:
            if error.msg == "Extra data":  # one object per line
                return None
            raise DataError(f"{path}, line {error.lineno}: not valid JSON ({error.msg}).") from None
    if isinstance(data, dict) and "data" in data and ("columns" in data or "schema" in data):  # split, table
        rows = data["data"]
        data = [dict(zip(data["columns"], row)) for row in rows] if "columns" in data else rows
    elif isinstance(data, dict) and set(COLUMNS) <= set(data):  # columns: {column: {index: value}} or lists
        data = {
            column: list(values.values()) if isinstance(values, dict) else values for column, values in data.items()
        }
        return Dataset.from_dict({column: data[column] for column in COLUMNS})
    elif isinstance(data, dict) and all(isinstance(row, dict) for row in data.values()):  # index: {index: row}
        data = list(data.values())
    if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
        raise DataError(f"{path}: expected records with 'sentence' and 'label', as pandas' to_json writes them.")
    return Dataset.from_dict(
        {column: [row.get(column) for row in data] for column in COLUMNS if data and column in data[0]}
    )


QUOTED = re.compile(r'"(?:[^"]|"")*"')  # a field as a spreadsheet or pandas quotes it, inner quotes doubled


def _read_glue_tsv(path):
    """GLUE's TSVs are unquoted (a sentence may contain or start with a quote), so split on tabs ourselves;
    a file whose every field with a quote is quoted whole was written by a spreadsheet or pandas, and is
    read with their quoting."""
    _check_utf8(path)
    with open(path, encoding="utf-8-sig", newline="") as handle:  # -sig: a spreadsheet's byte-order mark
        text = handle.read()
    rows = list(csv.reader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE))
    with_quotes = [field for row in rows for field in row if '"' in field]
    if with_quotes:
        quoted = list(csv.reader(io.StringIO(text), delimiter="\t"))
        whole = all(QUOTED.fullmatch(field) for field in with_quotes)
        if _rectangular(quoted) and (whole or not _rectangular(rows)):  # a tab inside a quoted sentence
            rows = quoted
    if not rows:
        raise DataError(f"{path} is empty.")
    header = rows[0]
    missing = [column for column in COLUMNS if column not in header]
    if missing:
        raise DataError(f"{path} has no {' or '.join(repr(c) for c in missing)} column (header: {header}).")
    sentence_at, label_at = header.index("sentence"), header.index("label")
    sentences, labels = [], []
    for line_number, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise DataError(f"{path}, line {line_number}: expected {len(header)} tab-separated fields, got {len(row)}.")
        try:
            labels.append(int(row[label_at]))
        except ValueError:
            raise DataError(f"{path}, line {line_number}: label {row[label_at]!r} is not 0 or 1.") from None
        sentences.append(row[sentence_at])
    return Dataset.from_dict({"sentence": sentences, "label": labels})


def _rectangular(rows) -> bool:
    return all(len(row) == len(rows[0]) for row in rows)


def _check_utf8(path):
    with open(path, "rb") as handle:
        for line_number, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as error:
                raise DataError(
                    f"{path}, line {line_number}: not UTF-8 (byte {line[error.start]:#04x}); save the file as UTF-8."
                ) from None


def _check(dataset, source):
    missing = [column for column in COLUMNS if column not in dataset.column_names]
    if missing:
        raise DataError(f"{source} has no {' or '.join(repr(c) for c in missing)} column.")
    if len(dataset) == 0:
        raise DataError(f"{source} has no rows.")
    labels = list(dataset["label"])
    bad = sorted({label for label in labels if not _is_label(label)}, key=str)
    if bad:
        first = next(i for i, label in enumerate(labels) if label in bad)
        raise DataError(
            f"{_where(source, first)}: label {labels[first]!r} is not 0 or 1 (labels outside {{0, 1}}: {bad[:5]})."
        )
    empty = next((i for i, sentence in enumerate(dataset["sentence"]) if not isinstance(sentence, str)), None)
    if empty is not None:
        raise DataError(f"{_where(source, empty)}: the sentence is empty.")


def _is_label(value) -> bool:
    """0 or 1, also as a spreadsheet or pandas writes it: 1.0, or "1" in a column that holds text."""
    if isinstance(value, str):
        return value.strip() in ("0", "1")
    return not isinstance(value, bool) and value in (0, 1)


def _where(source, index) -> str:
    """Where row `index` sits in the file, as an editor shows it."""
    if source.endswith((".tsv", ".csv")):
        return f"{source}, line {index + 2}"  # after the header
    if source.endswith(".jsonl"):
        return f"{source}, line {index + 1}"
    return f"{source}, record {index + 1}"


HOLDOUT_SEED = 2026  # fixed, so every trial of a sweep is scored on the same sentences


def split_holdout(train, fraction):
    """(train without the slice, the slice): a stratified share of the training sentences for model selection."""
    labelled = train.cast_column("label", ClassLabel(names=["negative", "positive"]))
    split = labelled.train_test_split(test_size=fraction, stratify_by_column="label", seed=HOLDOUT_SEED)
    return split["train"], split["test"]


SUBSET_SEED = 2027  # fixed, so every method and seed of a learning curve trains on the same sentences


def nested_subset(train, size, seed=SUBSET_SEED):
    """(subset, indices): `size` sentences drawn at random, stratified by label, and nested: the first `size`
    of one fixed order, in which each class's sentences sit evenly spread, so any prefix holds each class in
    its share of the file (to within one sentence) and a smaller subset lies inside every larger one."""
    if size > len(train):
        raise DataError(f"--train_size {size} is more than the {len(train)} training sentences.")
    rng = random.Random(seed)
    by_class = {}
    for index, label in enumerate(train["label"]):
        by_class.setdefault(int(label), []).append(index)
    keyed = []
    for label, indices in sorted(by_class.items()):
        rng.shuffle(indices)
        keyed += [((rank + 0.5) / len(indices), label, index) for rank, index in enumerate(indices)]
    order = [index for _, _, index in sorted(keyed)]
    return train.select(order[:size]), order[:size]


def indices_checksum(indices) -> str:
    """Which sentences a run used, in the order drawn: SHA-256 of their row numbers in the file, comma-separated."""
    return hashlib.sha256(",".join(map(str, indices)).encode()).hexdigest()


def tokenize(dataset, tokenizer, max_length: int, pad_to_max_length: bool):
    """Tokenizes once, truncating to max_length. Returns (dataset, number of truncated sentences)."""
    padding = "max_length" if pad_to_max_length else False

    def encode(batch):
        return tokenizer(batch["sentence"], truncation=True, max_length=max_length, padding=padding)

    encoded = dataset.map(encode, batched=True, remove_columns=["sentence"], desc="Tokenizing")
    # Only a sentence that fills max_length can have been cut; re-tokenize just those to count.
    full = [i for i, mask in enumerate(encoded["attention_mask"]) if sum(mask) == max_length]
    untruncated = tokenizer(list(dataset.select(full)["sentence"]))["input_ids"] if full else []
    truncated = sum(len(ids) > max_length for ids in untruncated)
    return encoded, truncated


LABEL_KEYS = ("label", "label_ids", "labels")  # the model's argument is `labels`, as DataCollatorWithPadding names it


class PaddingCollator:
    """DataCollatorWithPadding's batches, the same tensors (tests/test_data_loader.py), padded with numpy.

    The fast recipe collates in the training loop's thread, on a GPU too (no loader workers), where the step
    waits on the host: a batch of 16 SST-2 sentences cost that thread 0.98 ms on one core of our CPU with
    tokenizer.pad, as DataCollatorWithPadding pads, and 0.35 with this (results/reference/batch-time-cpu/
    batch_time.json). Features it does not know go to DataCollatorWithPadding.
    """

    def __init__(self, tokenizer, pad_to_multiple_of=None):
        self.reference = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_to_multiple_of)
        # tokenizer.pad's values for each of its outputs
        self.pad_values = {
            "input_ids": tokenizer.pad_token_id,
            "token_type_ids": tokenizer.pad_token_type_id,
            "attention_mask": 0,
            "special_tokens_mask": 1,
        }
        self.left = tokenizer.padding_side == "left"
        self.multiple = pad_to_multiple_of

    def __call__(self, features):
        keys = features[0].keys()
        known = all(key in self.pad_values or key in LABEL_KEYS for key in keys)
        if not known or "input_ids" not in keys or self.pad_values["input_ids"] is None:
            return self.reference(features)
        length = max(len(feature["input_ids"]) for feature in features)
        if self.multiple:
            length = math.ceil(length / self.multiple) * self.multiple
        batch = {}
        for key in keys:
            if key in LABEL_KEYS:
                batch["labels"] = torch.tensor([feature[key] for feature in features])
                continue
            padded = np.full((len(features), length), self.pad_values[key], dtype=np.int64)
            for row, feature in zip(padded, features):
                values = feature[key]
                if self.left:
                    row[length - len(values) :] = values
                else:
                    row[: len(values)] = values
            batch[key] = torch.from_numpy(padded)
        return batch
