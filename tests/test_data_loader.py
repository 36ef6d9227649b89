"""SST-2 from local files in GLUE's format and in the other formats datasets reads, and its batches."""

import json
import re

import pandas as pd
import pytest
import torch
from conftest import tool, toy_sentences, write_tsv
from transformers import AutoTokenizer, DataCollatorWithPadding

from data_loader import PaddingCollator, load_sst2, tokenize
from results import read_json

ROWS = [('"quoted" start is fine ', 1), ("a dull , dull film ", 0), ("it 's good ", 1)]


def test_glue_tsv_keeps_quotes_and_trailing_spaces(tmp_path):
    write_tsv(tmp_path / "train.tsv", ROWS)
    write_tsv(tmp_path / "dev.tsv", ROWS[:2])
    data = load_sst2(str(tmp_path))
    assert list(data["train"]["sentence"]) == [s for s, _ in ROWS]
    assert list(data["train"]["label"]) == [1, 0, 1]
    assert len(data["validation"]) == 2 and data["train"].column_names == ["sentence", "label"]


@pytest.mark.parametrize("extension", ["csv", "jsonl", "parquet"])
def test_other_formats_with_validation_split_name(tmp_path, extension):
    frame = pd.DataFrame({"idx": range(3), "sentence": [s for s, _ in ROWS], "label": [label for _, label in ROWS]})
    for split in ("train", "validation"):
        path = tmp_path / f"{split}.{extension}"
        if extension == "csv":
            frame.to_csv(path, index=False)
        elif extension == "jsonl":
            path.write_text("".join(json.dumps(row) + "\n" for row in frame.to_dict("records")))
        else:
            frame.to_parquet(path)
    data = load_sst2(str(tmp_path))
    assert list(data["validation"]["label"]) == [1, 0, 1]
    assert data["train"].column_names == ["sentence", "label"]


def test_truncation_is_counted_not_silent(tiny_model, tmp_path):
    write_tsv(tmp_path / "train.tsv", [("good " * 30, 1), ("bad", 0), ("the movie was good " * 2, 1)])
    write_tsv(tmp_path / "dev.tsv", ROWS)
    data = load_sst2(str(tmp_path))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    encoded, truncated = tokenize(data["train"], tokenizer, max_length=10, pad_to_max_length=False)
    assert truncated == 1  # 32 tokens cut to 10; 10 tokens exactly is not a truncation
    assert [len(ids) for ids in list(encoded["input_ids"])] == [10, 3, 10]
    assert encoded[0]["input_ids"][-1] == tokenizer.sep_token_id
    padded, _ = tokenize(data["train"], tokenizer, max_length=12, pad_to_max_length=True)
    assert {len(ids) for ids in list(padded["input_ids"])} == {12}


WILD = [("a gorgeous, witty film", 1), ('he said "bad"', 0), ("dull; slow", 0), ("fun\tand great", 1)]
FRAME = pd.DataFrame(WILD, columns=["sentence", "label"])
TAB_FREE = FRAME.iloc[:3]  # GLUE's own format cannot hold a tab inside a sentence


def _glue_tsv_crlf(path):
    rows = "".join(f"{s}\t{y}\r\n" for s, y in TAB_FREE.itertuples(index=False))
    path.write_bytes(("sentence\tlabel\r\n" + rows).encode())


