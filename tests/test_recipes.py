"""The two recipes: what each sets, that they learn the same thing, and that length buckets are harmless."""

import gzip
import json
import os

import pytest
import torch
from conftest import tiny_argv, tool, toy_sentences, write_tsv
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    Trainer,
    TrainingArguments,
)

from config import (
    FAST_ON_GPU,
    RECIPES,
    TUNED_LEARNING_RATES,
    TUNED_TEN_EPOCH_LEARNING_RATES,
    ConfigError,
    ExperimentArguments,
    GpuSupport,
    compile_note,
    data_parallel_note,
    gpu_note,
    gpu_support,
    layered_settings,
    original_rate_note,
    parse_args,
    recipe_settings,
    tuned_rate_note,
)
from data_loader import PaddingCollator
from experiment import ExperimentTrainer, main
from methods import apply_method
from results import read_json


def test_original_recipe_reproduces_the_original_mechanics():
    experiment, training, _ = parse_args(["--recipe", "original", "--use_cpu"], method="full")
    assert experiment.pad_to_max_length and experiment.max_seq_length == 128
    assert (training.bf16, training.torch_compile, training.optim) == (False, False, "adamw_torch")
    assert not experiment.walk_modules_once  # the Trainer's own walks over the model at every step
    assert not experiment.prompt_tokens_on_device  # peft's copy of the virtual-token ids at every forward
    assert not experiment.recompute_in_backward
    assert (training.num_train_epochs, training.per_device_train_batch_size, training.learning_rate, training.seed) == (
        10,
        16,
        1e-6,
        42,
    )


def test_fast_recipe_on_a_gpu_compiles_and_buckets():
    settings = recipe_settings("fast", GpuSupport())  # Ampere or newer
    assert settings["bf16"] and settings["torch_compile"] and settings["optim"] == "adamw_torch_fused"
    assert settings["pad_to_multiple_of"] == 16 and not settings["pad_to_max_length"]
    assert settings["torch_compile_dynamic"] is True  # one compile for every bucket
    assert settings["bf16_frozen_weights"] is True
    assert settings["recompute_in_backward"] is True  # no bf16 copies of trained weights kept for the backward
    assert not settings["logging_nan_inf_filter"]  # its isnan check is a host sync per step
    assert settings["accelerator_config"] == {"non_blocking": True}
    assert set(FAST_ON_GPU) <= set(settings)
    # On a CPU, steps are compute-bound: dynamic padding, no compile, fp32.
    cpu = recipe_settings("fast", None)
    assert not cpu["pad_to_max_length"] and "torch_compile" not in cpu and "bf16" not in cpu
    assert settings["walk_modules_once"] and cpu["walk_modules_once"]  # learns the same (below), costs less host
    assert settings["prompt_tokens_on_device"] and cpu["prompt_tokens_on_device"]  # the same step, no copy per step


T4 = GpuSupport("Tesla T4", native_bf16=False)  # compute capability 7.5: bf16 emulated, Triton runs
P100 = GpuSupport("Tesla P100-PCIE-16GB", native_bf16=False, triton=False)  # 6.0: too old for Triton


def on_this_gpu(monkeypatch, gpu, argv, method="prefix"):
    """parse_args as it runs on `gpu`, on this CPU-only machine."""
    import config

    monkeypatch.setattr(config, "gpu_support", lambda: gpu)
    return parse_args(argv, method=method)


