#!/usr/bin/env bash
# The GPU checks, in one go, on a machine with at least one CUDA GPU (about 5-8 minutes on one recent GPU).
#
#   bash benchmarks/gpu_checks.sh [WORKDIR]     # from anywhere; python: $PYTHON, else `python`
#
# Runs, in order, and prints what ran with its figures (PASS/FAIL per check; exit status 1 if any failed):
#   1. the gpu-marked tests (python -m pytest -m gpu on the files holding them: CUDA vs CPU in float64, no
#      host-device sync in a warm forward, CUDA graph capture of the forward and of the training step, fp16/bf16
#      autocast training step, infer --fp16 and --cuda-graph);
#   2. the quickstart training on CUDA (100 iterations), then 100 steps of the same network in fp32 and in
#      bf16/fp16 autocast (s/step each), and 20 iterations each of `train:amp: bf16` and
#      `train:amp: fp16` with `train:accumulate: 2` through basicsr.train;
#   3. distributed: 1 process with NCCL and the PSNR loss alone (the unused-parameter case), 2 processes on the
#      CPU of this GPU host (num_gpu: 0, gloo through the device-aware backend), and 2 processes for one GPU,
#      which must stop with the one-line "more processes than GPUs" error;
#   4. infer --device cuda with and without --fp16 on three photos (seconds each);
#   5. benchmarks/arch_speed.py on CUDA (paper preset, 256 and 512 pixels, fp32 and bf16/fp16 autocast, inference
#      and training step; against the official code where OFFICIAL=PATH/TO/official_s2former is set);
#   6. inference time and peak memory against image size, 128 to 2048 pixels (arch_speed.py --no-train);
#   7. benchmarks/gpu_training_speed.py (about 7 minutes): ours eager / compiled / graph-captured and the official
#      code, fp32 and bf16, batch 8 and 36 at 128x128 (step time, images/s, peak memory, 200 steps' losses against
#      eager, TFLOP/s against a bf16 matmul of the same run), inference at 256, 512 and 1024 pixels; it writes
#      docs/results/gpu_<card>.json (training_speedup_batch8, training_speedup_batch36, inference_speedup_256), or
#      into $RESULTS where that is set (a folder that is collected from a remote machine).
# ONLY=measure runs step 7 alone (the prepared measurement, under 8 minutes on one H200).
#
# A bare GPU machine (torch, no basicsr, no registry): the packages basicsr and the network need beyond what such
# an image holds are installed from the wheels in $WHEELS (default benchmarks/wheels, ignored by git), made on a
# machine with a registry for the GPU machine's python (3.12 here):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
#       -d benchmarks/wheels mmengine addict yapf lmdb termcolor platformdirs
#   pip wheel --no-deps --no-build-isolation -w benchmarks/wheels basicsr==1.4.2
# WORKDIR (default: a new temporary folder) receives the runs' outputs; nothing is written elsewhere but the JSON.
# OFFICIAL, WHEELS and RESULTS may be relative to the directory the script is started from.
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python}
WORK=${1:-$(mktemp -d)}
mkdir -p "$WORK"
absolute() { case $1 in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }  # the checks run from $WORK
WORK=$(absolute "$WORK")
OFFICIAL=${OFFICIAL:+$(absolute "$OFFICIAL")}
RESULTS=${RESULTS:+$(absolute "$RESULTS")}
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONWARNINGS=ignore
failed=0

step() { printf '\n== %s\n' "$*"; }
check() {  # check NAME COMMAND...: run, print PASS/FAIL and the seconds taken
    local name=$1 t0=$SECONDS
    shift
    if "$@"; then echo "PASS $name ($((SECONDS - t0)) s)"; else echo "FAIL $name ($((SECONDS - t0)) s)"; failed=1; fi
}
last_log() { ls -t "$WORK"/experiments/"$1"/train_"$1"_*.log 2>/dev/null | head -1; }
train_figures() {  # the run's end, validation and time lines
    local log
    log=$(last_log "$1")
    [ -n "$log" ] && grep -E 'iter: +[0-9]+,|# psnr|# ssim|Time consumed' "$log" | tail -6
}

