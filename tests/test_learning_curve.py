"""When does parameter-efficient tuning pay: accuracy against the number of training sentences."""

import copy
import hashlib
import statistics

import matplotlib.collections
import matplotlib.container
import pytest
from datasets import Dataset
from test_plot_results import record

import compare
import plot_results
from data_loader import DataError, nested_subset
from results import read_json, write_json_atomic

LABELS = [1 if i % 10 < 3 else 0 for i in range(300)]  # 30 % positive
POOL = Dataset.from_dict({"sentence": [f"s{i}" for i in range(300)], "label": LABELS})


def test_subsets_are_nested_stratified_and_reproducible():
    drawn = {size: nested_subset(POOL, size)[1] for size in (10, 50, 100, 299)}
    for smaller, larger in zip((10, 50, 100), (50, 100, 299)):
        assert set(drawn[smaller]) < set(drawn[larger])  # nested
    for size, indices in drawn.items():
        assert len(set(indices)) == size
        assert abs(sum(LABELS[i] for i in indices) - 0.3 * size) <= 1  # each class in its share, to one sentence
    assert nested_subset(POOL, 50)[1] == drawn[50]  # the same sentences every time
    assert nested_subset(POOL, 50, seed=7)[1] != drawn[50]  # and random: another seed draws others
    assert drawn[10] != sorted(drawn[10])  # not the first rows of each class
    subset, indices = nested_subset(POOL, 10)
    assert list(subset["sentence"]) == [f"s{i}" for i in indices]
    with pytest.raises(DataError, match="--train_size 301 is more than the 300 training sentences"):
        nested_subset(POOL, 301)


@pytest.mark.slow
def test_every_size_trains_for_the_budget_and_records_its_sentences(tiny_model, tiny_data, tmp_path):
    flags = ["--methods", "full,head", "--seeds", "1", "--train_sizes", "24,8", "--budget_steps", "5"]
    common = ["--model_name_or_path", tiny_model, "--data_dir", tiny_data, "--learning_rate", "1e-3"]
    assert compare.main([*flags, "--results_dir", str(tmp_path), *common, "--disable_tqdm", "True"]) == 0
    runs = [read_json(p) for p in tmp_path.glob("*.json") if not p.name.startswith("summary")]
    assert sorted((r["method"], r["data"]["train_sentences"]) for r in runs) == [
        ("full", 8),
        ("full", 24),
        ("head", 8),
        ("head", 24),
    ]
    for run in runs:
        assert run["step"] == 5  # 8 sentences are one step an epoch, 24 two: the same budget, cycling over them
        assert run["data"]["subset"]["size"] == run["data"]["train_sentences"]
        assert run["metrics"]["eval_total"] == 40  # every dev sentence
    checksums = {(r["data"]["train_sentences"], r["data"]["subset"]["indices_sha256"]) for r in runs}
    assert len(checksums) == 2  # both methods trained on the same sentences at each size, other ones across sizes
    summary = (tmp_path / "summary.md").read_text()
    assert "5 optimizer steps per run" in summary and "| 8 |" in summary and "| 24 |" in summary
    assert (tmp_path / "figures" / "accuracy_vs_train_size.png").stat().st_size > 0


ACCURACIES = {  # (method, size): accuracy per seed 1, 2, 3
    ("full", 100): (0.60, 0.70, 0.65),
    ("full", 1000): (0.85, 0.86, 0.87),
    ("lora", 100): (0.72, 0.74, 0.70),
    ("lora", 1000): (0.84, 0.83, 0.85),
    ("head", 100): (0.55, 0.56, 0.57),
    ("head", 1000): (0.62, 0.60, 0.61),
}


@pytest.fixture
def curve_folder(tmp_path):
    for (method, size), accuracies in ACCURACIES.items():
        for seed, accuracy in enumerate(accuracies, start=1):
            run = copy.deepcopy(record(method, accuracy, 10, f"{method}-n{size}-seed{seed}", seed=seed))
            run["config"]["train_size"] = size
            run["config"]["training_arguments"]["max_steps"] = 250
            run["predictions"] = [1, 1, 1, 1, 1, 0, 1, 0] if method == "head" else run["labels"]
            write_json_atomic(tmp_path / f"{run['run_name']}.json", run)
    return tmp_path


def t_975(df):  # Student's t quantiles, from a table
    return {2: 4.302653}[df]