def test_gpu_support_asks_for_native_bf16_and_triton(monkeypatch):
    """A T4 emulates bf16, so torch's default check (the Trainer's) says yes; inductor asks for native support."""
    import torch.utils._triton

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *device: "Tesla T4")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    monkeypatch.setattr(torch.utils._triton, "has_triton", lambda: True)
    assert gpu_support() == T4
    monkeypatch.setattr(torch.utils._triton, "has_triton", lambda: False)
    assert gpu_support() == GpuSupport("Tesla T4", native_bf16=False, triton=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_support() is None


def test_the_fast_recipe_leaves_out_what_an_older_gpu_cannot_run(monkeypatch):
    ampere = recipe_settings("fast", GpuSupport())
    # A T4 or V100: fp16 with loss scaling for bf16 (inductor would not compile bf16 there); CUDA graphs stay.
    _, training, recipe = on_this_gpu(monkeypatch, T4, [])
    assert (training.fp16, training.bf16) == (True, False) and recipe["bf16_frozen_weights"] is False
    assert training.torch_compile and training.torch_compile_mode == "reduce-overhead"
    assert training.optim == "adamw_torch_fused"  # it takes the loss scale itself: no sync per step
    assert {name: value for name, value in recipe.items() if name not in ("bf16", "fp16", "bf16_frozen_weights")} == {
        name: value for name, value in ampere.items() if name not in ("bf16", "bf16_frozen_weights")
    }
    # A P100: no Triton, so no torch.compile either (it would raise at the first step).
    experiment, training, recipe = on_this_gpu(monkeypatch, P100, [])
    assert not training.torch_compile
    assert not {"torch_compile_mode", "torch_compile_dynamic", "recompute_in_backward"} & set(recipe)
    assert experiment.torch_compile_dynamic is None and not experiment.recompute_in_backward
    assert training.fp16 and experiment.pad_to_multiple_of == 16
    # The original recipe is the original's mechanics on every card.
    assert recipe_settings("original", P100) == recipe_settings("original", GpuSupport())


def test_a_precision_the_user_types_replaces_the_recipe_s():
    """Either flag replaces the recipe's choice of the two, so the two never meet (the Trainer refuses both)."""

    def precision(gpu, typed):
        settings = layered_settings("prefix", "default", recipe_settings("fast", gpu), typed)
        return settings.get("bf16", False), settings.get("fp16", False)

    assert precision(T4, {}) == (False, True) and precision(GpuSupport(), {}) == (True, False)
    assert precision(T4, {"bf16": True}) == (True, False)
    assert precision(T4, {"bf16": False}) == (False, False)  # fp32, as --bf16 False means on an Ampere card
    assert precision(GpuSupport(), {"fp16": True}) == (False, True)
    assert precision(GpuSupport(), {"bf16": False}) == (False, False)


def test_the_user_is_told_what_the_fast_recipe_runs_instead(monkeypatch):
    for gpu, says in ((T4, ["fp16"]), (P100, ["fp16", "without torch.compile"])):
        experiment, training, _ = on_this_gpu(monkeypatch, gpu, [])
        note = gpu_note(gpu, experiment, training)
        assert gpu.name in note and all(word in note for word in says) and "--recipe original" in note
    assert "torch.compile" not in gpu_note(T4, *on_this_gpu(monkeypatch, T4, [])[:2])
    assert gpu_note(T4, *on_this_gpu(monkeypatch, T4, ["--fp16", "False"])[:2]) is None  # the user's choice
    assert gpu_note(GpuSupport(), *on_this_gpu(monkeypatch, GpuSupport(), ["--bf16", "False"])[:2]) is None
    assert gpu_note(T4, *on_this_gpu(monkeypatch, T4, ["--recipe", "original"])[:2]) is None


def test_a_run_on_an_older_gpu_says_and_records_what_it_ran(tiny_model, tiny_data, tmp_path, monkeypatch, capsys):
    """Through the train script's main, as on a P100 (here the Trainer trains on the CPU, without use_cpu)."""
    import config
    import experiment
    import summary

    for module in (config, experiment):  # the recipe's, and the note's
        monkeypatch.setattr(module, "gpu_support", lambda: P100)
    argv = tiny_argv(tiny_model, tiny_data, tmp_path, "--run_name", "p100")
    assert main(argv, method="full") == 0
    assert "note: the fast recipe on Tesla P100-PCIE-16GB runs fp16" in capsys.readouterr().out
    record = read_json(tmp_path / "p100.json")
    assert (
        record["config"]["recipe_settings"]["fp16"] is True
        and "torch_compile" not in record["config"]["recipe_settings"]
    )
    assert (
        record["config"]["training_arguments"]["fp16"] and not record["config"]["training_arguments"]["torch_compile"]
    )
    assert summary.precision_text(record["config"]) == "fp16"


def test_one_process_on_several_gpus_is_told_its_batch_and_the_ways_out():
    """The Trainer's nn.DataParallel multiplies the batch by the GPUs one process sees (TrainingArguments)."""
    from types import SimpleNamespace

    two = SimpleNamespace(n_gpu=2, per_device_train_batch_size=16, train_batch_size=32)
    note = data_parallel_note(two)
    assert "32 sentences" in note and "16 each" in note
    assert "CUDA_VISIBLE_DEVICES=0" in note and "torchrun --nproc_per_node 2" in note
    assert data_parallel_note(SimpleNamespace(n_gpu=1)) is None and data_parallel_note(SimpleNamespace(n_gpu=0)) is None
    _, training, _ = parse_args(["--use_cpu"], method="full")
    assert data_parallel_note(training) is None


def test_frozen_weights_in_bf16_follow_the_user_s_bf16(monkeypatch):
    import config

    experiment, training, _ = parse_args(["--method", "prefix", "--use_cpu", "--bf16", "True", "--bf16_frozen_weights"])
    assert training.bf16 and experiment.bf16_frozen_weights
    with pytest.raises(ConfigError, match="needs --bf16"):
        parse_args(["--method", "prefix", "--use_cpu", "--bf16_frozen_weights", "True"])
    # A recipe that sets both (as the GPU's fast one does) steps aside when the user turns bf16 off.
    monkeypatch.setitem(config.RECIPES, "fast", {**config.RECIPES["fast"], "bf16": True, "bf16_frozen_weights": True})
    experiment, training, _ = parse_args(["--method", "prefix", "--use_cpu", "--bf16", "False"])
    assert not training.bf16 and not experiment.bf16_frozen_weights


def test_the_user_s_flags_win_over_the_recipe():
    experiment, training, _ = parse_args(
        [
            "--recipe",
            "original",
            "--use_cpu",
            "--optim",
            "adamw_torch_fused",
            "--pad_to_max_length",
            "False",
            "--learning_rate",
            "3e-5",
        ],
        method="full",
    )
    assert training.optim == "adamw_torch_fused" and not experiment.pad_to_max_length
    assert training.learning_rate == 3e-5
    # and the recipe is independent of the schedule: same epochs, batch and rate in both
    _, fast, _ = parse_args(["--recipe", "fast", "--use_cpu"], method="full")
    _, original, _ = parse_args(["--recipe", "original", "--use_cpu"], method="full")
    for name in (
        "num_train_epochs",
        "per_device_train_batch_size",
        "learning_rate",
        "lr_scheduler_type",
        "seed",
        "warmup_steps",
    ):
        assert getattr(fast, name) == getattr(original, name)


@pytest.mark.parametrize("method", sorted(TUNED_LEARNING_RATES))
def test_learning_rate_presets(method):
    def rate(*flags):
        return parse_args(["--method", method, "--use_cpu", *flags])[1].learning_rate

    assert rate() == 1e-6  # the original's rate, for every method
    assert rate("--lr_preset", "tuned", "--num_train_epochs", "1") == TUNED_LEARNING_RATES[method]
    assert rate("--lr_preset", "tuned", "--max_steps", "5000") == TUNED_LEARNING_RATES[method]  # no sweep of steps
    longer = TUNED_TEN_EPOCH_LEARNING_RATES.get(method, TUNED_LEARNING_RATES[method])
    assert rate("--lr_preset", "tuned") == longer  # the scripts' ten epochs
    assert rate("--lr_preset", "tuned", "--num_train_epochs", "2") == longer
    assert rate("--lr_preset", "tuned", "--learning_rate", "7e-5") == 7e-5  # what the user types always wins


def test_a_one_epoch_rate_over_a_longer_schedule_gets_a_note(tiny_model, tiny_data, tmp_path, capsys):
    def note(method, *flags):
        return tuned_rate_note(*parse_args(["--method", method, "--use_cpu", *flags])[:2])

    assert "chosen for one epoch, and this run trains 10" in note("lora", "--lr_preset", "tuned")  # the scripts' 10
    assert note("prefix", "--lr_preset", "tuned") is None  # its rate was chosen for ten epochs
    assert note("lora", "--lr_preset", "tuned", "--num_train_epochs", "1") is None
    assert note("lora", "--lr_preset", "tuned", "--max_steps", "5000") is None  # a step budget: not measured
    assert note("lora", "--lr_preset", "original") is None
    assert note("lora", "--lr_preset", "tuned", "--learning_rate", "1e-4") is None  # the user chose the rate
    argv = tiny_argv(tiny_model, tiny_data, tmp_path, "--lr_preset", "tuned", "--save_strategy", "no")
    rate = argv.index("--learning_rate")
    assert main(argv[:rate] + argv[rate + 2 :], method="full") == 0  # two epochs at the preset's rate
    assert "rate for full (0.0001) was chosen for one epoch, and this run trains 2" in capsys.readouterr().out


def test_torch_compile_false_turns_the_fast_recipe_s_compile_off(monkeypatch):
    """TrainingArguments sets torch_compile whenever torch_compile_mode is set, and the fast recipe sets a mode:
    --torch_compile False has to take the recipe's compile settings away, as a P100 does."""
    experiment, training, _ = on_this_gpu(monkeypatch, GpuSupport("NVIDIA H200"), ["--bf16", "False"])
    assert training.torch_compile and training.torch_compile_mode == "reduce-overhead"  # the recipe, as it is
    experiment, training, _ = on_this_gpu(
        monkeypatch, GpuSupport("NVIDIA H200"), ["--bf16", "False", "--torch_compile", "False"]
    )
    assert training.torch_compile is False and training.torch_compile_mode is None
    assert experiment.torch_compile_dynamic is None and experiment.recompute_in_backward is False
    assert training.optim == "adamw_torch_fused" and experiment.pad_to_multiple_of == 16  # the rest stays


# Each setting the fast recipe makes on a GPU, a value other than the recipe's, and that value as it must come out
# of parse_args. Written out here rather than derived from FAST_ON_GPU; the test checks that it covers every key.
TYPED_OVER_THE_RECIPE = {
    "bf16": ("False", False),
    "torch_compile": ("False", False),
    "torch_compile_mode": ("default", "default"),
    "pad_to_multiple_of": ("8", 8),
    "torch_compile_dynamic": ("False", False),
    "bf16_frozen_weights": ("False", False),
    "recompute_in_backward": ("False", False),
    "optim": ("adamw_torch", "adamw_torch"),
    "per_device_eval_batch_size": ("64", 64),
    "dataloader_num_workers": ("2", 2),
    "accelerator_config": ('{"non_blocking": false}', False),  # read back as its non_blocking
    "pad_to_max_length": ("True", True),
    "logging_nan_inf_filter": ("True", True),
    "walk_modules_once": ("False", False),
    "prompt_tokens_on_device": ("False", False),
}


def test_the_table_of_typed_settings_covers_the_fast_recipe():
    assert set(TYPED_OVER_THE_RECIPE) == set(FAST_ON_GPU) | set(RECIPES["fast"])


@pytest.mark.parametrize("name", sorted(TYPED_OVER_THE_RECIPE))
def test_what_the_user_types_wins_over_every_setting_of_the_fast_recipe(name, monkeypatch):
    """The module docstring's precedence, setting by setting, on a simulated H200: --torch_compile False had lost
    to the recipe's torch_compile_mode, which makes TrainingArguments compile."""
    typed, expected = TYPED_OVER_THE_RECIPE[name]
    argv = [] if name == "bf16" else ["--bf16", "False"]  # TrainingArguments refuses bf16 on this CPU-only machine
    experiment, training, _ = on_this_gpu(monkeypatch, GpuSupport("NVIDIA H200"), [*argv, f"--{name}", typed])
    value = getattr(experiment, name) if hasattr(experiment, name) else getattr(training, name)
    if name == "accelerator_config":
        value = value.non_blocking
    assert value == expected


@pytest.mark.parametrize(
    "gpu, argv, compiles",
    [
        # --bf16 False: TrainingArguments refuses bf16 on this CPU-only machine, and precision does not matter here
        (GpuSupport("NVIDIA H200"), ["--bf16", "False"], True),  # the fast recipe's first steps compile
        (T4, [], True),
        (P100, [], False),  # no Triton: eager
        (GpuSupport("NVIDIA H200"), ["--recipe", "original"], False),
        (GpuSupport("NVIDIA H200"), ["--bf16", "False", "--torch_compile", "False"], False),
        (None, [], False),  # the CPU: the fast recipe does not compile
        (None, ["--torch_compile", "True"], True),
    ],
)
def test_a_run_that_compiles_says_its_first_steps_will_be_slow(gpu, argv, compiles, monkeypatch):
    _, training, _ = on_this_gpu(monkeypatch, gpu, argv if gpu else ["--use_cpu", *argv])
    note = compile_note(training)
    assert (note is not None) == compiles
    assert note is None or "compiles the model during the first steps: a minute or more the first time" in note


def test_a_method_the_original_did_not_run_gets_a_note_at_its_rate():
    def note(method, *flags):
        return original_rate_note(*parse_args(["--method", method, "--use_cpu", *flags])[:2])

    said = note("lora")
    assert "lora trains at the original experiment's learning rate, 1e-6" in said and "chose 0.002 for lora" in said
    assert "chose 0.3 for head" in note("head")  # the sweeps' choices (test_reference_results ties them to config)
    assert note("full") is None and note("prefix") is None  # the original's own methods and rate
    assert note("lora", "--lr_preset", "tuned") is None
    assert note("lora", "--learning_rate", "1e-4") is None  # the user chose the rate


def test_a_run_prints_its_notes_before_it_trains(tiny_model, tiny_data, tmp_path, capsys):
    """The two notes above as a run prints them: LoRA at the original's rate (no --learning_rate), compiled (by
    dynamo's eager backend, which traces without inductor's compile)."""
    argv = tiny_argv(tiny_model, tiny_data, tmp_path, "--max_steps", "1", "--save_model", "False")
    rate = argv.index("--learning_rate")
    argv = [*argv[:rate], *argv[rate + 2 :], "--use_cpu", "--torch_compile_backend", "eager"]
    assert main(argv, method="lora") == 0
    printed = capsys.readouterr().out
    assert "note: lora trains at the original experiment's learning rate, 1e-6" in printed
    assert "note: torch.compile compiles the model during the first steps" in printed


@pytest.mark.parametrize("method", ["full", "prefix"])
def test_both_recipes_learn_the_same_thing(method, tiny_model, tiny_data, tmp_path):
    """Whole runs under each recipe agree on the tiny model.

    A step computes the same at any padding (test_outputs_and_gradients_do_not_depend_on_the_bucket); what
    differs is rounding and dropout's masks, drawn for the padded shape, which move these losses by < 1e-3.
    """
    for recipe in ("original", "fast"):
        assert (
            main(tiny_argv(tiny_model, tiny_data, tmp_path, "--recipe", recipe, "--run_name", recipe), method=method)
            == 0
        )
    original, fast = read_json(tmp_path / "original.json"), read_json(tmp_path / "fast.json")
    assert original["config"]["pad_to_max_length"] and not fast["config"]["pad_to_max_length"]
    assert original["config"]["recipe"] == "original" and fast["config"]["recipe_settings"] == recipe_settings(
        "fast", None
    )
    for a, b in zip(original["history"], fast["history"]):
        assert a["eval_accuracy"] == b["eval_accuracy"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-3)  # padding shifts float rounding only
        assert a["eval_loss"] == pytest.approx(b["eval_loss"], abs=1e-3)


@pytest.fixture
def tokenizer(tiny_model):
    return AutoTokenizer.from_pretrained(tiny_model)


def test_length_buckets_never_truncate(tokenizer):
    sentences = [sentence for sentence, _ in toy_sentences(40, seed=3)] + ["good " * 40]
    features = [tokenizer(s, truncation=True, max_length=60) for s in sentences]
    batch = PaddingCollator(tokenizer, pad_to_multiple_of=16)(features)
    longest = max(len(feature["input_ids"]) for feature in features)
    assert batch["input_ids"].shape[1] % 16 == 0 and longest <= batch["input_ids"].shape[1] < longest + 16
    for row, feature in enumerate(features):
        n = len(feature["input_ids"])
        assert batch["attention_mask"][row].sum() == n
        assert batch["input_ids"][row, :n].tolist() == feature["input_ids"]


@pytest.mark.parametrize("method", ["full", "prefix"])
def test_outputs_and_gradients_do_not_depend_on_the_bucket(method, tiny_model, tokenizer):
    """What a step computes is the same at any padded length, so both recipes take the same steps.

    Dropout is off (eval mode): its random masks are drawn for the padded shape, so with dropout on, two
    paddings draw different masks for the same sentence, as two seeds would.
    """
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2)
    model = apply_method(model, method, ExperimentArguments(method=method, num_virtual_tokens=4)).eval()
    sentences = ["the acting was really quite good", "dull", "a bad , bad film that never ends"]
    features = [tokenizer(sentence) for sentence in sentences]
    labels = torch.tensor([1, 0, 0])
    assert len({len(feature["input_ids"]) for feature in features}) == 3  # so the batch pads within itself too
    steps, widths = [], set()
    for multiple in (1, 16, 32, 48):  # 1: each batch padded to its longest sentence, as the fast recipe on a CPU
        batch = PaddingCollator(tokenizer, pad_to_multiple_of=multiple)(features)
        widths.add(batch["input_ids"].shape[1])
        model.zero_grad()
        output = model(**batch, labels=labels)
        output.loss.backward()
        gradients = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
        steps.append((output.logits.detach(), gradients))
    assert len(widths) == 4
    for logits, gradients in steps[1:]:
        torch.testing.assert_close(logits, steps[0][0], atol=1e-5, rtol=1e-4)
        assert gradients.keys() == steps[0][1].keys() and gradients
        for name, gradient in gradients.items():
            torch.testing.assert_close(gradient, steps[0][1][name], atol=1e-6, rtol=1e-4, msg=name)


