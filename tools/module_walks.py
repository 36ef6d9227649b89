"""Host time of the three walks over the model that the Trainer's loop makes at every step, as the class
methods make them and as experiment.ModulesListedOnce does (the fast recipe's --walk_modules_once).

    python tools/module_walks.py --output results/reference/module-walks-cpu/module_walks.json

One step's walks: model.train(), model.parameters() read to the end (the gradient clipping's), and
model.zero_grad(). Timed on BERT-base's structure (BertConfig(), random init: the walks depend on the modules,
not the weights) for full fine-tuning and for each peft method, which adds its own modules. Prints a table and
writes a JSON with "kind": "module_walks". One thread, as on a GPU host the walks are plain Python.
"""

import argparse
import os
import statistics
import sys
import time

import torch
from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from config import ExperimentArguments  # noqa: E402
from experiment import ModulesListedOnce  # noqa: E402
from methods import apply_method  # noqa: E402
from models import PROBLEM_TYPE  # noqa: E402
from results import write_measurements  # noqa: E402
from utils import environment  # noqa: E402


def walks(model):
    model.train()
    for _ in model.parameters():
        pass
    model.zero_grad()


def ms_per_step(model, steps, repeats):
    """The median over `repeats` of the mean over `steps`, after an untimed round: robust to a busy moment
    on a shared machine and to the process's first moments."""
    for _ in range(steps):
        walks(model)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(steps):
            walks(model)
        times.append(1000 * (time.perf_counter() - started) / steps)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="full,prefix,lora,ia3,adapter", help="Comma-separated methods.")
    parser.add_argument("--model_name_or_path", help="A local model folder; default: BertConfig(), random init.")
    parser.add_argument("--steps", type=int, default=500, help="Steps per timing.")
    parser.add_argument("--repeats", type=int, default=9, help="Timings per configuration; the median is kept.")
    parser.add_argument("--output", help="Where the JSON goes; default: print only.")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for method in args.methods.split(","):
        if args.model_name_or_path:
            model = AutoModelForSequenceClassification.from_pretrained(args.model_name_or_path, num_labels=2)
        else:
            model = BertForSequenceClassification(BertConfig(num_labels=2, problem_type=PROBLEM_TYPE))
        model = apply_method(model, method, ExperimentArguments(method=method))
        row = {
            "method": method,
            "modules": sum(1 for _ in model.modules()),
            "parameter_tensors": sum(1 for _ in model.parameters()),
            "class_methods_ms": round(ms_per_step(model, args.steps, args.repeats), 4),
        }
        listed = ModulesListedOnce(model)
        row["listed_once_ms"] = round(ms_per_step(model, args.steps, args.repeats), 4)
        listed.undo()
        rows.append(row)
        print(
            f"{method:8s} {row['modules']:4d} modules {row['parameter_tensors']:4d} tensors: "
            f"{row['class_methods_ms']:.3f} ms per step walked, {row['listed_once_ms']:.3f} listed once"
        )
    if args.output:
        model = args.model_name_or_path and os.path.basename(os.path.normpath(args.model_name_or_path))
        model = model or "BertConfig() (bert-base-uncased's architecture), random init"
        write_measurements(
            args.output,
            "module_walks",
            "tools/module_walks.py",
            argv,
            model,
            rows,
            environment(),
            threads=torch.get_num_threads(),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
