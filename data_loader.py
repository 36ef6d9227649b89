"""GLUE SST-2, from the Hugging Face Hub or from local files, tokenized once.

Evaluation uses GLUE's validation split (872 sentences): GLUE withholds the test labels.
"""

import csv
import hashlib
import os

from datasets import ClassLabel, Dataset, DatasetDict, load_dataset

SPLIT_NAMES = {"train": ("train",), "validation": ("dev", "validation")}
FORMATS = {".tsv": "csv", ".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
COLUMNS = ("sentence", "label")


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
    return DatasetDict({split: dataset.select_columns(list(COLUMNS)) for split, dataset in splits.items()})


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
            "to run offline, pass a local folder with train.tsv and dev.tsv as --data_dir DIR."
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
    try:
        return load_dataset(FORMATS[os.path.splitext(path)[1]], data_files=path, split="train")
    except Exception as error:
        raise DataError(f"{path} could not be read: {str(error).strip().splitlines()[0]}") from None


def _read_glue_tsv(path):
    """GLUE's TSVs are unquoted (sentences may start with a quote), so split on tabs ourselves."""
    _check_utf8(path)
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
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
    bad = sorted({label for label in dataset["label"] if label not in (0, 1)}, key=str)
    if bad:
        raise DataError(f"{source} has labels outside {{0, 1}}: {bad[:5]}.")


HOLDOUT_SEED = 2026  # fixed, so every trial of a sweep is scored on the same sentences


def split_holdout(train, fraction):
    """(train without the slice, the slice): a stratified share of the training sentences for model selection."""
    labelled = train.cast_column("label", ClassLabel(names=["negative", "positive"]))
    split = labelled.train_test_split(test_size=fraction, stratify_by_column="label", seed=HOLDOUT_SEED)
    return split["train"], split["test"]


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