@pytest.mark.slow
@pytest.mark.parametrize(
    "method, precision",
    [
        ("full", []),
        ("prefix", ["--use_cpu", "--bf16", "True", "--bf16_frozen_weights", "True"]),
        ("full", ["--compile_layers_once", "True"]),  # one layer compiled for all, over the same buckets
        ("prefix", ["--use_cpu", "--bf16", "True", "--bf16_frozen_weights", "True", "--compile_layers_once", "True"]),
    ],
)
def test_the_compiled_path_runs_on_a_cpu_and_compiles_once(method, precision, tiny_model, tmp_path):
    """The GPU recipe's compile and buckets, exercised where CI can run them: lengths that span several
    buckets and an epoch's short last batch still make one compiled graph, not one per shape, and peft's
    prefix tuning compiles without a graph break, under bf16 autocast with its frozen weights in bf16. The
    evaluations add no graph: the Trainer evaluates its uncompiled model, which the README's projections count on.

    The first batch pads to 16 tokens for 16 sentences, as SST-2's often does (13 word pieces on average):
    with torch's duck sizing, equal sizes share one symbol, and the next length compiled everything again."""
    from torch._dynamo.utils import compilation_time_metrics, counters

    short, other = toy_sentences(16, seed=4), toy_sentences(84, seed=5)
    assert all(len(sentence.split()) <= 13 for sentence, _ in short)  # 16 tokens at most with [CLS] and [SEP]
    rows = short + [(sentence * (1 + i % 3), label) for i, (sentence, label) in enumerate(other)]
    data = tmp_path / "data"
    data.mkdir()
    write_tsv(data / "train.tsv", rows)  # 100 sentences: six batches of 16 and one of 4
    write_tsv(data / "dev.tsv", rows[:20])
    flags = [
        "--torch_compile",
        "--torch_compile_backend",
        "aot_eager",  # dynamo's graphs and autograd's tracing, as under inductor, without inductor's code generation
        "--torch_compile_dynamic",
        "True",
        "--pad_to_multiple_of",
        "16",
        "--num_train_epochs",
        "1",
        "--save_strategy",
        "no",
        "--run_name",
        "compiled",
        "--optim",
        "adamw_torch_fused",
        "--train_sampling_strategy",
        "sequential",  # the short sentences first
        *precision,
    ]
    torch._dynamo.reset()
    counters.clear()
    compilation_time_metrics.clear()
    assert main(tiny_argv(tiny_model, str(data), tmp_path, *flags), method=method) == 0
    assert counters["stats"]["unique_graphs"] == 1
    # traced once: no second attempt, which a Python float left symbolic used to cost
    assert "compile_attempt_0" in compilation_time_metrics and "compile_attempt_1" not in compilation_time_metrics
    record = read_json(tmp_path / "compiled.json")
    assert record["config"]["training_arguments"]["torch_compile"] is True
    assert record["config"]["torch_compile_dynamic"] is True
    assert record["config"]["bf16_frozen_weights"] is ("--bf16_frozen_weights" in precision)
    assert record["config"]["compile_layers_once"] is ("--compile_layers_once" in precision)
    assert record["efficiency"]["train_steps"] == 7
    assert record["history"] and "eval_accuracy" in record["history"][-1]  # it evaluated, with the one graph


