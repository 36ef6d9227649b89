"""Offline fixtures: a tiny BERT with its own WordPiece vocabulary, and tiny SST-2-format files."""

import os
import random
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
torch.set_num_threads(1)  # two torch processes on two cores thrash

POSITIVE = ["good", "great", "fun", "superb", "lovely"]
NEGATIVE = ["bad", "awful", "dull", "boring", "ugly"]
FILLER = ["the", "movie", "film", "was", "a", "plot", "and", "it", "story", "acting", "really", "quite"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *POSITIVE, *NEGATIVE, *FILLER, ".", ","]


def toy_sentences(count, seed):
    """A trivially learnable task: the one sentiment word decides the label."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        label = rng.randint(0, 1)
        words = rng.choices(FILLER, k=rng.randint(2, 12))
        words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE if label else NEGATIVE))
        rows.append((" ".join(words) + " ", label))
    return rows


def write_tsv(path, rows, header=("sentence", "label")):
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\t".join(header) + "\n")
        for row in rows:
            handle.write("\t".join(str(field) for field in row) + "\n")


def build_tiny_model(folder, seed=0):
    from transformers import BertForSequenceClassification, BertTokenizer

    from models import tiny_bert_config

    os.makedirs(folder, exist_ok=True)
    vocab_path = os.path.join(folder, "vocab.txt")
    with open(vocab_path, "w") as handle:
        handle.write("\n".join(VOCAB) + "\n")
    # BertTokenizerFast(vocab_file=...) silently ignores the file in transformers 5.x; this one reads it.
    BertTokenizer(vocab=vocab_path).save_pretrained(folder)
    torch.manual_seed(seed)
    BertForSequenceClassification(tiny_bert_config(len(VOCAB))).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    return build_tiny_model(str(tmp_path_factory.mktemp("tiny-bert")))


def write_toy_sst2(folder, train=96, dev=40, seed=1):
    """A folder in GLUE's SST-2 format with the toy task: train.tsv and dev.tsv."""
    folder.mkdir(parents=True, exist_ok=True)
    write_tsv(folder / "train.tsv", toy_sentences(train, seed=seed))
    write_tsv(folder / "dev.tsv", toy_sentences(dev, seed=seed + 1))
    return str(folder)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    return write_toy_sst2(tmp_path_factory.mktemp("sst2"))


def tiny_argv(model, data, results, *extra):
    """Flags for a quick run of the pipeline on the tiny model: a couple of epochs of a few steps."""
    return [
        "--model_name_or_path",
        model,
        "--data_dir",
        data,
        "--results_dir",
        str(results),
        "--num_train_epochs",
        "2",
        "--per_device_train_batch_size",
        "16",
        "--learning_rate",
        "1e-3",
        "--disable_tqdm",
        "True",
        *extra,
    ]


def tool(name):
    """tools/<name>.py as a module: the tools are scripts, not a package."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def strings(value):
    """Every string in a JSON value, keys included."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)
    elif isinstance(value, str):
        yield value
