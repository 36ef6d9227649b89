"""Full fine-tuning of BERT on SST-2: every weight trains. `python train_finetune.py --help` lists the flags."""

import sys

from experiment import main

if __name__ == "__main__":
    sys.exit(main(method="full"))
