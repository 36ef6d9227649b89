"""The environment a run ran in (versions, device, commit), and the check that this stack can run the methods.

python utils.py --check-env
"""

import os
import platform
import subprocess

import torch


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
    from transformers import BertForSequenceClassification

    from config import fast_recipe_here, gpu_support
    from models import tiny_bert_config

    for name, version in environment().items():
        print(f"{name:>13}: {version}")
    gpu = gpu_support()
    print(f"{'cuda':>13}: {torch.version.cuda if gpu else 'not available'}")
    emulated = gpu is not None and torch.cuda.is_bf16_supported()  # before Ampere: not what inductor compiles
    print(f"{'bf16':>13}: {'native' if gpu and gpu.native_bf16 else 'emulated' if emulated else 'no'}")
    print(f"{'fast recipe':>13}: {fast_recipe_here(gpu)}")
    try:
        model = get_peft_model(
            BertForSequenceClassification(tiny_bert_config(50, hidden_size=16, intermediate_size=32)),
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
