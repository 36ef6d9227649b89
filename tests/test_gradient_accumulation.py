"""Accumulating gradients over micro-batches takes the same step, and logs the same loss, as one batch."""

import pytest
import torch
from conftest import tiny_argv, tool, toy_sentences
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainingArguments

from config import ExperimentArguments
from experiment import build_trainer, main
from methods import apply_method
from results import load_results, read_json


def one_step(tiny_model, method, folder, batch_size, accumulation):
    """Trains one optimizer step on the same 16 sentences; returns how far each weight moved, and the logged loss."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    sentences, labels = zip(*toy_sentences(16, seed=7))
    data = Dataset.from_dict({**tokenizer(list(sentences)), "label": list(labels)})
    torch.manual_seed(0)  # the same classifier head and prefix in every run
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_model, num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )
    experiment = ExperimentArguments(method=method, num_virtual_tokens=4)
    model = apply_method(model, method, experiment)
    args = TrainingArguments(
        output_dir=str(folder),
        use_cpu=True,
        report_to=[],
        max_steps=1,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        optim="sgd",  # the step is the gradient itself: N times the gradient would show as N times the step
        learning_rate=1.0,
        lr_scheduler_type="constant",
        max_grad_norm=0,  # no clipping, which would hide a scaled gradient
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = build_trainer(experiment, args, model, tokenizer, data)
    before = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    trainer.train()
    (logged,) = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {name: p.detach() - before[name] for name, p in model.named_parameters() if p.requires_grad}, logged


@pytest.mark.parametrize("method", ["full", "prefix"])
def test_two_micro_batches_of_eight_step_like_one_batch_of_sixteen(method, tiny_model, tmp_path):
    """BERT's loss is a mean over its batch, so each micro-batch's loss must be divided by the accumulation
    steps. The plain Trainer does not divide it, and takes twice the step and logs twice the loss."""
    whole, whole_loss = one_step(tiny_model, method, tmp_path / "one", batch_size=16, accumulation=1)
    halves, halves_loss = one_step(tiny_model, method, tmp_path / "two", batch_size=8, accumulation=2)
    assert halves_loss == pytest.approx(whole_loss, rel=1e-4)
    assert whole.keys() == halves.keys() and any(step.abs().max() > 1e-4 for step in whole.values())
    for name, step in whole.items():
        torch.testing.assert_close(halves[name], step, atol=1e-6, rtol=1e-4, msg=name)


def test_a_run_with_accumulation_records_what_it_trained(tiny_model, tiny_data, tmp_path):
    """Throughput counts every sentence, not one batch per optimizer step."""
    flags = ["--per_device_train_batch_size", "16", "--gradient_accumulation_steps", "2", "--run_name", "accumulated"]
    assert main(tiny_argv(tiny_model, tiny_data, tmp_path, *flags), method="full") == 0
    record = read_json(tmp_path / "accumulated.json")
    efficiency = record["efficiency"]
    assert efficiency["train_steps"] == 2 * 3  # 96 sentences an epoch, 32 a step
    trained = efficiency["train_samples_per_s"] * efficiency["train_time_s"]
    assert trained == pytest.approx(2 * 96, rel=1e-2)


def test_the_plain_trainer_scaling_tool_logs_the_loss_times_the_accumulation_steps(tiny_model, tiny_data, tmp_path):
    """tools/plain_trainer_scaling.py, behind the README's 'under the plain Trainer's scaling' run: with two
    accumulation steps, the Trainer left to itself logs twice the pipeline's loss. At a rate too small to move the
    weights much, both runs see nearly the same losses, so the ratio of their means is the factor itself."""
    plain_trainer_scaling = tool("plain_trainer_scaling")
    flags = ["--model_name_or_path", tiny_model, "--data_dir", tiny_data, "--num_train_epochs", "1",
             "--per_device_train_batch_size", "8", "--gradient_accumulation_steps", "2", "--learning_rate", "1e-6",
             "--save_strategy", "no", "--save_model", "False", "--disable_tqdm", "True"]  # fmt: skip
    assert main([*flags, "--results_dir", str(tmp_path), "--run_name", "pipeline"], method="full") == 0
    output = tmp_path / "plain.json"
    assert plain_trainer_scaling.main(["--output", str(output), "--", *flags]) == 0
    pipeline, plain = read_json(tmp_path / "pipeline.json"), read_json(output)
    assert plain["metrics"]["train_loss"] / pipeline["metrics"]["train_loss"] == pytest.approx(2, rel=0.01)
    assert plain["kind"] == "plain_trainer_scaling" and pipeline.get("kind") is None
    assert plain["command"].startswith("python tools/plain_trainer_scaling.py --output ")
    assert "--results_dir" not in plain["command"] and "--run_name" not in plain["command"]
    records, _ = load_results(str(tmp_path))
    assert [r["run_name"] for r in records] == ["pipeline"]  # plot_results.py passes over the tool's run