@pytest.mark.slow
@pytest.mark.parametrize("method", ["full", "prefix", "ptuning", "lora", "ia3", "adapter"])
def test_layers_compiled_once_compute_what_every_layer_compiled_computes(method, tiny_model, tokenizer):
    """--compile_layers_once: dynamo traces one encoder layer and reuses it for the other, in one graph without a
    break, and the step's loss and gradients are those of the model compiled layer by layer. Dropout is off
    (eval mode), so both draw nothing at random. Another model of the same class stays unmarked."""
    from torch._dynamo.utils import counters

    from experiment import _compile_dynamic, compile_layers_once

    def compiled_step(model):
        torch._dynamo.reset()
        counters.clear()
        model.zero_grad()
        with _compile_dynamic(True):  # the pipeline's settings for symbolic shapes, as build_trainer makes them
            compiled = torch.compile(model, backend="aot_eager", dynamic=True)
        output = compiled(**batch, labels=torch.tensor([1, 0, 0]))
        output.loss.backward()
        gradients = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
        return output.loss.detach(), gradients, dict(counters["stats"]), sum(counters["graph_break"].values())

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2)
    model = apply_method(model, method, ExperimentArguments(method=method, num_virtual_tokens=4)).eval()
    sentences = ["the acting was really quite good", "dull", "a bad , bad film that never ends"]
    batch = PaddingCollator(tokenizer, pad_to_multiple_of=16)([tokenizer(sentence) for sentence in sentences])
    loss, gradients, traced, breaks = compiled_step(model)
    assert compile_layers_once(model) == AutoConfig.from_pretrained(tiny_model).num_hidden_layers == 2
    once_loss, once_gradients, once_traced, once_breaks = compiled_step(model)
    assert traced["unique_graphs"] == once_traced["unique_graphs"] == 1 and breaks == once_breaks == 0
    assert once_traced["calls_captured"] < traced["calls_captured"]  # the second layer's calls are not traced
    torch.testing.assert_close(once_loss, loss, atol=1e-6, rtol=1e-5)
    assert once_gradients.keys() == gradients.keys() and gradients
    for name, gradient in once_gradients.items():
        torch.testing.assert_close(gradient, gradients[name], atol=1e-6, rtol=1e-4, msg=name)
    other = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2)
    assert not any("forward" in vars(layer) for layer in other.bert.encoder.layer)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_layers_compiled_once_draw_their_own_dropout_masks(backend):
    """What dynamo stamps out for the second layer must not replay the first layer's random draws: each of two
    identical layers adds dropout(ones) at p = 0.5 (0 or 2 per entry), so independent masks agree on about half
    of 512 entries (binomial: 0.5 +- 0.022), and replayed ones on all."""
    from experiment import compile_layers_once

    class Layer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.dropout = torch.nn.Dropout(0.5)

        def forward(self, hidden):
            return hidden + self.dropout(torch.ones_like(hidden))

    class Stack(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList([Layer(), Layer()])

        def forward(self, hidden):
            first = self.layers[0](hidden)
            return torch.stack([first - hidden, self.layers[1](first) - first])

    torch._dynamo.reset()
    torch.manual_seed(0)
    model = Stack().train()
    assert compile_layers_once(model) == 2
    masks = torch.compile(model, backend=backend, dynamic=False)(torch.zeros(64, 8))
    assert set(masks.unique().tolist()) == {0.0, 2.0}
    assert 0.4 < (masks[0] == masks[1]).float().mean().item() < 0.6


@pytest.mark.slow
def test_a_run_with_layers_compiled_once_learns_what_it_learns_without(tiny_model, tiny_data, tmp_path):
    """The flag reaches the run's model: under the GPU recipe's settings (bf16 autocast, frozen weights in bf16,
    the backward's recompute, symbolic shapes), dynamo traces less of the one graph, and the run takes the same
    steps, losses and dev predictions as without it."""
    from torch._dynamo.utils import counters

    flags = ["--use_cpu", "--bf16", "True", "--bf16_frozen_weights", "True", "--recompute_in_backward", "True"]
    flags += ["--torch_compile", "--torch_compile_backend", "aot_eager", "--torch_compile_dynamic", "True"]
    flags += ["--pad_to_multiple_of", "16", "--num_train_epochs", "1", "--save_strategy", "no"]
    runs = {}
    for once in (False, True):
        torch._dynamo.reset()
        counters.clear()
        argv = [*flags, "--compile_layers_once", str(once), "--run_name", f"once-{once}"]
        assert main(tiny_argv(tiny_model, tiny_data, tmp_path, *argv), method="prefix") == 0
        runs[once] = read_json(tmp_path / f"once-{once}.json"), dict(counters["stats"])
    (record, traced), (once_record, once_traced) = runs[False], runs[True]
    assert once_record["config"]["compile_layers_once"] is True and record["config"]["compile_layers_once"] is False
    assert traced["unique_graphs"] == once_traced["unique_graphs"] == 1
    assert once_traced["calls_captured"] < traced["calls_captured"]
    assert once_record["efficiency"]["train_steps"] == record["efficiency"]["train_steps"] == 6  # 96 sentences
    for key in ("train_loss", "eval_loss"):
        assert once_record["history"][-1][key] == pytest.approx(record["history"][-1][key], rel=1e-3), key
    assert once_record["predictions"] == record["predictions"]


@pytest.mark.slow
@pytest.mark.parametrize("recompute", [False, True])
def test_recompute_in_backward_keeps_no_bf16_copy_of_a_trained_weight(recompute, tiny_model, tiny_data, tmp_path):
    """Under bf16 autocast, torch.compile's own split of a step keeps, from the forward for the backward, the bf16
    copy of every trained weight that a matmul reads: one per linear layer. The fast recipe's split
    (--recompute_in_backward) has the backward cast them again, and keeps none."""
    from torch._functorch import config as partitioner

    from experiment import build_model, build_trainer, prepare_data

    flags = ["--use_cpu", "--bf16", "True", "--torch_compile", "--torch_compile_backend", "aot_eager"]
    flags += ["--torch_compile_dynamic", "True", "--max_steps", "1", "--save_strategy", "no", "--eval_strategy", "no"]
    argv = tiny_argv(tiny_model, tiny_data, tmp_path, *flags, "--recompute_in_backward", str(recompute))
    experiment, training, _ = parse_args(argv, method="full")
    model, tokenizer = build_model(experiment, training)
    linear_layers = [module for module in model.modules() if isinstance(module, torch.nn.Linear)]
    copies = [layer.weight.detach().to(torch.bfloat16) for layer in linear_layers]  # as the first step sees them
    trainer = build_trainer(experiment, training, model, tokenizer, prepare_data(experiment, model, tokenizer).train)
    kept = []
    torch._dynamo.reset()
    try:
        with torch.autograd.graph.saved_tensors_hooks(lambda tensor: kept.append(tensor) or tensor, lambda t: t):
            trainer.train()
    finally:
        partitioner.ban_recompute_materialized_backward = True  # torch's default, for the tests after this one

    def is_copy(tensor, copy):
        return tensor.dtype == torch.bfloat16 and any(
            tensor.shape == view.shape and torch.equal(tensor, view) for view in (copy, copy.t())
        )

    kept_copies = sum(any(is_copy(tensor, copy) for tensor in kept) for copy in copies)
    assert kept and len(linear_layers) == 2 * 6 + 2  # two layers of six, the pooler and the classifier
    assert kept_copies == (0 if recompute else len(linear_layers))


@pytest.mark.slow
def test_bench_quick_on_cpu_writes_its_json(tmp_path, capsys):
    import bench

    assert bench.main(["--quick", "--use_cpu", "--results_dir", str(tmp_path / "bench")]) == 0
    (path,) = (tmp_path / "bench").glob("bench-*.json")
    report = json.loads(path.read_text())
    rows = {(row["method"], row["recipe"]): row for row in report["rows"]}
    assert set(rows) == {("full", "original"), ("full", "fast"), ("prefix", "original"), ("prefix", "fast")}
    for row in rows.values():
        assert row["ms_per_step"] > 0 and row["samples_per_s"] > 0 and row["peak_memory_mb"] is None
        assert row["projected_protocol_s"] > 0
    assert rows[("full", "original")]["speedup"] == 1.0
    assert rows[("full", "original")]["settings"]["pad_to_max_length"] is True
    assert "ms/step" in capsys.readouterr().out


@pytest.mark.slow
def test_bench_profile_writes_a_trace(tmp_path):
    import bench

    flags = ["--quick", "--use_cpu", "--profile", "--methods", "prefix", "--recipes", "fast"]
    assert bench.main([*flags, "--results_dir", str(tmp_path)]) == 0
    with gzip.open(tmp_path / "trace-prefix-fast.json.gz", "rt") as handle:
        trace = json.load(handle)
    assert any(event.get("name", "").startswith("aten::") for event in trace["traceEvents"])


def test_kernel_time_leaves_out_the_annotations_mirrored_on_the_device():
    """The H100 profile's numbers (results/gpu_report.json, its table's rows over 20 steps): the ProfilerStep
    and optimizer-step annotations span kernels that are counted on their own, so only the kernels add up."""
    from types import SimpleNamespace

    import bench

    def event(device, us, annotation=False):
        return SimpleNamespace(
            device_type=f"DeviceType.{device}", self_device_time_total=us, is_user_annotation=annotation
        )

    events = [
        event("CUDA", 429_153, annotation=True),  # ProfilerStep*
        event("CUDA", 26_750, annotation=True),  # Optimizer.step#AdamW.step
        event("CUDA", 24_194),  # the fused AdamW kernels
        event("CUDA", 6_446),  # the clipping's multiply
        event("CPU", 24_194),  # aten::_fused_adamw_, the host side of the same kernels
    ]
    assert bench.kernel_time_us(events) == 24_194 + 6_446


@pytest.mark.parametrize("method", ["full", "prefix"])
def test_the_pipeline_trainer_counts_parameters_once(method, tiny_model, tokenizer, tmp_path, monkeypatch):
    """Its FLOPs estimate equals the Trainer's, without re-walking the model at every step."""
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2)
    model = apply_method(model, method, ExperimentArguments(method=method, num_virtual_tokens=4))
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    plain, ours = Trainer(model=model, args=args), ExperimentTrainer(model=model, args=args)
    batches = [tokenizer(["good", "the plot was dull and boring"], padding=True, return_tensors="pt") for _ in range(3)]
    expected = [plain.floating_point_ops(batch) for batch in batches]
    assert all(flops > 0 for flops in expected)

    counted, count = [], model.num_parameters
    monkeypatch.setattr(model, "num_parameters", lambda *a, **k: counted.append(1) or count(*a, **k))
    assert [ours.floating_point_ops(batch) for batch in batches] == expected
    assert len(counted) == 1


