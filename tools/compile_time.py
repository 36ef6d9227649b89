"""How long the fast recipe's compile of BERT-base takes, with Python floats fixed from the start (the
pipeline's setting, experiment._compile_dynamic) and left symbolic (torch's default under symbolic shapes);
and, with the pipeline's setting, in a machine's first run and in the runs after it, which find inductor's
compiled code in its on-disk caches.

    python tools/compile_time.py --output results/reference/compile-time-cpu/compile_time.json

Each setting runs in a fresh process: one forward and backward pass of BERT-base at random init (BertConfig():
the graph depends on the architecture, not the weights), batch 16 of 32 tokens, compiled by inductor for
symbolic shapes. The first two settings run with inductor's caches off, so neither reuses the other's work;
the next two share one cache folder that starts empty. Then the pipeline's setting again with prefix tuning
applied, caches off: what the method's graph costs to compile beside full fine-tuning's. Last, full and prefix
tuning with one encoder layer traced and compiled for all twelve (experiment.compile_layers_once), caches off:
what --compile_layers_once saves. Reports the wall time
of that first step, nearly all compiling, and how many times dynamo traced the model. Prints a table and
writes a JSON with "kind": "compile_time".
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SETTINGS = {  # {setting: (what it means, whether inductor's caches are on)}, run in this order
    "pipeline": ("floats fixed from the start (torch._dynamo.config.specialize_float = True)", False),
    "symbolic floats": ("torch's default under symbolic shapes (specialize_float = False)", False),
    "first run, caches on": ("the pipeline's setting, inductor's caches on and empty: a machine's first run", True),
    "next run, caches on": ("the same again, with the caches the first run filled: every later run", True),
    "prefix tuning": ("the pipeline's setting, with peft's prefix tuning (20 virtual tokens, projection)", False),
    "layers once": ("the pipeline's setting, one encoder layer traced for all twelve (--compile_layers_once)", False),
    "prefix tuning, layers once": ("prefix tuning, one encoder layer traced for all twelve", False),
}


def child(setting):
    import torch
    from torch._dynamo.utils import compilation_time_metrics
    from transformers import BertConfig, BertForSequenceClassification

    from experiment import _compile_dynamic
    from models import PROBLEM_TYPE

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(num_labels=2, problem_type=PROBLEM_TYPE)).train()
    if setting.startswith("prefix tuning"):  # it warmed up in 155 s on an H100 to full's 87 (results/gpu_report.json)
        from config import ExperimentArguments
        from methods import apply_method

        model = apply_method(model, "prefix", ExperimentArguments(method="prefix")).train()
    if setting.endswith("layers once"):
        from experiment import compile_layers_once

        compile_layers_once(model)
    with _compile_dynamic(True):  # what build_trainer sets for the fast recipe
        compiled = torch.compile(model, dynamic=True)
    if setting == "symbolic floats":
        torch._dynamo.config.specialize_float = False
    batch = {
        "input_ids": torch.randint(1000, 2000, (16, 32)),
        "attention_mask": torch.ones(16, 32, dtype=torch.long),
        "labels": torch.randint(0, 2, (16,)),
    }
    started = time.perf_counter()
    compiled(**batch).loss.backward()
    first_step_s = time.perf_counter() - started
    attempts = sum(1 for key in compilation_time_metrics if key.startswith("compile_attempt_"))
    print(json.dumps({"setting": setting, "first_step_s": round(first_step_s, 1), "traces": attempts}))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", help="Where the JSON goes; default: print only.")
    parser.add_argument("--child", choices=sorted(SETTINGS), help=argparse.SUPPRESS)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child)
        return 0
    from results import write_measurements
    from utils import environment

    rows = []
    with tempfile.TemporaryDirectory() as cache:
        for setting, (means, cached) in SETTINGS.items():
            caches = {"TORCHINDUCTOR_CACHE_DIR": cache} if cached else {"TORCHINDUCTOR_FORCE_DISABLE_CACHES": "1"}
            env = {**os.environ, "OMP_NUM_THREADS": "1", **caches}
            done = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--child", setting],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append({**row, "means": means})
            print(f"{setting:20s} first step {row['first_step_s']:6.1f} s, traced {row['traces']}x")
    if args.output:
        model = "BertConfig() (bert-base-uncased's architecture), random init"
        write_measurements(args.output, "compile_time", "tools/compile_time.py", argv, model, rows, environment())
    return 0


if __name__ == "__main__":
    sys.exit(main())
