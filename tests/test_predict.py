"""A completed run keeps what it trained, and predict.py classifies with it exactly as the run did."""

import ast
import csv
import os

import pytest
import torch
from conftest import ROOT, tiny_argv

import predict
from experiment import main
from results import read_json

NAMES = {"negative": 0, "positive": 1}


@pytest.fixture(scope="module")
def runs(tiny_model, tiny_data, tmp_path_factory):
    """Full fine-tuning learns the toy task and saves its model; prefix tuning, LoRA and adapters start from it,
    so that every run predicts both classes and a round trip that got the order or the labels wrong would show."""
    folder = tmp_path_factory.mktemp("runs")
    learn = ["--num_train_epochs", "15", "--learning_rate", "5e-3", "--save_strategy", "no"]
    assert main(tiny_argv(tiny_model, tiny_data, folder, *learn, "--method", "full", "--run_name", "full")) == 0
    for method in ("prefix", "lora", "adapter"):
        argv = tiny_argv(str(folder / "models" / "full"), tiny_data, folder, "--method", method, "--run_name", method)
        assert main(argv) == 0
    return folder


@pytest.mark.parametrize("method", ["full", "prefix", "lora", "adapter"])
def test_predict_reproduces_the_run_s_dev_predictions(method, runs, tiny_data, tmp_path, capsys):
    record = read_json(runs / f"{method}.json")
    assert 0 < sum(record["predictions"]) < len(record["predictions"])  # both classes
    assert record["model_dir"] == os.path.join(str(runs), "models", method)
    assert not (runs / "checkpoints").exists()  # completed runs' checkpoints are gone, and the folder of them
    output = tmp_path / "predictions.csv"
    dev = os.path.join(tiny_data, "dev.tsv")
    assert predict.main(["--model", record["model_dir"], "--input", dev, "--output", str(output)]) == 0
    with open(output, newline="") as handle:
        rows = list(csv.DictReader(handle))
    with open(dev, newline="") as handle:
        sentences = [row["sentence"] for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)]
    assert [row["sentence"] for row in rows] == sentences
    assert [NAMES[row["label"]] for row in rows] == record["predictions"]
    assert all(0.5 <= float(row["score"]) <= 1 for row in rows)  # the probability of the label chosen


@pytest.mark.parametrize("method", ["full", "adapter"])
def test_the_readme_s_python_gives_the_run_s_dev_predictions(method, runs, tiny_data, capsys):
    """The README's snippet, run as written but for the folder and the sentences (the dev file's, read here)."""
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = text[text.index("## Reuse what you trained") :]
    code = section[section.index("```python\n") + len("```python\n") :]
    code = code[: code.index("```")]
    with open(os.path.join(tiny_data, "dev.tsv"), newline="") as handle:
        sentences = [row["sentence"] for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)]
    folder_line, sentences_line = '"results/models/<run_name>"', 'sentences = ["a gorgeous, witty film", "a dull mess"]'
    assert folder_line in code and sentences_line in code
    code = code.replace(folder_line, repr(str(runs / "models" / method))).replace(
        sentences_line, f"sentences = {sentences!r}"
    )
    capsys.readouterr()
    exec(compile(code, "README.md", "exec"), {})
    printed = ast.literal_eval(capsys.readouterr().out.strip().splitlines()[-1])
    assert [NAMES[label] for label, _ in printed] == read_json(runs / f"{method}.json")["predictions"]


@pytest.mark.parametrize(
    "method, weights, names_base",
    [
        ("lora", "adapter_model.safetensors", "adapter_config.json"),
        ("adapter", "trained_weights.safetensors", "sst2_run.json"),
    ],
)
def test_an_adapter_is_small_and_names_its_base_model(runs, method, weights, names_base):
    folder = runs / "models" / method
    config = read_json(folder / names_base)
    assert config.get("base_model_name_or_path", config.get("base_model")) == str(runs / "models" / "full")
    assert (folder / weights).stat().st_size < (runs / "models" / "full" / "model.safetensors").stat().st_size


