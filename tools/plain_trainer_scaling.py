"""A train_finetune.py run under the plain Trainer's loss scaling: what models.declare_mean_loss changes.

    OMP_NUM_THREADS=1 python tools/plain_trainer_scaling.py \
        --output results/reference/grad-accumulation-minilm-4000/full-batch8x2-plain-trainer.json -- \
        --model_name_or_path $MINILM --model_name sentence-transformers/all-MiniLM-L6-v2 --data_dir $SST2 \
        --max_train_samples 4000 --num_train_epochs 1 --seed 42 --save_strategy no --save_model False \
        --disable_tqdm True --learning_rate 5e-5 --per_device_train_batch_size 8 --gradient_accumulation_steps 2

Runs the pipeline in this process with declare_mean_loss taken out, so the Trainer (transformers 5.23) takes BERT's
loss for a sum over the batch's labels: it skips dividing by --gradient_accumulation_steps, and the logged losses
and the gradients come out that many times too large. The run is named after --output and writes its results JSON
there, which then gets this tool's command and "kind": "plain_trainer_scaling", so that plot_results.py passes over
it: it is not a run of the pipeline.
"""

import argparse
import os
import shlex
import sys
from unittest import mock

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import experiment  # noqa: E402
from results import read_json, without_flags, write_json_atomic  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="The results JSON to write.")
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then train_finetune.py's flags.")
    args = parser.parse_args(argv)
    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    if not args.output.endswith(".json"):
        parser.error("--output must name a .json file")
    folder, run_name = os.path.dirname(args.output) or ".", os.path.basename(args.output)[: -len(".json")]
    with mock.patch.object(experiment, "declare_mean_loss", lambda model: model):
        code = experiment.main([*train_args, "--results_dir", folder, "--run_name", run_name], method="full")
    if code:
        return code
    record = read_json(args.output)
    # The run recorded its flags with the model by name and no path of this machine: this tool's command, with them.
    flags = without_flags(shlex.split(record["command"])[2:], "--results_dir", "--run_name")  # set from --output
    record["command"] = shlex.join(["python", "tools/plain_trainer_scaling.py", "--output", args.output, "--", *flags])
    record["kind"] = "plain_trainer_scaling"
    write_json_atomic(args.output, record)
    metrics = record["metrics"]
    print(f"train loss {metrics['train_loss']:.4f}, dev accuracy {metrics['eval_correct']}/{metrics['eval_total']}")
    print(f"-> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
