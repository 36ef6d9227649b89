#!/usr/bin/env bash
# On the lent GPU (the device tool, carry [".carry"] from tools/pack_gpu_carry.py): the parts of
# gpu_report.py named as arguments, in order, each under its own time limit, merged into $OUT/gpu_report.json
# (which starts as the committed results/gpu_report.json) as each row lands, so a part cut off keeps its rows.
# A 15-minute window holds the first two calls (about 11 minutes, and the machine's start), with time to rerun
# one part; the third takes a later one, and the last two together another. Each call fits the device's 10
# minutes.
#     bash tools/gpu_window.sh bench_full bench_prefix                                  # about 6 min, H100
#     bash tools/gpu_window.sh profile bench_bare                                       # about 5, on that machine
#     bash tools/gpu_window.sh bench_variants bench_variants_prefix                     # about 8, a later window
#     bash tools/gpu_window.sh bench_layers_once                                        # about 4, first in another
#     bash tools/gpu_window.sh end_to_end_prefix end_to_end_full original               # about 7, after it
# On an H100 (2026-11-28): bench_full 2.5 min, bench_prefix 3.6, end_to_end_prefix 3.0, end_to_end_full and
# original about 2 each (estimated from their runs' own clocks: 99 and 126 s); profile 1.2 on a machine
# warm from bench_full (its compile cached), so about 2.5 on its own. The machine started in about 30 s.
# bench_variants: four rows, two of them the bench's fast graphs (the first compiles them on a fresh machine,
# the second finds them cached) and two compiled anew (without CUDA graphs; torch's own split of the step), so
# about 5.5 min (estimated: the last row may meet the limit, and a part cut off keeps the rows before);
# bench_variants_prefix: one row, prefix tuning compiled anew (its bench row warmed up in 155 s), about 3;
# bench_layers_once: two rows compiled anew, full fine-tuning's then prefix tuning's, each with one encoder layer
# compiled for all (37 and 49 s on our CPU, against 64 and 59 compiled whole), about 4 (estimated); first on a
# fresh machine, so that its warm-ups are a cold machine's, as the bench rows' were;
# bench_bare: one row of the bench's fast graphs (cached after bench_full), then the reference loop's own
# compiles, for one shape and for symbolic shapes: about 3.5 (estimated), after the profile, so that the
# window's end meets the last of them if anything.
#     PART_LIMIT_S=540 bash tools/gpu_window.sh whole   # once the report is done: every method, whole SST-2
# Copy $OUT/gpu_report.json to results/gpu_report.json here after each call (the next call starts from the
# working tree's copy, not the last call's), redraw its figure with `python plot_results.py` here (under the
# pinned matplotlib, whose bytes the test compares), and commit both.
set -uo pipefail
: "${OUT:?run this through the device tool, which sets OUT}"
PART_LIMIT_S=${PART_LIMIT_S:-300}  # the budget per part: a window must hold a part and a rerun
REPORT=$OUT/gpu_report.json  # in $OUT, so what a part finished comes back even if the window ends
[ -f "$REPORT" ] || [ ! -f results/gpu_report.json ] || cp results/gpu_report.json "$REPORT"
EXTRA=${EXTRA:-}  # e.g. EXTRA="--quick --use_cpu" OUT=/tmp/o to try this script on a CPU
# timeout -k: a run that SIGTERM stopped in its first, compiling steps never ended (H100, 2026-11-27; the
# signal reaches the whole group, compile workers too), so each part is killed 10 s after its limit.

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .carry/site-packages/*.whl || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 TQDM_DISABLE=1 HF_DATASETS_DISABLE_PROGRESS_BARS=1
# A recompile makes a warm-up slow, and a graph run without CUDA graphs (a row's compiled.cudagraph_skips)
# makes a step slow: the logs say why, if one happens (inductor says the second under perf_hints in older
# torch, under cudagraphs in 2.13).
export TORCH_LOGS=${TORCH_LOGS-recompiles,perf_hints,cudagraphs}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import sys, torch, transformers, peft, datasets; print(sys.version.split()[0], torch.__version__, \
transformers.__version__, peft.__version__, datasets.__version__, torch.cuda.is_available())" || exit 1

status=0
WHOLE=results/reference/compare-minilm-sst2  # the ten-method comparison on all 67,349 training sentences
for part in "$@"; do
    echo "== part $part (limit ${PART_LIMIT_S} s) $(date -u +%H:%M:%S)"
    if [ "$part" = whole ]; then  # four runs share the GPU: each is launch-bound, and compiles on its own cores
        # shellcheck disable=SC2086
        timeout -k 10 "$PART_LIMIT_S" python3 compare.py \
            --methods full,prefix,prefix-v2,prompt,ptuning,lora,ia3,bitfit,adapter,head --seeds 1 \
            --lr_preset tuned --jobs 4 --results_dir "$WHOLE" --model_name_or_path .carry/minilm \
            --model_name sentence-transformers/all-MiniLM-L6-v2 --data_dir .carry/sst2 --num_train_epochs 1 \
            --save_strategy no $EXTRA 2>&1 | tee "$OUT/$part.log"
        code=${PIPESTATUS[0]}
        tar czf "$OUT/whole.tgz" --exclude=checkpoints "$WHOLE"  # a run the limit stopped saved one: too big
    else
        # shellcheck disable=SC2086
        timeout -k 10 "$PART_LIMIT_S" python3 gpu_report.py --part "$part" --model_name_or_path .carry/minilm \
            --data_dir .carry/sst2 --output "$REPORT" $EXTRA 2>&1 | tee "$OUT/$part.log"
        code=${PIPESTATUS[0]}
    fi
    echo "== part $part exit $code $(date -u +%H:%M:%S)"
    [ "$code" = 0 ] || status=$code
done
[ -f "$REPORT" ] && python3 gpu_report.py --markdown --output "$REPORT"
exit $status
