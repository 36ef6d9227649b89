"""Any mix of valid and invalid settings either parses or is refused with ConfigError: never a traceback."""

import math
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config import ConfigError, parse_args

NUMBER_TEXT = st.sampled_from(["", "abc", "1e-3", "-0", "nan", "inf", "-inf", "0x10", "1_000", "3.5", "-2", "1e400"])
FLAGS = {
    "--method": st.sampled_from(["full", "prefix", "lora", "bitfit", "nonsense"]),
    "--lr_preset": st.sampled_from(["original", "tuned", "best"]),
    "--lora_r": st.one_of(st.integers(-2, 64).map(str), NUMBER_TEXT),
    "--learning_rate": st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), NUMBER_TEXT),
    "--num_train_epochs": st.one_of(st.integers(-3, 30).map(str), NUMBER_TEXT),
    "--per_device_train_batch_size": st.one_of(st.integers(-3, 512).map(str), NUMBER_TEXT),
    "--per_device_eval_batch_size": st.one_of(st.integers(-3, 512).map(str), NUMBER_TEXT),
    "--max_train_samples": st.one_of(st.integers(-3, 10**6).map(str), NUMBER_TEXT),
    "--max_seq_length": st.one_of(st.integers(-3, 4096).map(str), NUMBER_TEXT),
    "--num_virtual_tokens": st.one_of(st.integers(-3, 600).map(str), NUMBER_TEXT),
    "--max_steps": st.one_of(st.integers(-3, 100).map(str), NUMBER_TEXT),
    "--seed": st.one_of(st.integers(-10, 2**33).map(str), NUMBER_TEXT),
    "--recipe": st.sampled_from(["original", "fast", "turbo", ""]),
    "--prefix_projection": st.sampled_from(["True", "False", "yes", "0", "maybe"]),
    "--run_name": st.text(alphabet=string.printable, max_size=12),
    "--optim": st.sampled_from(["adamw_torch", "adamw_torch_fused", "sgd", "nonsense"]),
    "--data_dir": st.sampled_from(["/nonexistent", "."]),
    "--bogus": st.just("1"),
}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_every_setting_is_parsed_or_refused_clearly(data):
    chosen = data.draw(st.lists(st.sampled_from(sorted(FLAGS)), unique=True, max_size=6))
    argv = ["--use_cpu"]
    for flag in chosen:
        argv += [flag, data.draw(FLAGS[flag])]
    try:
        experiment, training, _ = parse_args(argv)
    except ConfigError as error:
        message = str(error)
        assert message and "\n" not in message and "Traceback" not in message
        return
    # What parses is usable.
    assert math.isfinite(training.learning_rate) and training.learning_rate > 0
    assert training.per_device_train_batch_size >= 1 and training.per_device_eval_batch_size >= 1
    assert training.max_steps > 0 or (math.isfinite(training.num_train_epochs) and training.num_train_epochs > 0)
    assert experiment.max_seq_length >= 4 and experiment.num_virtual_tokens >= 1
    assert training.run_name and "/" not in training.run_name and not training.run_name.startswith(".")
