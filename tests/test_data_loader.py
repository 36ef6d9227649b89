"""SST-2 from local files in GLUE's format and in the other formats datasets reads."""

import json

import pandas as pd
import pytest
from conftest import write_tsv
from transformers import AutoTokenizer

from data_loader import load_sst2, tokenize

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
