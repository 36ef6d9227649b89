"""Trainable-parameter counts on the bert-base-uncased architecture (BertConfig(), random init, no download)."""

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from config import ExperimentArguments
from methods import apply_method
from metrics import count_parameters

BERT_BASE = BertConfig(num_labels=2)


@pytest.fixture(scope="module")
def bert_base():
    torch.manual_seed(0)
    return lambda: BertForSequenceClassification(BERT_BASE)


def derived_full(c=BERT_BASE):
    h, layers, ff = c.hidden_size, c.num_hidden_layers, c.intermediate_size
    embeddings = (c.vocab_size + c.max_position_embeddings + c.type_vocab_size) * h + 2 * h
    layer = 4 * (h * h + h) + 2 * h + (h * ff + ff) + (ff * h + h) + 2 * h
    return embeddings + layers * layer + (h * h + h) + (h * 2 + 2)


def derived_prefix(tokens, projection, c=BERT_BASE):
    h, kv = c.hidden_size, 2 * c.num_hidden_layers * c.hidden_size
    head = h * 2 + 2  # peft trains a copy of the classifier
    if not projection:
        return tokens * kv + head
    return tokens * h + (h * h + h) + (h * kv + kv) + head


def test_full_fine_tuning_trains_the_original_109_48m(bert_base):
    counts = count_parameters(apply_method(bert_base(), "full", ExperimentArguments()))
    assert counts["trainable"] == counts["total"] == derived_full() == 109_483_778


@pytest.mark.parametrize("tokens, projection", [(20, True), (20, False), (5, True)])
def test_prefix_tuning_counts(bert_base, tokens, projection):
    args = ExperimentArguments(method="prefix", num_virtual_tokens=tokens, prefix_projection=projection)
    counts = count_parameters(apply_method(bert_base(), "prefix", args))
    assert counts["trainable"] == derived_prefix(tokens, projection)
    # the frozen backbone with its original head, plus what trains
    assert counts["total"] == derived_full() + derived_prefix(tokens, projection)


def test_the_original_prefix_setting_is_14_78m(bert_base):
    counts = count_parameters(apply_method(bert_base(), "prefix", ExperimentArguments(method="prefix")))
    assert counts["trainable"] == 14_781_698
