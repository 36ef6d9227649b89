"""Small helpers the pipeline, the benchmark and the plots share: metrics, counts, memory, files."""

import json
import math
import os
import platform
import subprocess
import tempfile

import numpy as np
import torch


def argmax_logits(logits, labels):
    """Keeps only the predicted class on the device, so evaluation gathers one int per sentence."""
    if isinstance(logits, tuple):
        logits = logits[0]
    return logits.argmax(dim=-1)


def accuracy_metrics(eval_prediction):
    """Accuracy without `evaluate`, whose metric scripts come from the Hub and fail offline."""
    predictions = np.asarray(eval_prediction.predictions).reshape(-1)
    labels = np.asarray(eval_prediction.label_ids).reshape(-1)
    correct = int((predictions == labels).sum())
    return {"accuracy": correct / len(labels), "correct": correct, "total": int(len(labels))}


def count_parameters(model) -> dict:
    """Trainable and total parameters; a tensor shared between modules counts once."""
    unique = {id(p): p for p in model.parameters()}.values()
    trainable = sum(p.numel() for p in unique if p.requires_grad)
    total = sum(p.numel() for p in unique)
    return {"trainable": trainable, "total": total, "trainable_percent": 100.0 * trainable / total}


def reset_peak_memory():
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_memory_mb() -> dict:
    """Peak CUDA memory since the last reset, in MiB; None on a CPU, where torch does not track it."""
    if not torch.cuda.is_available():
        return {"peak_memory_mb": None, "peak_memory_reserved_mb": None}
    torch.cuda.synchronize()
    return {
        "peak_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
        "peak_memory_reserved_mb": round(torch.cuda.max_memory_reserved() / 2**20, 1),
    }


def gather_from_ranks(value) -> list:
    """[value of rank 0, value of rank 1, ...] under torchrun or accelerate launch; [value] otherwise."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        gathered = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, value)
        return gathered
    return [value]


def write_json_atomic(path, data, overwrite=True):
    """Writes a whole file or nothing: a crash mid-write leaves no half file behind. NaN and infinity become null.

    With overwrite=False an existing file is never replaced (FileExistsError), even by a racing process.
    """
    data = _finite(data)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(handle, "w") as file:
            json.dump(data, file, indent=2, allow_nan=False)
            file.write("\n")
            file.flush()
            os.fsync(file.fileno())
        if overwrite:
            os.replace(temporary, path)
        else:
            os.link(temporary, path)  # fails if the path exists, atomically
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def read_json(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _finite(value):
    """JSON has no NaN or infinity: such numbers (a diverged loss, say) are written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def environment() -> dict:
    """Package versions, device and git commit: what a reader needs to trust or reproduce a number."""
    import datasets
    import peft
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "datasets": datasets.__version__,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "cpu_threads": torch.get_num_threads(),
        "git_commit": git_commit(),
    }


def git_commit():
    """The commit of this code, with '-dirty' if it has uncommitted changes; None outside git."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def check_environment() -> bool:
    """Prints versions and devices, and proves prefix tuning trains on BERT with the installed versions.

    A tiny random BERT (no download) runs a forward and a backward pass through peft's prefix tuning:
    that is what broke when transformers 5.24 renamed BERT's past_key_values.
    """
    from peft import PrefixTuningConfig, get_peft_model
    from transformers import BertConfig, BertForSequenceClassification

    for name, version in environment().items():
        print(f"{name:>13}: {version}")
    cuda = torch.cuda.is_available()
    print(f"{'cuda':>13}: {torch.version.cuda if cuda else 'not available'}")
    print(f"{'bf16':>13}: {'yes' if cuda and torch.cuda.is_bf16_supported() else 'no'}")
    try:
        config = BertConfig(
            vocab_size=50,
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            num_labels=2,
        )
        model = get_peft_model(
            BertForSequenceClassification(config),
            PrefixTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=4, prefix_projection=True),
        )
        ids = torch.randint(5, 50, (2, 7))
        model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.tensor([0, 1])).loss.backward()
        grads = [p.grad for name, p in model.named_parameters() if "prompt_encoder" in name]
        if not grads or any(g is None or not g.abs().sum() > 0 for g in grads):
            raise RuntimeError("the prefix received no gradient")
    except Exception as error:  # report any break, whatever its type, as the answer of the check
        print(f"prefix tuning on BERT: BROKEN ({type(error).__name__}: {str(error).strip().splitlines()[0]})")
        print("Install the versions in requirements.txt (transformers<=5.23 with peft 0.21).")
        return False
    print("prefix tuning on BERT: works (forward and backward through peft)")
    return True


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["--check-env"]:
        print("usage: python utils.py --check-env", file=sys.stderr)
        sys.exit(2)
    sys.exit(0 if check_environment() else 1)