class CountsItsTrainCalls(torch.nn.Module):
    """A module whose train() does more than set `training` (as peft's DoRA layers clear a cache)."""

    calls = 0

    def train(self, mode=True):
        CountsItsTrainCalls.calls += 1
        return super().train(mode)


def test_modules_listed_once_keep_train_zero_grad_and_parameters_exact(tiny_model):
    from experiment import ModulesListedOnce

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2)
    expected = list(model.parameters())  # before: the class's walk
    listed = ModulesListedOnce(model)
    assert list(model.parameters()) == expected and list(model.parameters(recurse=False)) == []
    model.train()
    model.bert.encoder.eval()  # an evaluation may switch part of the model by another route
    assert model.train() is model and all(module.training for module in model.modules())
    model.eval()
    assert not any(module.training for module in model.modules())
    model.train()
    model(input_ids=torch.tensor([[2, 5, 3]]), labels=torch.tensor([1])).loss.backward()
    model.zero_grad()
    assert all(parameter.grad is None for parameter in expected)
    listed.undo()
    assert not {"train", "zero_grad", "parameters"} & set(vars(model))  # the class's methods again

    model.classifier = torch.nn.Sequential(CountsItsTrainCalls(), model.classifier)
    ModulesListedOnce(model)
    before = CountsItsTrainCalls.calls
    model.train()
    model.train()
    assert CountsItsTrainCalls.calls == before + 2  # never skipped where a module's train() does more


