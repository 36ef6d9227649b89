"""Prefix tuning of BERT on SST-2 with peft, as in the original: 20 virtual tokens, with projection.

`python train_prefix.py --help` lists the flags.
"""

import sys

from experiment import main

if __name__ == "__main__":
    sys.exit(main(method="prefix"))
