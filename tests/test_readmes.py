"""The READMEs' links and paths lead somewhere: a renamed heading, figure or reference set breaks them silently."""

import glob
import os
import re

import pytest
from conftest import ROOT

from results import read_json

READMES = ["README.md", os.path.join("results", "README.md")]
REFERENCE = os.path.join(ROOT, "results", "reference")


def read(name):
    with open(os.path.join(ROOT, name)) as handle:
        return handle.read()


def committed(folder, name):
    """A committed reference set's JSON: the independent source of the numbers a README quotes."""
    return read_json(os.path.join(REFERENCE, folder, name))


def anchor(heading):
    """GitHub's id for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("name", READMES)
def test_every_link_in_a_readme_reaches_a_file_or_a_heading(name):
    text = read(name)
    headings = {anchor(h) for h in re.findall(r"^#+ (.+)$", text, re.MULTILINE)}
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    for target in targets:
        if target.startswith(("http://", "https://")):
            continue
        if target.startswith("#"):
            assert target[1:] in headings, target
        else:
            assert os.path.exists(os.path.join(ROOT, os.path.dirname(name), target.split("#")[0])), target


def test_every_reference_path_the_readme_names_exists():
    paths = set(re.findall(r"`(results/reference/[^`\s<*]*)`", read("README.md")))
    assert paths
    for path in paths:
        assert os.path.exists(os.path.join(ROOT, path)), path


def test_the_results_readme_lists_every_reference_set_and_only_those():
    listed = re.findall(r"^\| `([^`]+)` \|", read(os.path.join("results", "README.md")), re.MULTILINE)
    found = set()
    for entry in listed:
        matches = glob.glob(os.path.join(REFERENCE, entry.replace("<method>", "*")))
        assert matches, entry
        found.add(os.path.relpath(matches[0], REFERENCE).split(os.sep)[0])
    assert found == set(os.listdir(REFERENCE))


def test_the_readme_s_module_walk_times_are_the_committed_ones():
    rows = {row["method"]: row for row in committed("module-walks-cpu", "module_walks.json")["rows"]}
    full, lora = rows["full"], rows["lora"]
    said = " ".join(read("README.md").split())
    assert (
        f"they take {full['class_methods_ms']:.1f} ms per step for BERT-base's {full['modules']} modules "
        f"({lora['class_methods_ms']:.1f} ms with LoRA's), and {full['listed_once_ms']:.2f} ms listed once"
    ) in said


def test_the_readme_s_batch_times_are_the_committed_ones():
    rows = {
        (row["collator"], row["workers"]): row["ms_per_batch"]
        for row in committed("batch-time-cpu", "batch_time.json")["rows"]
    }
    said = " ".join(read("README.md").split())
    assert (
        f"a batch of 16 cost that thread {rows['PaddingCollator', 0]:.2f} ms, against "
        f"{rows['DataCollatorWithPadding', 0]:.2f} ms with `DataCollatorWithPadding`, and "
        f"{rows['DataCollatorWithPadding', 2]:.2f} ms to take it from one of two data-loader workers"
    ) in said


def test_the_readme_s_compile_times_are_the_committed_ones():
    rows = {row["setting"]: row for row in committed("compile-time-cpu", "compile_time.json")["rows"]}
    fixed, symbolic = rows["pipeline"], rows["symbolic floats"]
    assert (fixed["traces"], symbolic["traces"]) == (1, 2)
    said = " ".join(read("README.md").split())
    assert f"compiled in {fixed['first_step_s']:.1f} s instead of {symbolic['first_step_s']:.1f} on our CPU" in said
    assert (
        f"{symbolic['first_step_s'] - fixed['first_step_s']:.0f} s of {symbolic['first_step_s']:.0f} on our CPU" in said
    )
    cold, warm = rows["first run, caches on"]["first_step_s"], rows["next run, caches on"]["first_step_s"]
    assert f"a second run of that step took {warm} s instead of the first run's {cold}" in said
    # the quick start and the GPU section say it again
    assert said.count(f"took {warm} s instead of {cold} in") == 2
    prefix = rows["prefix tuning"]
    assert prefix["traces"] == 1
    assert f"took {prefix['first_step_s']} s against full fine-tuning's {fixed['first_step_s']}, each traced" in said
    once, prefix_once = rows["layers once"], rows["prefix tuning, layers once"]
    assert once["traces"] == prefix_once["traces"] == 1
    assert (
        f"took {once['first_step_s']} s instead of {fixed['first_step_s']} on our CPU for full fine-tuning, and "
        f"{prefix_once['first_step_s']} s instead of {prefix['first_step_s']} for prefix tuning" in said
    )
    assert (
        f"first step from {fixed['first_step_s']} to {once['first_step_s']} s on our CPU, and prefix tuning's from "
        f"{prefix['first_step_s']} to {prefix_once['first_step_s']};" in said
    )
    saved = round(100 * (1 - once["first_step_s"] / fixed["first_step_s"]))
    assert f"compiled BERT-base's first step in {saved} % less time on our CPU" in said


def test_the_readme_s_saved_activation_sizes_are_the_committed_ones():
    report = committed("saved-activations-cpu", "saved_activations.json")
    kept = {(row["method"], row["recompute_in_backward"]): row for row in report["rows"]}
    gradients = {row["method"]: row for row in report["gradients"]}
    full, prefix = gradients["full"], gradients["prefix"]
    assert full["bitwise_equal"] == full["gradient_tensors"]  # "every gradient bit for bit the same"
    assert kept["full", True]["weight copies"]["mib"] == kept["prefix", True]["weight copies"]["mib"] == 0
    said = " ".join(read("README.md").split())
    assert (
        f"keeps {kept['full', True]['kept_beyond_parameters_mib']} MiB beyond the parameters for its backward "
        f"instead of {kept['full', False]['kept_beyond_parameters_mib']} for full fine-tuning "
        f"({kept['full', False]['weight copies']['mib']} of them weight copies)"
    ) in said
    assert (
        f"and {kept['prefix', True]['kept_beyond_parameters_mib']} instead of "
        f"{kept['prefix', False]['kept_beyond_parameters_mib']} for prefix tuning"
    ) in said
    assert f"up to {100 * prefix['largest_relative_difference']:.1f} % of each tensor's largest entry" in said
    # the GPU section's account of full fine-tuning's peak
    before, after = kept["full", False]["kept_beyond_parameters_mib"], kept["full", True]["kept_beyond_parameters_mib"]
    assert f"{before} MiB on our CPU under torch's own split" in said
    assert f"The recipe now keeps {before - after:.1f} MiB less" in said


def test_the_quick_start_s_cpu_times_are_the_committed_runs():
    """The quick start's CPU times are the two runs of its command in results/reference/cpu-try-bert-base/, on a
    model of BERT-base's size (the counts peft and the original report), whose 42,100 steps it projects."""
    runs = {method: committed("cpu-try-bert-base", f"{method}.json") for method in ("full", "prefix")}
    assert [runs[m]["params"]["trainable"] for m in runs] == [109_483_778, 14_781_698]
    for run in runs.values():
        assert "--max_train_samples 2000 --num_train_epochs 1 --lr_preset tuned" in run["command"]
        assert run["efficiency"]["train_steps"] == 125 and run["environment"]["device"] == "cpu"  # 2,000 / 16
    minutes = {m: f"{run['efficiency']['total_time_s'] / 60:.1f}" for m, run in runs.items()}
    hours = {m: f"{42_100 * run['efficiency']['train_time_s'] / 125 / 3600:.0f}" for m, run in runs.items()}
    said = " ".join(read("README.md").split())
    assert f"took {minutes['full']} minutes on our 2-core CPU" in said
    assert f"with the same flags {minutes['prefix']} (125 steps of BERT-base's architecture" in said
    assert f"{hours['full']} hours for full fine-tuning, {hours['prefix']} for prefix tuning" in said
