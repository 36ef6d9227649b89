"""What the fast recipe's compiled BERT-base step keeps from its forward for its backward, with torch.compile's
own split between the two and with the recipe's (--recompute_in_backward, experiment.partition_for_memory);
and whether the two splits compute the same gradients.

    python tools/saved_activations.py --output results/reference/saved-activations-cpu/saved_activations.json

Each configuration runs in a fresh process: BERT-base at random init (BertConfig(): what a step keeps depends on
the architecture, not the weights) with the method applied as the pipeline applies it, compiled by inductor for
symbolic shapes, one training step (forward and backward, dropout on) of 16 sentences of 80 tokens (the longest
length bucket of SST-2's train set under the fast recipe's padding to multiples of 16) under bf16 autocast, with
the frozen weights stored in bf16, as the fast recipe on a GPU runs it. Every tensor autograd keeps for the
backward (torch.autograd.graph.saved_tensors_hooks) falls in one of three kinds:

- parameters: the model's own weights, which it holds anyway, so keeping them costs no memory;
- weight copies: bf16 copies of trained weights (autocast's casts), found by value;
- the rest: activations, dropout masks and the like.

The gradients of each method's two configurations are compared tensor by tensor: same seed, same batch, same
dropout masks. Prints a table and writes a JSON with "kind": "saved_activations". One thread, inductor's caches off.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

METHODS = ("full", "prefix")
LENGTH = 80  # 66 word pieces at most in SST-2's train set, padded to a multiple of 16
BATCH = 16


def child(method, recompute, gradients_path):
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from config import parse_args
    from experiment import _compile_dynamic, partition_for_memory
    from methods import apply_method
    from models import PROBLEM_TYPE

    flags = ["--use_cpu", "--bf16", "True", "--bf16_frozen_weights", "True", "--torch_compile", "True"]
    experiment, training, _ = parse_args(
        [*flags, "--torch_compile_dynamic", "True", "--recompute_in_backward", str(recompute)], method=method
    )
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(num_labels=2, problem_type=PROBLEM_TYPE))
    model = apply_method(model, method, experiment).train()
    partition_for_memory(experiment.recompute_in_backward)  # as build_trainer sets it
    with _compile_dynamic(True):
        compiled = torch.compile(model, dynamic=True)
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    copies = {}  # (shape, dtype) -> bf16 casts of the trained weights, as they were, and transposed
    for p in model.parameters():
        if p.requires_grad and p.dim() == 2:
            cast = p.detach().to(torch.bfloat16)
            for view in (cast, cast.t()):
                copies.setdefault(tuple(view.shape), []).append(view)
    kept = {kind: [0, 0] for kind in ("parameters", "weight copies", "the rest")}

    def pack(tensor):
        if tensor.untyped_storage().data_ptr() in parameters:
            kind = "parameters"
        elif tensor.dtype == torch.bfloat16 and any(
            torch.equal(tensor, copy) for copy in copies.get(tuple(tensor.shape), [])
        ):
            kind = "weight copies"
        else:
            kind = "the rest"
        kept[kind][0] += 1
        kept[kind][1] += tensor.numel() * tensor.element_size()
        return tensor

    generator = torch.Generator().manual_seed(1)
    batch = {
        "input_ids": torch.randint(1000, 30000, (BATCH, LENGTH), generator=generator),
        "attention_mask": torch.ones(BATCH, LENGTH, dtype=torch.long),
        "labels": torch.randint(0, 2, (BATCH,), generator=generator),
    }
    torch.manual_seed(2)  # the dropout masks
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = compiled(**batch).loss
    loss.backward()
    torch.save({name: p.grad for name, p in model.named_parameters() if p.requires_grad}, gradients_path)
    row = {"method": method, "recompute_in_backward": recompute, "loss": round(loss.item(), 6)}
    for kind, (count, size) in kept.items():
        row[kind] = {"tensors": count, "mib": round(size / 2**20, 1)}
    row["kept_beyond_parameters_mib"] = round(row["weight copies"]["mib"] + row["the rest"]["mib"], 1)
    print(json.dumps(row))


def compare(before_path, after_path):
    """How far apart two sets of gradients are: tensors bit for bit the same, and each other tensor's largest
    difference relative to its largest entry."""
    import torch

    before, after = torch.load(before_path), torch.load(after_path)
    if before.keys() != after.keys():
        raise RuntimeError("the two configurations trained different parameters")
    relative = {n: ((before[n] - after[n]).abs().max() / before[n].abs().max()).item() for n in before}
    return {
        "gradient_tensors": len(before),
        "bitwise_equal": sum(torch.equal(before[name], after[name]) for name in before),
        "largest_relative_difference": float(f"{max(relative.values()):.2g}"),
        "differing": {name: float(f"{value:.2g}") for name, value in relative.items() if value},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", help="Where the JSON goes; default: print only.")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)  # method, recompute, gradients file
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.child:
        method, recompute, gradients = args.child
        child(method, recompute == "True", gradients)
        return 0
    from results import write_measurements
    from utils import environment

    rows, comparisons = [], []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCHINDUCTOR_FORCE_DISABLE_CACHES": "1"}
    with tempfile.TemporaryDirectory() as scratch:
        for method in METHODS:
            paths = []
            for recompute in (False, True):
                paths.append(os.path.join(scratch, f"{method}-{recompute}.pt"))
                done = subprocess.run(
                    [sys.executable, os.path.abspath(__file__), "--child", method, str(recompute), paths[-1]],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                row = json.loads(done.stdout.strip().splitlines()[-1])
                rows.append(row)
                print(
                    f"{method:7s} recompute_in_backward={str(recompute):5s} kept beyond the parameters "
                    f"{row['kept_beyond_parameters_mib']:7.1f} MiB, of which weight copies "
                    f"{row['weight copies']['mib']:6.1f} MiB; loss {row['loss']}"
                )
            comparisons.append({"method": method, **compare(*paths)})
            print(f"{method:7s} gradients: {comparisons[-1]}")
    if args.output:
        model = "BertConfig() (bert-base-uncased's architecture), random init"
        batch = {"sentences": BATCH, "tokens": LENGTH}
        write_measurements(
            args.output,
            "saved_activations",
            "tools/saved_activations.py",
            argv,
            model,
            rows,
            environment(),
            batch=batch,
            gradients=comparisons,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