def test_the_table_and_the_figure_carry_the_runs_numbers(curve_folder):
    assert plot_results.main(["--results_dir", str(curve_folder)]) == 0
    runs = [read_json(p) for p in curve_folder.glob("*-seed*.json")]
    summary = (curve_folder / "summary.md").read_text()
    assert "250 optimizer steps per run" in summary and "Majority class: 50.00 %" in summary
    for method, size in ACCURACIES:
        values = [
            100 * r["metrics"]["eval_accuracy"]
            for r in runs
            if (r["method"], r["config"]["train_size"]) == (method, size)
        ]
        mean, half = statistics.fmean(values), t_975(2) * statistics.stdev(values) / 3**0.5
        assert f"{mean:.2f} ± {half:.2f} (3)" in summary.split(f"| {size:,} |")[1].splitlines()[0]
    for seed in (1, 2, 3):  # McNemar at each size, per seed: the head got 2 of 8 wrong that full got right
        assert f"| 100 | head | {seed} | 2 | 0 |" in summary and f"| 1,000 | lora | {seed} | 0 | 0 |" in summary

    from summary import learning_curve

    figure = plot_results.accuracy_vs_train_size(learning_curve(runs), runs)
    drawn = figure.axes[0].get_lines()
    lines = {line.get_label().split(" (")[0]: line for line in drawn if line.get_label() != "_run"}
    for method in ("full", "lora", "head"):
        expected = [statistics.fmean(100 * a for a in ACCURACIES[method, size]) for size in (100, 1000)]
        x = list(lines[method].get_xdata())  # beside its size, by the same factor at every size (a log axis)
        assert x[1] / x[0] == pytest.approx(10) and 0.9 < x[0] / 100 < 1.1
        assert list(lines[method].get_ydata()) == pytest.approx(expected)
    assert len({lines[method].get_xdata()[0] for method in ("full", "lora", "head")}) == 3  # side by side
    assert lines["head"].get_linestyle() == "--"  # the control
    majority = [line for label, line in lines.items() if label.startswith("_")]
    assert [list(line.get_ydata()) for line in majority] == [[50.0, 50.0]]  # 4 of the 8 labels are 1
    nearest = {x: min((100, 1000), key=lambda size: abs(x / size - 1)) for line in drawn for x in line.get_xdata()}
    dots = sorted((nearest[x], y) for line in drawn if line.get_label() == "_run" for x, y in zip(*line.get_data()))
    expected = sorted((size, 100 * a) for (_, size), values in ACCURACIES.items() for a in values)  # each seed's run
    assert dots == pytest.approx(expected)


def test_regenerating_a_curve_gives_identical_files(curve_folder):
    def digest():
        files = sorted(curve_folder.glob("summary*")) + sorted((curve_folder / "figures").glob("*.png"))
        return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}

    assert plot_results.main(["--results_dir", str(curve_folder)]) == 0
    first = digest()
    assert plot_results.main(["--results_dir", str(curve_folder)]) == 0
    assert digest() == first and "accuracy_vs_train_size.png" in first


def test_a_curve_of_one_size_draws_each_method_s_interval_as_a_bar_side_by_side(curve_folder):
    """With one size there is no band to draw: each method's 95 % interval is an error bar, and the methods sit
    apart along the axis, so neither their bars nor their seeds' dots hide one another."""
    from summary import learning_curve

    runs = [read_json(p) for p in curve_folder.glob("*-n100-seed*.json")]
    figure = plot_results.accuracy_vs_train_size(learning_curve(runs), runs)
    axis = figure.axes[0]
    bars = [c for c in axis.containers if isinstance(c, matplotlib.container.ErrorbarContainer)]
    assert len(bars) == 3
    assert not [c for c in axis.collections if isinstance(c, matplotlib.collections.PolyCollection)]  # no band
    for bar, method in zip(bars, ("full", "lora", "head")):
        values = [100 * a for a in ACCURACIES[method, 100]]
        half = t_975(2) * statistics.stdev(values) / 3**0.5
        (segment,) = bar.lines[2][0].get_segments()
        assert [y for _, y in segment] == pytest.approx(
            [statistics.fmean(values) - half, statistics.fmean(values) + half], abs=0.01
        )  # summary.py's t quantile has three decimals
    means = [line for line in axis.get_lines() if line.get_label().split(" (")[0] in ("full", "lora", "head")]
    xs = [line.get_xdata()[0] for line in means]
    assert len(set(xs)) == 3 and all(90 < x < 111 for x in xs)  # apart, and still at 100 on the log axis
    assert "bars: 95 % CI" in axis.get_title()


def test_a_method_at_one_size_of_several_gets_a_bar_where_the_others_get_bands(curve_folder):
    """A band needs two sizes: LoRA at 100 sentences alone used to show no interval at all."""
    from summary import learning_curve

    runs = [read_json(p) for p in curve_folder.glob("*-seed*.json")]
    runs = [r for r in runs if (r["method"], r["config"]["train_size"]) != ("lora", 1000)]
    axis = plot_results.accuracy_vs_train_size(learning_curve(runs), runs).axes[0]
    (bar,) = [c for c in axis.containers if isinstance(c, matplotlib.container.ErrorbarContainer)]
    values = [100 * a for a in ACCURACIES["lora", 100]]
    half = t_975(2) * statistics.stdev(values) / 3**0.5
    (segment,) = bar.lines[2][0].get_segments()
    assert [y for _, y in segment] == pytest.approx(
        [statistics.fmean(values) - half, statistics.fmean(values) + half], abs=0.01
    )
    bands = [c for c in axis.collections if isinstance(c, matplotlib.collections.PolyCollection)]
    assert len(bands) == 2  # full and head
    assert "band (a bar at a method's only size): 95 % CI" in axis.get_title()
