#!/usr/bin/env bash
# The prepared GPU check for a session lent a device machine (run through the `device` tool from
# the repository root, e.g. `bash bench/gpu_check.sh`, timeout_s 540): one call that shows whether
# the GPU paths work end to end. It needs a Python with this project's dependencies on that machine
# (nothing is downloaded): it says so and stops when they are missing.
#   1. what the machine has (nvidia-smi, torch, CUDA, bf16);
#   2. training on the GPU: 2 epochs of each task on generated data (Ray Train, --use-gpu), one
#      worker, then DDP with 2 workers when the machine has 2 GPUs;
#   3. annotation on the GPU: 1,000 photos with the models just trained (--device cuda, --ray);
#   4. one timed epoch of the emotion recipe on FER2013 when ../shared is there.
# Results go to $OUT (gpu_check.log, train_summary.json, summary.json) when OUT is set.
set -uo pipefail
OUT=${OUT:-$(mktemp -d)}
LOG="$OUT/gpu_check.log"
exec > >(tee "$LOG") 2>&1
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=.venv/bin/python
echo "== machine"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "no nvidia-smi"
if ! "$PY" -c "import torch, ray, facepipe" 2>/dev/null; then
    if ! "$PY" -m pip install --no-deps --no-build-isolation -e . >/dev/null 2>&1 || ! "$PY" -c "import torch, ray, facepipe"; then
        echo "missing: this machine's Python lacks torch/ray/facepipe and cannot download them; nothing to check"; exit 3
    fi
fi
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-', 'bf16', torch.cuda.is_available() and torch.cuda.is_bf16_supported())"
W=$(mktemp -d)
echo "== train on GPU (generated data, 2 epochs per task)"
/usr/bin/time -v "$PY" -m facepipe train --task all --epochs 2 --use-gpu --output "$W/train" --no-tta 2>&1 | grep -Ev "^\s+(Page|Volun|Invol|Swaps|File|Socket|Signals|Exit|Average|Minor|Major|Percent)" | tail -25
cp "$W/train/train_summary.json" "$OUT/" 2>/dev/null
if [ "$(nvidia-smi -L 2>/dev/null | wc -l)" -ge 2 ]; then
    echo "== DDP: 2 workers, one GPU each"
    "$PY" -m facepipe train --task keypoints --epochs 2 --use-gpu --num-workers 2 --output "$W/ddp" --no-evaluate 2>&1 | grep -E "epoch|done in" | tail -4
fi
echo "== annotate 1,000 photos on GPU"
mkdir -p "$W/photos"
"$PY" -c "
import shutil
from facepipe.annotate.demo import write_demo_images
paths = write_demo_images('$W/photos', 49)
for i in range(1000 - len(paths)):  # copies under new names: new files to the job
    src = paths[i % len(paths)]
    shutil.copy(src, src.with_name(f'copy{i:04d}_{src.name}'))
"
START=$(date +%s.%N)
"$PY" -m facepipe annotate "$W/photos" --output "$W/ann" --device cuda --ray --plots none \
    --keypoints-model "$W/train/keypoints/model" --emotion-model "$W/train/emotion/model" 2>&1 | tail -5
echo "annotate wall s: $(echo "$(date +%s.%N) - $START" | bc)"
cp "$W/ann/summary.json" "$OUT/" 2>/dev/null
if [ -f ../shared/data/fer2013/fer2013_trainval.csv.gz ]; then
    echo "== one epoch of the emotion recipe on FER2013 (GPU)"
    "$PY" -m facepipe train --task emotion --data ../shared/data/fer2013/fer2013_trainval.csv.gz --epochs 1 --use-gpu \
        --output "$W/fer" --no-evaluate 2>&1 | grep -E "epoch 1/|done in" | tail -3
fi
echo "== done"