if ! $PY -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo 'gpu_checks: CUDA is not available here; nothing run' >&2
    exit 2
fi
WHEELS=$(absolute "${WHEELS:-$REPO/benchmarks/wheels}")
if ! $PY -c 'import basicsr, mmengine' 2>/dev/null; then
    step "installing basicsr and mmengine from $WHEELS (no registry needed)"
    $PY -m pip install -q --no-index --no-deps --find-links "$WHEELS" basicsr mmengine addict yapf lmdb termcolor \
        platformdirs || { echo "gpu_checks: basicsr is not installed and $WHEELS lacks its wheels (see above)" >&2; exit 2; }
fi
measure() {  # step 7; the card's name in the JSON file name, e.g. docs/results/gpu_nvidia_h200.json
    local card
    card=$($PY -c 'import re, torch; print(re.sub(r"[^a-z0-9]+", "_", torch.cuda.get_device_name().lower()).strip("_"))')
    step '7. training and inference: eager, compiled, graph-captured, official (benchmarks/gpu_training_speed.py)'
    check training-speed $PY "$REPO/benchmarks/gpu_training_speed.py" --budget "${BUDGET:-420}" \
        ${OFFICIAL:+--official "$OFFICIAL"} --json "${RESULTS:-$REPO/docs/results}/gpu_$card.json"
}
step 'device'
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c 'import torch; print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s):",
    torch.cuda.get_device_name(), f"cuDNN {torch.backends.cudnn.version()}")'
cd "$WORK" || exit 2
if [ "${ONLY:-}" = measure ]; then
    measure
    exit $failed
fi

step '1. gpu-marked tests'
GPU_TESTS=$(grep -rl --include='test_*.py' 'mark.gpu' "$REPO/tests" | sort)  # only these: light imports
check gpu-tests $PY -m pytest -q -m gpu -p no:cacheprovider $GPU_TESTS

step '2. quickstart training on CUDA, 100 iterations'
check quickstart-cuda $PY -m basicsr.train -opt "$REPO/options/quickstart.yml" \
    --force_yml num_gpu=1 name=gpu_quickstart train:total_iter=100