@pytest.mark.parametrize("method", ["full", "prefix", "lora"])
def test_walking_the_modules_once_learns_exactly_the_same(method, tiny_model, tiny_data, tmp_path):
    """Two epochs with an evaluation between them: dropout must be back on for the second, and every
    gradient cleared between steps, or the losses part."""
    runs = {}
    for once in ("True", "False"):
        flags = ("--recipe", "fast", "--walk_modules_once", once, "--run_name", f"once-{once}", "--save_model", "False")
        assert main(tiny_argv(tiny_model, tiny_data, tmp_path, *flags), method=method) == 0
        runs[once] = read_json(tmp_path / f"once-{once}.json")
    assert runs["True"]["config"]["walk_modules_once"] and not runs["False"]["config"]["walk_modules_once"]
    assert len(runs["True"]["history"]) == 2
    assert runs["True"]["history"] == runs["False"]["history"]
    assert runs["True"]["predictions"] == runs["False"]["predictions"]


@pytest.mark.parametrize("once", [True, False])
def test_the_loop_walks_the_model_s_modules_only_at_its_first_step(once, tiny_model, tiny_data, tmp_path, monkeypatch):
    """The Trainer's model.train(), model.zero_grad() and the clipping's model.parameters() each walk every
    module at every step, unless the pipeline listed them once; after training the model is as it was."""
    from transformers import TrainerCallback

    from experiment import build_model, build_trainer, prepare_data

    argv = tiny_argv(tiny_model, tiny_data, tmp_path, "--max_steps", "4", "--walk_modules_once", str(once))
    experiment, training, _ = parse_args([*argv, "--use_cpu", "--eval_strategy", "no"], method="full")
    model, tokenizer = build_model(experiment, training)
    data = prepare_data(experiment, model, tokenizer)
    modules = sum(1 for _ in model.modules())
    walks, per_step = [0], []
    for name in ("named_children", "named_modules"):  # what train() and parameters() walk with
        walk = getattr(torch.nn.Module, name)
        monkeypatch.setattr(
            torch.nn.Module, name, lambda self, *a, _walk=walk, **k: walks.append(1) or _walk(self, *a, **k)
        )

    class CountWalks(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            per_step.append(len(walks))

    build_trainer(experiment, training, model, tokenizer, data.train, callbacks=[CountWalks()]).train()
    steps = [after - before for before, after in zip(per_step, per_step[1:])]
    assert len(steps) == 3
    assert steps == [0, 0, 0] if once else all(count >= 3 * modules for count in steps)
    assert not {"train", "zero_grad", "parameters"} & set(vars(model))


@pytest.mark.parametrize("method", ["prefix", "prefix-v2", "prompt", "ptuning", "lora", "full"])
def test_prompt_tokens_go_where_the_prompt_encoder_is(method, tiny_model):
    """peft keeps a prompt-learning model's virtual-token ids (0 to 19, one per virtual token) beside the module
    tree, where model.to() leaves them; placed, they are on the encoder's device."""
    from methods import place_prompt_tokens

    experiment, _, _ = parse_args(["--use_cpu"], method=method)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2)
    model = apply_method(model, method, experiment).to("meta")  # a device other than the CPU, with no values
    tokens = getattr(model, "prompt_tokens", None)
    if method in ("lora", "full"):
        assert not tokens
        place_prompt_tokens(model)  # nothing to place, and no error
        return
    assert tokens["default"].device == torch.device("cpu") and tokens["default"].tolist() == list(range(20))
    place_prompt_tokens(model)
    assert tokens["default"].device == model.prompt_encoder["default"].embedding.weight.device == torch.device("meta")
    assert tokens["default"].shape == (20,)