def test_sentences_on_the_command_line_print_a_table(runs, capsys):
    assert predict.main(["--model", str(runs / "models" / "full"), "the film was good", "dull and boring"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["label", "score", "sentence"] and len(lines) == 3
    assert lines[1].endswith("the film was good") and lines[1].split()[0] in NAMES


def test_a_peft_adapter_loads_onto_another_base_folder(runs, tmp_path, capsys):
    """--base_model_name_or_path overrides the base named in the adapter, e.g. after moving the model."""
    import shutil

    moved = tmp_path / "moved-base"
    shutil.copytree(runs / "models" / "full", moved)
    folder = str(runs / "models" / "prefix")
    assert predict.main(["--model", folder, "--base_model_name_or_path", str(moved), "good"]) == 0
    assert predict.main(["--model", folder, "--base_model_name_or_path", str(tmp_path / "nowhere"), "good"]) == 2
    assert "--base_model_name_or_path" in capsys.readouterr().err


def test_a_file_with_labels_gets_the_run_s_dev_accuracy(runs, tiny_data, tmp_path, capsys):
    """SST-2's dev.tsv has a label column: predict.py counts its predictions against it, which gives back the run's
    own dev accuracy; labels spelt as names count alike, and a label column of something else gets a note."""
    import json

    record = read_json(runs / "prefix.json")
    dev = os.path.join(tiny_data, "dev.tsv")
    with open(dev, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    correct = sum(int(row["label"]) == predicted for row, predicted in zip(rows, record["predictions"]))
    assert (correct, len(rows)) == (record["metrics"]["eval_correct"], record["metrics"]["eval_total"])
    expected = f"accuracy {100 * correct / len(rows):.2f}% ({correct}/{len(rows)})"
    assert predict.main(["--model", record["model_dir"], "--input", dev, "--output", str(tmp_path / "p.csv")]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"{expected} against {dev}'s labels"
    named = tmp_path / "named.jsonl"
    spelt = {"0": "Negative", "1": "positive"}
    named.write_text("".join(json.dumps({"sentence": r["sentence"], "label": spelt[r["label"]]}) + "\n" for r in rows))
    assert predict.main(["--model", record["model_dir"], "--input", str(named)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"{expected} against {named}'s labels"
    floats = tmp_path / "floats.csv"  # pandas writes 1.0 where a column had a gap, as the data loader accepts
    with open(floats, "w", newline="") as handle:
        csv.writer(handle).writerows([("sentence", "label")] + [(r["sentence"], f"{int(r['label'])}.0") for r in rows])
    assert predict.main(["--model", record["model_dir"], "--input", str(floats)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"{expected} against {floats}'s labels"
    stars = tmp_path / "stars.csv"
    stars.write_text("sentence,label\na fine film,5\n")
    assert predict.main(["--model", record["model_dir"], "--input", str(stars)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[-1].startswith("no accuracy") and "'5'" in lines[-1]  # table, row, note


def test_a_base_without_the_task_head_predicts_as_the_run_did_and_quietly(runs, tiny_data, tmp_path, capsys):
    """A pretrained base has no task head, another task's has one of another size, and the saved run brings its
    own: the predictions are the run's, and transformers' report of the base's head as newly initialised is not
    printed. A base that lacks more than the head is named, for those weights start at random."""
    import logging
    import shutil

    from safetensors.torch import load_file, save_file

    full = runs / "models" / "full"
    weights = load_file(full / "model.safetensors")
    three_labels = {
        "classifier.weight": weights["classifier.weight"].repeat(2, 1)[:3],
        "classifier.bias": torch.ones(3),
    }
    for name, dropped, added in (
        ("headless", ("classifier.",), {}),
        ("three-labels", ("classifier.",), three_labels),  # e.g. an MNLI model
        ("no-pooler", ("classifier.", "bert.pooler."), {}),
    ):
        shutil.copytree(full, tmp_path / name)
        kept = {key: tensor for key, tensor in weights.items() if not key.startswith(dropped)}
        save_file({**kept, **added}, tmp_path / name / "model.safetensors", metadata={"format": "pt"})
    record = read_json(runs / "prefix.json")
    output = tmp_path / "predictions.csv"
    argv = ["--model", record["model_dir"], "--input", os.path.join(tiny_data, "dev.tsv"), "--output", str(output)]
    # transformers' handler writes to the stream it found at import, which pytest's capture fixtures miss
    logged = []
    recorder = logging.Handler(logging.WARNING)
    recorder.emit = logged.append
    logging.getLogger("transformers").addHandler(recorder)
    try:
        for base in ("headless", "three-labels"):
            assert predict.main([*argv, "--base_model_name_or_path", str(tmp_path / base)]) == 0
            with open(output, newline="") as handle:
                assert [NAMES[row["label"]] for row in csv.DictReader(handle)] == record["predictions"], base
    finally:
        logging.getLogger("transformers").removeHandler(recorder)
    assert [entry.getMessage() for entry in logged] == []  # no report of the head as missing
    assert capsys.readouterr().err == ""
    assert predict.main([*argv, "--base_model_name_or_path", str(tmp_path / "no-pooler")]) == 0
    warning = capsys.readouterr().err
    assert "lacks 2 weights outside the task head (bert.pooler.dense.bias first)" in warning  # its weight and bias


def test_a_base_that_fails_to_load_still_shows_transformers_report(monkeypatch):
    """The report held back while a base loads is the one transformers' errors point to ("look at the above
    report"): when loading fails, it is logged after all, and the logger is left without the hold."""
    import logging

    import models

    report = logging.getLogger("transformers.modeling_utils")

    def fails(*args, **kwargs):
        report.warning("BertForSequenceClassification LOAD REPORT from: base\nclassifier.weight | CONVERSION")
        raise RuntimeError("look at the above report")

    monkeypatch.setattr(models.AutoModelForSequenceClassification, "from_pretrained", fails)
    logged = []
    recorder = logging.Handler(logging.WARNING)
    recorder.emit = logged.append
    report.addHandler(recorder)
    try:
        with pytest.raises(RuntimeError, match="above report"):
            models.load_base_model("base")
        report.warning("after")  # nothing held back any more
    finally:
        report.removeHandler(recorder)
    assert [entry.getMessage().split("\n")[0] for entry in logged] == [
        "BertForSequenceClassification LOAD REPORT from: base",
        "after",
    ]
    assert report.filters == []


def test_checkpoints_stay_when_asked_and_models_only_when_asked(tiny_model, tiny_data, tmp_path):
    flags = ["--max_steps", "2", "--save_strategy", "steps", "--save_steps", "1", "--keep_checkpoints", "True"]
    assert (
        main(
            tiny_argv(tiny_model, tiny_data, tmp_path, *flags, "--save_model", "False", "--run_name", "k"),
            method="full",
        )
        == 0
    )
    record = read_json(tmp_path / "k.json")
    assert record["model_dir"] is None and not (tmp_path / "models").exists()
    assert (tmp_path / "checkpoints" / "k" / "checkpoint-2").is_dir()


def bad_inputs(tmp_path, runs):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    no_column = tmp_path / "texts.csv"
    no_column.write_text("text,label\na fine film,1\n")
    not_a_run = tmp_path / "not-a-run"
    not_a_run.mkdir()
    model = str(runs / "models" / "full")
    return {
        "missing folder": (["--model", str(tmp_path / "missing"), "good"], "is not a folder"),
        "not a run": (["--model", str(not_a_run), "good"], "is not a saved run"),
        "empty file": (["--model", model, "--input", str(empty)], "holds no sentences"),
        "no sentence column": (["--model", model, "--input", str(no_column)], "has no 'sentence' column"),
        "missing file": (["--model", model, "--input", str(tmp_path / "nope.txt")], "is not a file"),
        "nothing to classify": (["--model", model], "give sentences"),
    }


@pytest.mark.parametrize(
    "case", ["missing folder", "not a run", "empty file", "no sentence column", "missing file", "nothing to classify"]
)
def test_bad_input_is_refused_in_one_sentence(case, runs, tmp_path, capsys):
    argv, message = bad_inputs(tmp_path, runs)[case]
    assert predict.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and err.startswith("error: ")


def test_frozen_weights_kept_in_bf16_are_saved_in_fp32(tiny_model, tiny_data, tmp_path):
    """BitFit with --bf16_frozen_weights holds its frozen weights in bf16; the saved model is all fp32, so it loads
    and predicts without autocast like any model."""
    from safetensors import safe_open

    flags = ["--use_cpu", "--bf16", "True", "--bf16_frozen_weights", "True", "--max_steps", "2", "--run_name", "b"]
    assert main(tiny_argv(tiny_model, tiny_data, tmp_path, "--method", "bitfit", *flags)) == 0
    folder = tmp_path / "models" / "b"
    with safe_open(str(folder / "model.safetensors"), "pt") as weights:
        dtypes = {str(weights.get_tensor(name).dtype) for name in weights.keys()}
    assert dtypes == {"torch.float32"}
    assert predict.main(["--model", str(folder), "a good film"]) == 0


def test_a_half_precision_checkpoint_trains_and_predicts_in_fp32(runs, tiny_data, tmp_path):
    """transformers 5 loads a checkpoint in the dtype it was saved in; the optimizer needs fp32 weights, and
    prediction must see the weights the run trained from (fp16 -> fp32 is exact, so both agree)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from models import load_for_prediction, load_model_and_tokenizer

    half = tmp_path / "half"
    full = AutoModelForSequenceClassification.from_pretrained(runs / "models" / "full")
    full.half().save_pretrained(half)
    AutoTokenizer.from_pretrained(runs / "models" / "full").save_pretrained(half)
    model, _ = load_model_and_tokenizer(str(half))
    assert {p.dtype for p in model.parameters()} == {torch.float32}

    results = tmp_path / "results"
    argv = tiny_argv(str(half), tiny_data, results, "--method", "lora", "--run_name", "lora-on-half")
    assert main([*argv, "--num_train_epochs", "1"]) == 0
    model, _, _ = load_for_prediction(str(results / "models" / "lora-on-half"))
    assert {p.dtype for p in model.parameters()} == {torch.float32}