# How other tools write SST-2: (file name, writer, the rows it holds).
VARIANTS = {
    "excel csv utf-8 (BOM, CRLF, quotes)": (
        "csv",
        lambda p: FRAME.to_csv(p, index=False, encoding="utf-8-sig", lineterminator="\r\n"),
        FRAME,
    ),
    "excel csv, semicolons": ("csv", lambda p: FRAME.to_csv(p, sep=";", index=False, encoding="utf-8-sig"), FRAME),
    "spreadsheet tsv (quoted, CRLF)": (
        "tsv",
        lambda p: FRAME.to_csv(p, sep="\t", index=False, lineterminator="\r\n"),
        FRAME,
    ),
    "GLUE tsv with Windows line endings": ("tsv", _glue_tsv_crlf, TAB_FREE),
    "GLUE tsv with a BOM": (
        "tsv",
        lambda p: p.write_bytes(b"\xef\xbb\xbf" + TAB_FREE.to_csv(sep="\t", index=False, quoting=3).encode()),
        TAB_FREE,
    ),
    "pandas csv with its index": ("csv", lambda p: FRAME.to_csv(p), FRAME),
    "pandas csv, float labels": ("csv", lambda p: FRAME.astype({"label": float}).to_csv(p, index=False), FRAME),
    "pandas json (columns)": ("json", lambda p: FRAME.to_json(p), FRAME),
    "pandas json (index)": ("json", lambda p: FRAME.to_json(p, orient="index"), FRAME),
    "pandas json (split)": ("json", lambda p: FRAME.to_json(p, orient="split"), FRAME),
    "pandas json (table)": ("json", lambda p: FRAME.to_json(p, orient="table"), FRAME),
    "pandas json (records)": ("json", lambda p: FRAME.to_json(p, orient="records"), FRAME),
    "pandas json lines": ("jsonl", lambda p: FRAME.to_json(p, orient="records", lines=True), FRAME),
    "pandas parquet with an index": ("parquet", lambda p: FRAME.set_index(pd.Index([7, 3, 9, 1])).to_parquet(p), FRAME),
    "pandas parquet, float labels": ("parquet", lambda p: FRAME.astype({"label": float}).to_parquet(p), FRAME),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_files_as_other_tools_write_them(variant, tmp_path):
    extension, write, frame = VARIANTS[variant]
    for split in ("train", "dev"):
        write(tmp_path / f"{split}.{extension}")
    data = load_sst2(str(tmp_path))
    assert list(data["validation"]["sentence"]) == list(frame["sentence"])
    assert list(data["train"]["label"]) == list(frame["label"])
    assert data["train"].features["label"].dtype == "int64"  # what the loss needs, also from 1.0 and 0.0


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("train.csv", "sentence,label\ngood,1\nbad,0\nfine,yes\n", "train.csv, line 4: label 'yes' is not 0 or 1"),
        ("train.csv", "sentence,label\ngood,1\n,0\n", "train.csv, line 3: the sentence is empty"),
        ("train.json", '[{"sentence": "good", "label": 1},\n {"sentence": "bad" "label": 0}]', "train.json, line 2"),
        ("train.jsonl", '{"sentence": "good", "label": 1}\n{"sentence": "bad", "label": 3}\n', "train.jsonl, line 2"),
    ],
)
def test_an_invalid_file_names_the_file_and_line(name, content, message, tmp_path):
    from data_loader import DataError

    (tmp_path / name).write_text(content)
    FRAME.to_csv(tmp_path / "dev.csv", index=False)
    with pytest.raises(DataError, match=re.escape(message)):
        load_sst2(str(tmp_path))


@pytest.mark.parametrize("multiple", [None, 8, 16])
@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("label_key", ["label", "labels"])
def test_padding_collator_makes_transformers_batches(multiple, side, label_key, tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.padding_side = side
    rows = toy_sentences(16, seed=5)
    # as the Trainer hands them over: one dict per sentence, lists of ints, as datasets stores them
    features = [{**tokenizer(sentence), label_key: label} for sentence, label in rows]
    assert len({len(feature["input_ids"]) for feature in features}) > 3
    expected = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=multiple)(features)
    batch = PaddingCollator(tokenizer, pad_to_multiple_of=multiple)(features)
    assert set(batch) == set(expected) == {"input_ids", "token_type_ids", "attention_mask", "labels"}
    for key, tensor in expected.items():
        assert batch[key].dtype == tensor.dtype and torch.equal(batch[key], tensor), key


def test_padding_collator_pads_with_the_tokenizers_ids(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.pad_token = "[MASK]"  # a pad id other than 0, as RoBERTa's is 1
    features = [{**tokenizer("good"), "label": 1}, {**tokenizer("the film was dull and bad"), "label": 0}]
    batch = PaddingCollator(tokenizer)(features)
    short = len(features[0]["input_ids"])
    assert batch["input_ids"][0, short:].eq(tokenizer.convert_tokens_to_ids("[MASK]")).all()
    assert batch["attention_mask"][0, short:].eq(0).all()
    expected = DataCollatorWithPadding(tokenizer)(features)
    assert all(torch.equal(batch[key], expected[key]) for key in expected)


def test_padding_collator_leaves_other_features_to_transformers(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    features = [
        {**tokenizer(sentence), "label": label, "idx": i} for i, (sentence, label) in enumerate(toy_sentences(4, 2))
    ]
    expected = DataCollatorWithPadding(tokenizer)(features)
    batch = PaddingCollator(tokenizer)(features)
    assert set(batch) == set(expected) and all(torch.equal(batch[key], expected[key]) for key in expected)


def test_the_batch_time_tool_times_each_collator_as_the_trainer_serves_it(tiny_model, tiny_data, tmp_path):
    output = tmp_path / "batch_time.json"
    argv = ["--model_name_or_path", tiny_model, "--data_dir", tiny_data, "--workers", "0,1"]
    argv += ["--warmup", "1", "--batches", "2", "--repeats", "1", "--gap_ms", "1"]
    assert tool("batch_time").main([*argv, "--output", str(output)]) == 0
    record = read_json(output)
    assert record["kind"] == "batch_time" and record["command"].startswith("python tools/batch_time.py ")
    assert tiny_model not in record["command"]  # no machine path
    ran = [(row["collator"], row["workers"]) for row in record["rows"]]
    assert ran == [(name, workers) for workers in (0, 1) for name in ("DataCollatorWithPadding", "PaddingCollator")]
    assert all(row["ms_per_batch"] > 0 for row in record["rows"])
