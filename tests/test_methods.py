"""Every registered method: its trainable-parameter count on BERT-base, and that training moves only its parameters."""

import pytest
import torch
from conftest import toy_sentences
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig, BertForSequenceClassification

from config import ExperimentArguments
from methods import METHODS, apply_method
from metrics import count_parameters

C = BertConfig(num_labels=2)
H, L, FF, TOKENS = C.hidden_size, C.num_hidden_layers, C.intermediate_size, 20
HEAD = H * 2 + 2  # the classifier; peft trains a copy of it


def linear(n_in, n_out):
    return n_in * n_out + n_out


# Counts derived from each method's definition, independently of methods.py.
EXPECTED = {
    "full": (C.vocab_size + C.max_position_embeddings + C.type_vocab_size) * H
    + 2 * H
    + L * (4 * linear(H, H) + 2 * H + linear(H, FF) + linear(FF, H) + 2 * H)
    + linear(H, H)
    + HEAD,
    "prefix": TOKENS * H + linear(H, H) + linear(H, 2 * L * H) + HEAD,  # embedding, then a two-layer MLP
    "prefix-v2": TOKENS * 2 * L * H + HEAD,  # keys and values of every layer, directly
    "prompt": TOKENS * H + HEAD,  # input embeddings only
    "ptuning": TOKENS * H + 3 * linear(H, H) + HEAD,  # embedding through peft's three-layer MLP encoder
    "lora": L * 2 * (H * 8 + 8 * H) + HEAD,  # r=8 on query and value: A (H x r) and B (r x H)
    "ia3": L * (H + H + H + FF) + HEAD,  # key, value, attention output (input side) and FFN output (input side)
    "bitfit": H + L * (4 * H + H + FF + H + H) + H + HEAD,  # every bias, and the head
    # Two bottlenecks of width 64 per layer (down H->64 and up 64->H, with biases), every LayerNorm (the
    # embeddings' and two per layer, a weight and a bias each), and the head: Houlsby et al. (2019).
    "adapter": 2 * L * (linear(H, 64) + linear(64, H)) + (1 + 2 * L) * 2 * H + HEAD,
    "head": HEAD,  # the control: the classifier alone
}


def test_every_method_is_counted():
    assert set(EXPECTED) == set(METHODS)


@pytest.mark.parametrize("method", sorted(EXPECTED))
def test_trainable_parameters_on_bert_base(method):
    torch.manual_seed(0)
    model = apply_method(BertForSequenceClassification(C), method, ExperimentArguments(method=method))
    assert count_parameters(model)["trainable"] == EXPECTED[method]


def test_the_original_two_counts_and_the_adapter_s():
    assert (EXPECTED["full"], EXPECTED["prefix"]) == (109_483_778, 14_781_698)
    assert EXPECTED["adapter"] == 24 * (768 * 64 + 64 + 64 * 768 + 768) + 25 * 1_536 + 1_538 == 2_419_202


def intended(method, name):
    """Which parameters each method is meant to train, by name."""
    return {
        "full": True,
        "bitfit": name.endswith(".bias") or name.startswith("classifier."),
        "adapter": ".adapter." in name or "LayerNorm" in name or name.startswith("classifier."),
        "head": name.startswith("classifier."),
        "lora": "lora_" in name,
        "ia3": "ia3_l" in name,
    }.get(method, "prompt_encoder" in name) or "modules_to_save" in name


@pytest.mark.parametrize("bf16_frozen", [False, True])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_training_moves_exactly_the_method_s_parameters(method, bf16_frozen, tiny_model):
    """Also with the GPU recipe's frozen weights in bf16, under bf16 autocast as the Trainer runs it."""
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2)
    args = ExperimentArguments(method=method, num_virtual_tokens=4, bf16_frozen_weights=bf16_frozen)
    model = apply_method(model, method, args)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {name for name in before if intended(method, name)}
    for name, p in model.named_parameters():
        stored_in_bf16 = bf16_frozen and name not in trainable and "LayerNorm" not in name
        assert p.dtype == (torch.bfloat16 if stored_in_bf16 else torch.float32), name

    rows = toy_sentences(32, seed=4)
    batch = tokenizer([s for s, _ in rows], padding=True, return_tensors="pt")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):  # LoRA's A moves only once B is no longer zero
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16_frozen):
            loss = model(**batch, labels=torch.tensor([y for _, y in rows])).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    for name, p in model.named_parameters():
        if name in trainable:
            assert not torch.equal(p, before[name]), f"{name} did not train"
        else:
            assert torch.equal(p, before[name]), f"frozen {name} changed"


@pytest.mark.parametrize("method", ["prefix", "lora", "bitfit"])
def test_frozen_weights_in_bf16_compute_what_autocast_computes(method, tiny_model):
    """Autocast rounds matmul weights to bf16 anyway, so storing frozen ones in bf16 barely moves the outputs."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    batch = tokenizer([s for s, _ in toy_sentences(32, seed=4)], padding=True, return_tensors="pt")
    states = []  # the last layer's hidden states: unit scale after LayerNorm, unlike a random head's logits
    for bf16_frozen in (False, True):
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2)
        args = ExperimentArguments(method=method, num_virtual_tokens=4, bf16_frozen_weights=bf16_frozen)
        model = apply_method(model, method, args).eval()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            states.append(model(**batch, output_hidden_states=True).hidden_states[-1].float())
    spread = states[0].std().item()
    assert spread > 0.5  # outputs of real scale, so the agreement below means something
    torch.testing.assert_close(states[1], states[0], atol=spread / 20, rtol=0)
