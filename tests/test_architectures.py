"""Any encoder a user names: every method trains on each architecture people tune on SST-2, or is refused in
one sentence, with exit code 2, before anything trains. Tiny random models of each, with the toy vocabulary."""

import os

import pytest
import torch
import transformers
from conftest import VOCAB, tiny_argv

from config import ExperimentArguments
from experiment import main
from houlsby import add_adapters
from methods import METHODS, apply_method
from results import read_json

SPECIAL = dict(pad_token_id=0, bos_token_id=2, eos_token_id=3, cls_token_id=2, sep_token_id=3)  # [PAD] [CLS] [SEP]
SIZE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
CONFIGS = {
    "bert": lambda: transformers.BertConfig(**SIZE),
    "roberta": lambda: transformers.RobertaConfig(**SIZE, pad_token_id=0),
    "distilbert": lambda: transformers.DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64),
    "deberta-v2": lambda: transformers.DebertaV2Config(**SIZE),
    "electra": lambda: transformers.ElectraConfig(**SIZE, embedding_size=16),  # embeddings narrower than hidden
    "modernbert": lambda: transformers.ModernBertConfig(**SIZE, **SPECIAL),
}
# What each architecture cannot do, from the libraries: peft's prefix tuning needs attention that takes
# past_key_values, which DistilBERT, DeBERTa-v2 and ModernBERT lack; ModernBERT has no bias terms for BitFit.
REFUSED = {
    ("distilbert", "prefix"),
    ("distilbert", "prefix-v2"),
    ("deberta-v2", "prefix"),
    ("deberta-v2", "prefix-v2"),
    ("modernbert", "prefix"),
    ("modernbert", "prefix-v2"),
    ("modernbert", "bitfit"),
}
# Each architecture's query and value projections (its fused query-key-value one for ModernBERT), by name,
# and its classification head, as its modeling file defines them.
QUERY_VALUE = {
    "bert": {"query", "value"},
    "roberta": {"query", "value"},
    "distilbert": {"q_lin", "v_lin"},
    "deberta-v2": {"query_proj", "value_proj"},
    "electra": {"query", "value"},
    "modernbert": {"Wqkv"},
}
HEAD = {
    "bert": {"classifier"},
    "roberta": {"classifier.dense", "classifier.out_proj"},
    "distilbert": {"pre_classifier", "classifier"},
    "deberta-v2": {"pooler.dense", "classifier"},
    "electra": {"classifier.dense", "classifier.out_proj"},
    "modernbert": {"head.dense", "head.norm", "classifier"},
}


def build(kind):
    config = CONFIGS[kind]()
    config.update(dict(vocab_size=len(VOCAB), num_labels=2, max_position_embeddings=64))
    torch.manual_seed(0)
    return transformers.AutoModelForSequenceClassification.from_config(config)


@pytest.fixture(scope="module")
def model_folders(tiny_model, tmp_path_factory):
    """Each architecture saved with the tiny model's tokenizer, as from_pretrained finds a local model."""
    root = tmp_path_factory.mktemp("architectures")
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_model)
    folders = {}
    for kind in CONFIGS:
        folders[kind] = str(root / kind)
        build(kind).save_pretrained(folders[kind])
        tokenizer.save_pretrained(folders[kind])
    return folders


def one_step(folder, data, results, method):
    flags = ["--method", method, "--max_steps", "1", "--save_strategy", "no", "--save_model", "False"]
    return main(tiny_argv(folder, data, results, *flags, "--num_virtual_tokens", "4", "--run_name", method))


@pytest.mark.parametrize("kind, method", sorted(REFUSED))
def test_what_a_model_cannot_do_is_refused_before_training(kind, method, model_folders, tiny_data, tmp_path, capsys):
    assert one_step(model_folders[kind], tiny_data, tmp_path, method) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    working = [m for m in METHODS if (kind, m) not in REFUSED]
    assert len(errors) == 1 and f"--method {method} cannot train a {kind} model" in errors[0]
    error = errors[0]
    assert error.endswith(f"methods that can: {', '.join(working)}.")
    assert not any(name.endswith(".json") for name in os.listdir(tmp_path))  # no results file of status failed


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_every_other_pair_trains_a_step(kind, method, model_folders, tiny_data, tmp_path):
    if (kind, method) in REFUSED:
        pytest.skip("refused: the test above")
    assert one_step(model_folders[kind], tiny_data, tmp_path, method) == 0
    record = read_json(tmp_path / f"{method}.json")
    assert record["status"] == "completed" and record["step"] == 1
    assert record["model"]["model_type"] == kind and record["params"]["trainable"] > 0


def trained_modules(model, method, **settings):
    args = ExperimentArguments(method=method, num_virtual_tokens=4, **settings)
    model = apply_method(model, method, args)
    return {name for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_lora_adapts_each_architecture_s_query_and_value(kind):
    names = trained_modules(build(kind), "lora")
    adapted = {name.split(".lora_")[0].split(".")[-1] for name in names if ".lora_" in name}
    assert adapted == QUERY_VALUE[kind]


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_the_head_is_the_architecture_s_own(kind):
    heads = {name.rsplit(".", 1)[0] for name in trained_modules(build(kind), "head")}
    assert heads == HEAD[kind]


@pytest.mark.parametrize("kind", sorted(set(CONFIGS) - {"modernbert"}))
def test_prompt_tuning_sits_in_the_embedding_width(kind):
    model = build(kind)
    width = model.get_input_embeddings().embedding_dim
    peft_model = apply_method(model, "prompt", ExperimentArguments(method="prompt", num_virtual_tokens=4))
    assert peft_model.prompt_encoder["default"].embedding.weight.shape == (4, width)


def test_new_adapters_start_near_the_identity():
    """Houlsby et al.: near-zero initialisation, so training starts from the pretrained model."""
    ids = torch.tensor([[2, 5, 9, 14, 3]])
    model = build("bert").eval()
    with torch.no_grad():
        before = model.bert(ids).last_hidden_state
        add_adapters(model, 8)
        after = model.bert(ids).last_hidden_state
    change = (after - before).norm() / before.norm()
    assert 0 < change < 0.01


def test_what_peft_refuses_is_refused_the_same_way(tiny_model, tiny_data, tmp_path, capsys):
    flags = ["--method", "lora", "--lora_target_modules", "nothing_here", "--max_steps", "1", "--run_name", "x"]
    assert main(tiny_argv(tiny_model, tiny_data, tmp_path, *flags)) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--method lora cannot train a bert model: No modules were targeted" in errors[0]
    assert not (tmp_path / "x.json").exists()