train_figures gpu_quickstart
check autocast-steps $PY - <<'PY'
import time, torch
from s2former_plugin.archs.s2former_arch import S2Former
from s2former_plugin.losses.s2former_loss import MultiScalePSNRLoss, UncertaintyDrivenLoss
torch.backends.cudnn.benchmark = True  # as basicsr.train
psnr, udl = MultiScalePSNRLoss(), UncertaintyDrivenLoss()
for mode, dtype in (('fp32', None), ('bf16 autocast', torch.bfloat16), ('fp16 autocast', torch.float16)):
    torch.manual_seed(0)
    net = S2Former('paper').cuda()
    opt = torch.optim.Adam(net.parameters(), 7e-4)
    scaler = torch.amp.GradScaler('cuda', enabled=dtype == torch.float16)
    gt = torch.rand(8, 3, 128, 128, device='cuda')
    lq = (gt + 0.2 * torch.rand_like(gt)).clamp(0, 1)
    times, losses = [], []
    for step in range(100):
        torch.cuda.synchronize(); start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast('cuda', dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            outputs, uncertainties = net(lq, return_all=True)
            loss = psnr([o.float() for o in outputs], gt) + udl([o.float() for o in outputs], [u.float() for u in uncertainties], gt)
        scaler.scale(loss).backward(); scaler.step(opt); scaler.update()
        torch.cuda.synchronize(); times.append(time.perf_counter() - start); losses.append(loss.item())
    assert all(map(torch.isfinite, map(torch.tensor, losses))), f'{mode}: non-finite loss'
    t = sorted(times[10:])[len(times[10:]) // 2]
    print(f'  paper net, batch 8x128x128, {mode}: {t * 1000:.1f} ms/step (median of steps 11-100), '
          f'loss {losses[0]:.3f} -> {losses[-1]:.3f}, peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB')
    torch.cuda.reset_peak_memory_stats(); del net, opt
PY
for amp in bf16 fp16; do
    check "quickstart-cuda-amp-$amp" $PY -m basicsr.train -opt "$REPO/options/quickstart.yml" \
        --force_yml num_gpu=1 name=gpu_amp_$amp train:total_iter=20 train:amp=$amp train:accumulate=2 val:val_freq=20
    train_figures gpu_amp_$amp
done

step '3. distributed'
PORT=$((29500 + RANDOM % 1000))
check ddp-nccl-psnr-only $PY -m torch.distributed.run --nproc_per_node=1 --master_port=$PORT -m basicsr.train \
    -opt "$REPO/options/quickstart.yml" --launcher pytorch \
    --force_yml num_gpu=1 name=gpu_ddp_psnr train:total_iter=20 train:udl_opt=~ val:val_freq=20
train_figures gpu_ddp_psnr
check ddp-gloo-cpu-on-gpu-host $PY -m torch.distributed.run --nproc_per_node=2 --master_port=$((PORT + 1)) \
    -m basicsr.train -opt "$REPO/options/quickstart.yml" --launcher pytorch \
    --force_yml num_gpu=0 name=gpu_ddp_cpu train:total_iter=10 train:udl_opt=~ val:val_freq=10
train_figures gpu_ddp_cpu
GPUS=$($PY -c 'import torch; print(torch.cuda.device_count())')
more_ranks() {
    $PY -m torch.distributed.run --nproc_per_node=$((GPUS + 1)) --master_port=$((PORT + 2)) -m basicsr.train \
        -opt "$REPO/options/quickstart.yml" --launcher pytorch \
        --force_yml num_gpu=1 name=gpu_ddp_oversubscribed train:total_iter=2 >more_ranks.log 2>&1
    local rc=$?
    grep -m1 -o "[0-9]* processes on this node but [0-9]* visible GPU(s)[^']*" more_ranks.log
    [ $rc -ne 0 ] && grep -q 'visible GPU' more_ranks.log
}
check more-ranks-than-gpus-refused more_ranks

step '4. infer on CUDA, fp32 and --fp16'
$PY - <<'PY'
import os, cv2, skimage.data as d
os.makedirs('photos', exist_ok=True)
for name in ('astronaut', 'chelsea', 'coffee'):
    cv2.imwrite(f'photos/{name}.png', getattr(d, name)()[..., ::-1])
PY
WEIGHTS=$(ls "$WORK"/experiments/gpu_quickstart/models/net_g_latest.pth 2>/dev/null)
check infer-cuda-fp32 $PY -m s2former_plugin.infer --weights "$WEIGHTS" --input photos --output derained_fp32 \
    --device cuda --no-progress
check infer-cuda-fp16 $PY -m s2former_plugin.infer --weights "$WEIGHTS" --input photos --output derained_fp16 \
    --device cuda --fp16 --no-progress
$PY - <<'PY'
import cv2, numpy as np
for name in ('astronaut', 'chelsea', 'coffee'):
    a, b = (cv2.imread(f'{d}/{name}.png').astype(float) for d in ('derained_fp32', 'derained_fp16'))
    print(f'  {name}: mean |fp16 - fp32| {np.abs(a - b).mean():.3f} / 255, max {np.abs(a - b).max():.0f}')
PY

step '5. benchmarks/arch_speed.py on CUDA'
check arch-speed $PY "$REPO/benchmarks/arch_speed.py" --no-cpu --sizes 256 512 --runs 10 --train-batch 8 \
    ${OFFICIAL:+--official "$OFFICIAL"}

step '6. inference time and memory against image size on CUDA'
check arch-scaling $PY "$REPO/benchmarks/arch_speed.py" --no-cpu --no-train --sizes 128 256 512 1024 2048 --runs 5

measure

step "done: results under $WORK"
[ $failed -eq 0 ] && echo 'gpu_checks: all passed' || echo 'gpu_checks: some checks FAILED (above)'
exit $failed
