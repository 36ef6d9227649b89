"""Prefix tuning really works: gradients reach the prefix, the prefix steers the logits,
padding and prefix are masked correctly, and the prefix alone can learn."""

import pytest
import torch
from conftest import toy_sentences
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from config import ExperimentArguments
from methods import apply_method


def prefix_model(folder, **settings):
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)
    return apply_method(model, "prefix", ExperimentArguments(method="prefix", **settings))


def prefix_parameters(model):
    return [p for name, p in model.named_parameters() if "prompt_encoder" in name]


@pytest.fixture
def tokenizer(tiny_model):
    return AutoTokenizer.from_pretrained(tiny_model)


def test_gradients_reach_the_prefix_and_nothing_frozen(tiny_model, tokenizer):
    model = prefix_model(tiny_model)
    batch = tokenizer(["the movie was good", "a dull plot"], padding=True, return_tensors="pt")
    model(**batch, labels=torch.tensor([1, 0])).loss.backward()
    prefix = prefix_parameters(model)
    assert prefix and all(p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0 for p in prefix)
    frozen = [(name, p) for name, p in model.named_parameters() if not p.requires_grad]
    assert any("encoder.layer" in name for name, _ in frozen)
    assert all(p.grad is None for _, p in frozen)


def test_changing_the_prefix_changes_the_logits(tiny_model, tokenizer):
    model = prefix_model(tiny_model).eval()
    batch = tokenizer(["the movie was good"], return_tensors="pt")
    with torch.no_grad():
        before = model(**batch).logits.clone()
        for p in prefix_parameters(model):
            p.add_(torch.randn_like(p))
        after = model(**batch).logits
    assert not torch.allclose(before, after, atol=1e-4)


def test_padding_is_masked_with_the_prefix_in_front(tiny_model, tokenizer):
    """A sentence gets the same logits alone, beside a longer one, and padded far out.

    If peft's prefix mask and the padding mask were misaligned, padding would leak in."""
    model = prefix_model(tiny_model, num_virtual_tokens=7).eval()
    sentence = "the movie was good"
    with torch.no_grad():
        alone = model(**tokenizer([sentence], return_tensors="pt")).logits[0]
        beside = model(
            **tokenizer(
                [sentence, "the plot was really quite dull and the acting was awful ."],
                padding=True,
                return_tensors="pt",
            )
        ).logits[0]
        padded = model(**tokenizer([sentence], padding="max_length", max_length=30, return_tensors="pt")).logits[0]
    torch.testing.assert_close(beside, alone, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-4)


def test_the_prefix_alone_learns_a_toy_task(tiny_model, tokenizer):
    """A frozen random backbone teaches nothing, so first fine-tune the tiny backbone on the toy task.
    Then freeze it and its head, and let only the prefix learn the inverted labels."""
    torch.manual_seed(0)
    rows = toy_sentences(256, seed=5)
    batch = tokenizer([sentence for sentence, _ in rows], padding=True, return_tensors="pt")
    labels = torch.tensor([label for _, label in rows])

    def train(model, targets, steps, lr):
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
        losses = []
        for _ in range(steps):
            pick = torch.randint(0, len(rows), (32,))
            loss = model(
                input_ids=batch.input_ids[pick], attention_mask=batch.attention_mask[pick], labels=targets[pick]
            ).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
        return losses

    backbone = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2)
    train(backbone, labels, steps=60, lr=3e-3)
    model = apply_method(backbone, "prefix", ExperimentArguments(method="prefix", num_virtual_tokens=8))
    for name, p in model.named_parameters():
        if "classifier" in name:
            p.requires_grad_(False)
    assert {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad} == {"prompt_encoder"}
    losses = train(model, 1 - labels, steps=80, lr=1e-2)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert first > 1.0 and last < 0.5 * first, (first, last)
