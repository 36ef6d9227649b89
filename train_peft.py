"""Any registered tuning method on SST-2.

    python train_peft.py --method {full,prefix,prefix-v2,prompt,ptuning,lora,ia3,bitfit,adapter,head}

`python train_peft.py --help` lists the flags; methods.py describes each method.
"""

import sys

from experiment import main

if __name__ == "__main__":
    sys.exit(main())
