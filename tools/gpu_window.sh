#!/usr/bin/env bash
# On the lent GPU (the device tool, carry [".carry"] from tools/pack_gpu_carry.py): the parts of
# gpu_report.py named as arguments, in order, each under its own time limit, then the merged report to $OUT.
#     bash tools/gpu_window.sh bench profile      # first window
#     bash tools/gpu_window.sh end_to_end original
# Copy $OUT/gpu_report.json to results/gpu_report.json here and commit it; a later window merges into it.
set -uo pipefail
: "${OUT:?run this through the device tool, which sets OUT}"
PART_LIMIT_S=${PART_LIMIT_S:-300}  # the budget per part: a window must hold a part and a rerun
REPORT=${REPORT:-results/gpu_report.json}
EXTRA=${EXTRA:-}  # e.g. EXTRA="--quick --use_cpu" REPORT=/tmp/r.json OUT=/tmp/o to try this script on a CPU

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .carry/site-packages/*.whl || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 TQDM_DISABLE=1 HF_DATASETS_DISABLE_PROGRESS_BARS=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import sys, torch, transformers, peft, datasets; print(sys.version.split()[0], torch.__version__, \
transformers.__version__, peft.__version__, datasets.__version__, torch.cuda.is_available())" || exit 1

status=0
for part in "$@"; do
    echo "== part $part (limit ${PART_LIMIT_S} s) $(date -u +%H:%M:%S)"
    # shellcheck disable=SC2086
    timeout "$PART_LIMIT_S" python3 gpu_report.py --part "$part" --model_name_or_path .carry/minilm \
        --data_dir .carry/sst2 --output "$REPORT" $EXTRA 2>&1 | tee "$OUT/$part.log"
    code=${PIPESTATUS[0]}
    echo "== part $part exit $code $(date -u +%H:%M:%S)"
    [ "$code" = 0 ] || status=$code
done
[ -f "$REPORT" ] && cp "$REPORT" "$OUT/gpu_report.json" && python3 gpu_report.py --markdown --output "$REPORT"
exit $status