@pytest.mark.parametrize("method", ["prompt", "ptuning"])
@pytest.mark.parametrize("placed", [True, False])
def test_placed_prompt_tokens_are_no_cpu_input_of_the_compiled_graph(method, placed, tiny_model):
    """The model on a device other than the CPU (meta: dynamo traces it without values), as on a GPU: left where
    peft keeps them, the ids are a CPU input of the graph that torch.compile traces, which inductor cannot put
    in a CUDA graph; placed, the graph has no CPU input. (Prefix tuning's cache fails to trace on meta.)"""
    from methods import place_prompt_tokens

    experiment, _, _ = parse_args(["--use_cpu"], method=method)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2)
    model = apply_method(model, method, experiment).to("meta")
    if placed:
        place_prompt_tokens(model)
    cpu_inputs = []

    def backend(graph, example_inputs):
        for node in graph.graph.nodes:
            value = node.meta.get("example_value")
            if node.op == "placeholder" and isinstance(value, torch.Tensor) and value.device.type == "cpu":
                cpu_inputs.append(node.target)
        return graph

    torch._dynamo.reset()
    ids = torch.randint(5, 50, (2, 7), device="meta")
    with torch._dynamo.config.patch(specialize_float=True):  # as the pipeline compiles (experiment._compile_dynamic)
        torch.compile(model, backend=backend, dynamic=True)(input_ids=ids, attention_mask=torch.ones_like(ids))
    torch._dynamo.reset()
    assert cpu_inputs == ([] if placed else ["L_self_prompt_tokens_default_"])


@pytest.mark.parametrize("on_device", [True, False])
def test_the_pipeline_places_the_prompt_tokens_once_before_the_first_forward(
    on_device, tiny_model, tiny_data, tmp_path, monkeypatch
):
    """With --prompt_tokens_on_device (the fast recipe's), the ids are placed on the trained model once per
    train(), before its first forward, so a compiled step compiles with them there."""
    import experiment as pipeline
    from experiment import build_model, build_trainer, prepare_data

    events = []
    place = pipeline.place_prompt_tokens
    monkeypatch.setattr(pipeline, "place_prompt_tokens", lambda model: events.append(("place", model)) or place(model))
    argv = tiny_argv(tiny_model, tiny_data, tmp_path, "--max_steps", "4")
    flags = ["--use_cpu", "--eval_strategy", "no", "--prompt_tokens_on_device", str(on_device)]
    experiment, training, _ = parse_args([*argv, *flags], method="prefix")
    model, tokenizer = build_model(experiment, training)
    data = prepare_data(experiment, model, tokenizer)
    model.register_forward_pre_hook(lambda module, args: events.append(("forward", None)))
    trainer = build_trainer(experiment, training, model, tokenizer, data.train)
    trainer.train()
    kinds = [kind for kind, _ in events]
    assert kinds.count("forward") == 4  # one per step
    if on_device:
        assert events[0] == ("place", model) and kinds.count("place") == 1
    else:
        assert "place" not in kinds


def test_placing_the_prompt_tokens_learns_exactly_the_same(tiny_model, tiny_data, tmp_path):
    runs = {}
    for on_device in ("True", "False"):
        flags = ("--recipe", "fast", "--prompt_tokens_on_device", on_device, "--run_name", f"placed-{on_device}")
        assert main(tiny_argv(tiny_model, tiny_data, tmp_path, *flags, "--save_model", "False"), method="prefix") == 0
        runs[on_device] = read_json(tmp_path / f"placed-{on_device}.json")
    assert runs["True"]["config"]["prompt_tokens_on_device"] and not runs["False"]["config"]["prompt_tokens_on_device"]
    assert len(runs["True"]["history"]) == 2
    assert runs["True"]["history"] == runs["False"]["history"]
    assert runs["True"]["predictions"] == runs["False"]["predictions"]


def test_the_module_walks_tool_times_each_method_s_structure(tiny_model, tmp_path):
    output = tmp_path / "walks.json"
    argv = ["--model_name_or_path", tiny_model, "--methods", "full,lora", "--steps", "3", "--repeats", "1"]
    assert tool("module_walks").main([*argv, "--output", str(output)]) == 0
    record = read_json(output)
    assert record["kind"] == "module_walks" and record["command"].startswith("python tools/module_walks.py ")
    assert tiny_model not in record["command"] and os.path.basename(tiny_model) in record["command"]  # no machine path
    full, lora = record["rows"]
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2)
    assert (full["method"], full["modules"], full["parameter_tensors"]) == (
        "full",
        len(list(model.modules())),
        len(list(model.parameters())),
    )
    assert lora["modules"] > full["modules"]  # peft's wrappers and LoRA's own modules
    assert all(row["class_methods_ms"] > 0 and row["listed_once_ms"] > 0 for row in record["rows"])


@pytest.mark.slow
def test_bench_variants_add_rows_and_a_bad_one_fails_alone(tmp_path, capsys):
    import bench

    flags = ["--quick", "--use_cpu", "--methods", "full", "--recipes", "fast"]
    padded_flags = "--pad_to_max_length True --gradient_accumulation_steps 2"
    variants = ["--variants", f"{padded_flags};--no_such_flag 1"]
    assert bench.main([*flags, *variants, "--results_dir", str(tmp_path)]) == 1
    (path,) = tmp_path.glob("bench-*.json")
    plain, padded, bad = json.loads(path.read_text())["rows"]
    assert plain["variant"] is None and plain["settings"]["pad_to_max_length"] is False
    assert padded["variant"] == padded_flags and padded["settings"]["pad_to_max_length"] is True
    assert padded["ms_per_step"] > 0 and "no_such_flag" in bad["error"]
    assert "fast --pad_to_max_length True" in capsys.readouterr().out
    # A step of the variant takes two batches: throughput and speed-up count sentences, not steps.
    assert (plain["sentences_per_step"], padded["sentences_per_step"]) == (16, 32)
    assert padded["samples_per_s"] == pytest.approx(32_000 / padded["ms_per_step"], abs=0.1)
    speedup = (plain["ms_per_step"] / 16) / (padded["ms_per_step"] / 32)
    assert padded["speedup"] == pytest.approx(speedup, abs=1e-3)


def test_the_same_step_check_finds_the_key_biases_zero_and_the_rest_equal(tiny_model, tiny_data, tmp_path):
    """tools/same_step.py on the tiny model: the key biases' gradient is zero in exact arithmetic (softmax ignores a
    shift shared by every key), so it lands apart; every other gradient agrees across the two paddings."""
    same_step = tool("same_step")
    output = tmp_path / "same_step.json"
    argv = ["--model_name_or_path", tiny_model, "--data_dir", tiny_data, "--max_seq_length", "64"]
    assert same_step.main([*argv, "--output", str(output)]) == 0
    report = read_json(output)
    full, prefix = report["rows"]
    layers = AutoConfig.from_pretrained(tiny_model).num_hidden_layers
    assert sorted(full["zero_gradient_tensors"]) == [
        f"bert.encoder.layer.{i}.attention.self.key.bias" for i in range(layers)
    ]
    assert full["widths"][0] == 64  # prefix tuning's is shorter: its virtual tokens take positions too
    for row in (full, prefix):
        assert row["widths"][0] > row["widths"][1]
        assert row["loss_difference"] < 1e-6 and row["max_relative_gradient_difference"] < 1e-4
    assert tiny_model not in report["command"] and report["kind"] == "same_step"


@pytest.mark.parametrize("method", ["full", "prefix"])
def test_bench_s_bare_loop_takes_the_trainer_s_steps(method, tiny_model, tiny_data, tmp_path):
    """bench.bare_loop, the reference for what the Trainer's loop adds to a step, must compute the same steps:
    the same batches, clipping, optimizer and schedule leave the same weights. Dropout is off, so that no random
    draw can tell the two loops apart, and the clipping's threshold low, so that it acts at every step."""
    import bench
    from experiment import build_model, build_trainer, prepare_data

    argv = tiny_argv(tiny_model, tiny_data, tmp_path, "--max_steps", "5", "--max_grad_norm", "0.01")
    flags = ["--use_cpu", "--eval_strategy", "no", "--train_sampling_strategy", "sequential"]
    experiment, training, _ = parse_args([*argv, *flags], method=method)
    trained = {}
    for loop in ("trainer", "bare"):
        model, tokenizer = build_model(experiment, training)
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        data = prepare_data(experiment, model, tokenizer)
        trainer = build_trainer(experiment, training, model, tokenizer, data.train)
        if loop == "trainer":
            trainer.train()
        else:
            stages = bench.StageTimer(warmup_steps=2)
            begin, warm, end = bench.bare_loop(trainer, 2, stages)
            assert begin <= warm <= end and stages.steps == 3  # steps 3 to 5 are timed
        trained[loop] = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    initial, _ = build_model(experiment, training)
    start = dict(initial.named_parameters())
    assert any(not torch.equal(start[name], value) for name, value in trained["bare"].items())  # it trained
    for name, value in trained["trainer"].items():
        torch.testing.assert_close(trained["bare"][name], value, rtol=1e-5, atol=1e-6)


def test_bench_s_reference_loop_is_plain_adamw_on_one_batch(tiny_model, tiny_data, tmp_path):
    """bench.reference_loop, the GPU issue's floor: the same fixed batch at every step, AdamW at a constant rate,
    no clipping (the threshold is low enough to act at every step, were there any). The expected weights come
    from torch's own AdamW in a loop written here; dropout is off, so no random draw tells the two apart."""
    import bench
    from experiment import build_model, build_trainer, prepare_data

    argv = tiny_argv(tiny_model, tiny_data, tmp_path, "--max_steps", "5", "--max_grad_norm", "0.01")
    experiment, training, _ = parse_args([*argv, "--use_cpu", "--eval_strategy", "no"], method="full")

    def fresh():
        model, tokenizer = build_model(experiment, training)
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        return model, tokenizer

    model, tokenizer = fresh()
    trainer = build_trainer(experiment, training, model, tokenizer, prepare_data(experiment, model, tokenizer).train)
    stages = bench.StageTimer(warmup_steps=2)
    begin, warm, end = bench.reference_loop(trainer, 2, stages)
    assert begin <= warm <= end and stages.steps == 3  # steps 3 to 5 are timed

    expected, _ = fresh()
    batch = bench.reference_batch(expected, training)
    assert batch["input_ids"].shape == (16, 64) and batch["labels"].shape == (16,)  # the issue's [16, 64]
    trained = [p for p in expected.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        trained,
        lr=training.learning_rate,
        betas=(training.adam_beta1, training.adam_beta2),
        eps=training.adam_epsilon,
        weight_decay=training.weight_decay,
    )
    expected.train()
    for _ in range(5):
        expected(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    names = dict(expected.named_parameters())
    for name, value in model.named_parameters():
        torch.testing.assert_close(value.detach(), names[name].detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("variant, symbolic", [("reference loop", False), ("reference loop dynamic", True)])
def test_bench_s_reference_loops_compile_for_one_shape_or_for_symbolic_ones(
    variant, symbolic, tiny_model, tiny_data, tmp_path, monkeypatch
):
    """The GPU issue's reference compiled for its one shape; its dynamic row compiles the same step for symbolic
    shapes, as the recipe does: what reaches the compiler, seen by a backend that records its graph's inputs and
    runs the graph as traced."""
    import bench
    from experiment import build_model, build_trainer, prepare_data

    argv = tiny_argv(tiny_model, tiny_data, tmp_path, "--max_steps", "2", "--torch_compile", "True")
    experiment, training, _ = parse_args([*argv, "--use_cpu", "--eval_strategy", "no"], method="full")
    model, tokenizer = build_model(experiment, training)
    trainer = build_trainer(experiment, training, model, tokenizer, prepare_data(experiment, model, tokenizer).train)
    graphs, compile = [], torch.compile

    def record(graph, inputs):
        graphs.append([d for x in inputs if isinstance(x, torch.Tensor) for d in x.shape] + list(inputs))
        return graph.forward

    monkeypatch.setattr(torch, "compile", lambda model, mode, dynamic: compile(model, backend=record, dynamic=dynamic))
    bench.LOOPS[variant](trainer, 1, bench.StageTimer(warmup_steps=1))
    assert graphs  # the step compiled
    assert all(any(isinstance(x, torch.SymInt) for x in graph) == symbolic for graph in graphs)


def test_bench_s_bare_loop_refuses_gradient_accumulation():
    """Its step is one batch: with accumulation it would time another step than the Trainer's."""
    import types

    import bench

    trainer = types.SimpleNamespace(args=types.SimpleNamespace(gradient_accumulation_steps=2))
    with pytest.raises(ConfigError, match="one batch per step"):
        bench.bare_loop(trainer, 1, bench.StageTimer(1))


@pytest.mark.parametrize(
    "gpu, says",
    [
        (GpuSupport("NVIDIA H200"), "bf16, torch.compile with CUDA graphs, lengths padded to multiples of 16"),
        (T4, "fp16 with loss scaling, torch.compile with CUDA graphs, lengths padded to multiples of 16"),
        (P100, "fp16 with loss scaling, eager"),
        (None, "fp32, eager, each batch padded to its longest sentence"),
    ],
)
def test_check_env_says_what_the_fast_recipe_runs_on_each_kind_of_device(gpu, says):
    from config import fast_recipe_here

    assert fast_recipe_here(gpu) == says
