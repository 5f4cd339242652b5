#!/usr/bin/env bash
# GPU check of the paper's detector (VGG16 Faster R-CNN at 512x512), fp32 and mixed_float16.
#
#   bash benchmarks/gpu_check.sh [--data_dir=TFDS_DATA_DIR] [--allow_cpu] [--smoke]
#
# For one NVIDIA GPU with TensorFlow installed beside this repository (`pip install -e .`).
# No network needed (random initialisation: no ImageNet weights). Steps:
#   0. nvidia-smi, TensorFlow and its GPUs; stops here if TensorFlow sees no GPU.
#   1. benchmarks/bench_detector.py on the paper model at batch 4 (the paper's),
#      float32 then mixed_float16: inference ms/image and training images/s (medians).
#   2. A synthetic PACS (bin/make_synthetic_pacs) built as deeplesion/pacs, or
#      deeplesion/synthetic from --data_dir (e.g. bin/quickstart's OUT/tensorflow_datasets).
#   3. bin/train_detector with configs/paper_single_class.flags (less --weights=imagenet and
#      --fc_from_vgg16, plus --backbone_norm=group: from random initialisation the plain VGG16
#      diverges within a few SGD steps) for a few hundred steps, float32 then mixed_float16:
#      steps/s between the first and last logged step (tracing excluded) and the final losses.
# Every step runs under `timeout`, within a total budget (GPU_CHECK_BUDGET_S, 480 s): a step
# with too little time left is skipped. Results go to ${OUT:-benchmarks/results}/gpu_check.md
# and to stdout; the exit status is 1 if a step failed or was skipped.
#
# --allow_cpu: go on without a GPU. --smoke: tiny sizes (quickstart width, 128 px, a few
# steps) so that the script itself can be tested on a CPU in about two minutes.
# --smoke on a CPU uses mixed_bfloat16 for the mixed precision runs (float16 is ~100x slower
# there). Environment: PYTHON (default python3), OUT, GPU_CHECK_BUDGET_S, GPU_CHECK_DATA_DIR
# (as --data_dir), GPU_CHECK_MIXED (the mixed policy, default mixed_float16),
# GPU_CHECK_TRAIN_FLAGS (more bin/train_detector flags, e.g. --clip_norm=10), TMPDIR.
set -euo pipefail

usage() { sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

ALLOW_CPU=0
SMOKE=0
DATA_DIR="${GPU_CHECK_DATA_DIR:-}"
for arg in "$@"; do
  case "$arg" in
    --allow_cpu) ALLOW_CPU=1 ;;
    --smoke) SMOKE=1 ;;
    --data_dir=*) DATA_DIR="${arg#--data_dir=}" ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_check: unknown argument '$arg'" >&2; usage >&2; exit 2 ;;
  esac
done

if [[ -n $DATA_DIR ]] && ! compgen -G "$DATA_DIR/deeplesion/synthetic/*/dataset_info.json" > /dev/null; then
  echo "gpu_check: --data_dir=$DATA_DIR holds no deeplesion/synthetic build" >&2
  exit 2
fi

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
PYTHON="${PYTHON:-python3}"
RESULTS="${OUT:-benchmarks/results}"
mkdir -p "$RESULTS"
REPORT="$RESULTS/gpu_check.md"
BUDGET_S="${GPU_CHECK_BUDGET_S:-480}"
MIXED="${GPU_CHECK_MIXED:-mixed_float16}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-1}"

if [[ $SMOKE == 1 ]]; then
  # Quickstart width at 128 px: a test of this script, not figures.
  BENCH_ARGS=(--skip_paper --image_size=128 --batch_size=2 --repeats=2)
  PATIENTS=8
  PACS_SIZE=128
  TRAIN_ARGS=(--image_size=128 --width_multiplier=0.25 --fc_units=256 --anchor_sizes=24,36,48
              --train_pre_nms_top_k=1000 --train_post_nms_top_k=128 --test_pre_nms_top_k=500
              --test_post_nms_top_k=50 --batch_size=2 --steps=4 --log_every=2
              --backbone_norm=group)
  T_BENCH=100 T_DATA=90 T_TRAIN=120
else
  BENCH_ARGS=(--skip_quickstart --batch_size=4 --repeats=20)
  PATIENTS=50
  PACS_SIZE=512
  TRAIN_ARGS=(--steps=300 --log_every=50 --backbone_norm=group)
  T_BENCH=150 T_DATA=150 T_TRAIN=170
fi
read -r -a USER_TRAIN_FLAGS <<< "${GPU_CHECK_TRAIN_FLAGS:-}"
TRAIN_ARGS+=(${USER_TRAIN_FLAGS[@]+"${USER_TRAIN_FLAGS[@]}"})

SUMMARY=()   # "| step | status | seconds |" rows
FAILED=0
{
  echo "# GPU check: the paper's detector"
  echo
  echo "- Date: $(date -u '+%Y-%m-%d %H:%M:%S') UTC; host $(hostname); mode: $([[ $SMOKE == 1 ]] && echo 'smoke (tiny sizes, not figures)' || echo full)"
  echo "- Commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$([[ -n "$(git status --porcelain 2>/dev/null)" ]] && echo ' (dirty)')"
  echo "- CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
} > "$REPORT"

# run_step NAME TIMEOUT_S LOG CMD...: runs CMD under `timeout`, within what is left of the
# budget; its stdout and stderr go to LOG. Adds a summary row; returns CMD's status.
run_step() {
  local name=$1 limit=$2 log=$3 left status start
  shift 3
  left=$((BUDGET_S - SECONDS))
  if ((left < limit)); then limit=$left; fi
  if ((limit < 20)); then
    echo "gpu_check: $name skipped: ${left}s of the ${BUDGET_S}s budget left" >&2
    SUMMARY+=("| $name | skipped (budget) | 0 |")
    FAILED=1
    return 124
  fi
  local shown="$*"
  echo "gpu_check: $name (timeout ${limit}s): ${shown:0:160}$( ((${#shown} > 160)) && echo ... || true)" >&2
  start=$SECONDS
  status=0
  timeout --kill-after=15 "$limit" "$@" > "$log" 2>&1 || status=$?
  if ((status == 0)); then
    SUMMARY+=("| $name | ok | $((SECONDS - start)) |")
  else
    local why="exit $status"
    if ((status == 124)); then why+=", timed out"; fi
    SUMMARY+=("| $name | FAILED ($why) | $((SECONDS - start)) |")
    FAILED=1
    echo "gpu_check: $name failed (exit $status); the end of its log:" >&2
    tail -n 30 "$log" >&2
  fi
  echo "gpu_check: $name took $((SECONDS - start))s" >&2
  return $status
}

# --- Step 0: the machine ---------------------------------------------------------------
{
  echo "## Step 0: devices"
  echo
  echo '```'
  if command -v nvidia-smi > /dev/null; then nvidia-smi 2>&1 || true; else echo "nvidia-smi: not found"; fi
  echo '```'
  echo
} >> "$REPORT"
if ! run_step "devices" 90 "$WORK/devices.log" "$PYTHON" -c '
import tensorflow as tf
gpus = tf.config.list_physical_devices("GPU")
print("TensorFlow", tf.__version__, "(CUDA build)" if tf.test.is_built_with_cuda() else "(no CUDA)")
print("GPUs:", gpus)
print("TF32 matmuls/convolutions:", tf.config.experimental.tensor_float_32_execution_enabled())
for gpu in gpus:
    print(gpu.name, tf.config.experimental.get_device_details(gpu))
'; then
  echo "gpu_check: TensorFlow could not be imported or queried with $PYTHON" >&2
  exit 1
fi
grep -v -e '^WARNING' -e '^I0000' -e '^W0000' -e 'cpu_feature_guard\|oneDNN\|rebuild TensorFlow' \
  "$WORK/devices.log" | sed 's/^/    /' >> "$REPORT" || true
echo >> "$REPORT"
if grep -q '^GPUs: \[\]' "$WORK/devices.log"; then
  if [[ $ALLOW_CPU == 0 ]]; then
    echo "gpu_check: TensorFlow sees no GPU (tf.config.list_physical_devices('GPU') is empty)." >&2
    echo "gpu_check: install a CUDA build of TensorFlow (pip install 'tensorflow[and-cuda]'), check" >&2
    echo "gpu_check: nvidia-smi and CUDA_VISIBLE_DEVICES, or pass --allow_cpu to go on anyway." >&2
    exit 1
  fi
  # float16 kernels on a CPU are ~100x slower than float32; bfloat16 keeps the smoke run short.
  if [[ $SMOKE == 1 && -z ${GPU_CHECK_MIXED:-} ]]; then MIXED=mixed_bfloat16; fi
  printf '**No GPU: running on the CPU (--allow_cpu); mixed precision policy %s.**\n\n' \
    "$MIXED" >> "$REPORT"
fi

# --- Step 1: bench_detector, float32 and mixed_float16 -----------------------------------
{
  echo "## Step 1: benchmarks/bench_detector.py (random inputs, random initialisation)"
  echo
  echo "\`python benchmarks/bench_detector.py ${BENCH_ARGS[*]} [--mixed_precision=$MIXED]\`:"
  echo "a warm-up call, then medians of the timed calls. Not frozen: all 13 convolutions train."
  echo
} >> "$REPORT"
for policy in float32 "$MIXED"; do
  extra=()
  if [[ $policy != float32 ]]; then extra=(--mixed_precision="$policy"); fi
  if run_step "bench_detector $policy" "$T_BENCH" "$WORK/bench_$policy.log" \
      "$PYTHON" benchmarks/bench_detector.py "${BENCH_ARGS[@]}" ${extra[@]+"${extra[@]}"}; then
    # The table: its header once, then this policy's rows.
    if [[ $policy == float32 ]]; then grep '^|' "$WORK/bench_$policy.log" >> "$REPORT" || true
    else grep '^|' "$WORK/bench_$policy.log" | tail -n +3 >> "$REPORT" || true; fi
  else
    echo "| $policy: FAILED, see the summary |" >> "$REPORT"
  fi
done
echo >> "$REPORT"

# --- Step 2: the dataset --------------------------------------------------------------
# key_slices: examples per split of $DATASET in $DATA_DIR, from the build's dataset_info.json.
key_slices() {
  "$PYTHON" -c '
import glob, json, sys
paths = glob.glob(sys.argv[1] + "/" + sys.argv[2] + "/*/dataset_info.json")
info = json.load(open(paths[0]))
print(", ".join("%s %d" % (s["name"], sum(int(n) for n in s["shardLengths"]))
                for s in info["splits"]))
' "$DATA_DIR" "$DATASET" 2>/dev/null || echo "none (no build)"
}
if [[ -n $DATA_DIR ]]; then
  DATASET=deeplesion/synthetic
  SUMMARY+=("| dataset | reused $DATA_DIR | 0 |")
  printf '## Step 2: dataset\n\n%s from %s (reused, read only); key slices: %s.\n\n' \
    "$DATASET" "$DATA_DIR" "$(key_slices)" >> "$REPORT"
else
  DATASET=deeplesion/pacs
  DATA_DIR="$WORK/tensorflow_datasets"
  TFDS="$("$PYTHON" -c 'import os, sys; print(os.path.join(os.path.dirname(sys.executable), "tfds"))')"
  [[ -x $TFDS ]] || TFDS="$(command -v tfds)"
  if run_step "synthetic PACS" "$T_DATA" "$WORK/pacs.log" \
      "$PYTHON" bin/make_synthetic_pacs --output_dir="$WORK/pacs" --num_patients="$PATIENTS" \
      --image_size="$PACS_SIZE" --format=pacs --seed=0; then
    run_step "tfds build" "$T_DATA" "$WORK/tfds_build.log" \
      "$TFDS" build deeplesion --imports tfds_deeplesion --config pacs \
      --manual_dir "$WORK/pacs" --data_dir "$DATA_DIR" || true
  fi
  printf '## Step 2: dataset\n\n%s: a synthetic PACS of %s patients at %s px (seed 0); key slices: %s.\n\n' \
    "$DATASET" "$PATIENTS" "$PACS_SIZE" "$(key_slices)" >> "$REPORT"
fi

# --- Step 3: training steps, float32 and mixed_float16 ---------------------------------------
# The paper preset less its ImageNet initialisation (no network here, and absl cannot unset a
# string flag, so those two lines are left out of a copy of the flagfile).
grep -v -e '^--weights=' -e '^--fc_from_vgg16' configs/paper_single_class.flags \
  > "$WORK/paper_random_init.flags"
{
  echo "## Step 3: bin/train_detector, configs/paper_single_class.flags with random initialisation"
  echo
  echo "\`bin/train_detector --flagfile=paper_single_class.flags (less --weights, --fc_from_vgg16) --dataset=$DATASET --split=train ${TRAIN_ARGS[*]} --checkpoint_every=100000 [--mixed_precision=$MIXED]\`"
  echo "(conv1-2 frozen as in the preset). Steps/s between the first and the last logged step"
  echo "(tracing and the final checkpoint excluded); losses: means over the last logging interval."
  echo
  echo "| precision | steps | steps/s | images/s | total loss | losses at the end | wall s |"
  echo "|---|---|---|---|---|---|---|"
} >> "$REPORT"
for policy in float32 "$MIXED"; do
  extra=()
  if [[ $policy != float32 ]]; then extra=(--mixed_precision="$policy"); fi
  start=$SECONDS
  status=0
  run_step "train $policy" "$T_TRAIN" "$WORK/train_$policy.log" \
    "$PYTHON" bin/train_detector --flagfile="$WORK/paper_random_init.flags" \
    --dataset="$DATASET" --data_dir="$DATA_DIR" --split=train --model_dir="$WORK/train_$policy" \
    --checkpoint_every=100000 --keep_checkpoints=1 "${TRAIN_ARGS[@]}" ${extra[@]+"${extra[@]}"} || status=$?
  # The log is read even after a failure: a timed-out run still shows its speed.
  if ! "$PYTHON" - "$WORK/train_$policy.log" "$policy" "$status" "$((SECONDS - start))" \
      >> "$REPORT" <<'EOF'
import math, re, sys
from datetime import datetime

log, policy, status, wall = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
# absl: "I1126 13:32:13.123456 1234 training.py:208] step 50: rpn_objectness_loss 0.6, ..., lr 1e-03"
# tqdm's bar may share the line, so the record is searched for, not matched at the start.
line_re = re.compile(r"I(\d{4} \d\d:\d\d:\d\d\.\d+) +\d+ \S+\] (step (\d+)|Done at step (\d+)): (.*)$")
logged, done, batch = [], None, None
for line in open(log, errors="replace"):
    if batch is None and (m := re.search(r"Global batch (\d+)", line)):
        batch = int(m.group(1))
    m = line_re.search(line.rstrip())
    if not m:
        continue
    when = datetime.strptime(m.group(1), "%m%d %H:%M:%S.%f")
    values = dict((k, float(v)) for k, v in (kv.rsplit(" ", 1) for kv in m.group(5).split(", "))
                  if k != "lr")
    if m.group(3):
        logged.append((int(m.group(3)), when, values))
    else:
        done = (int(m.group(4)), values)
# A LossScaleOptimizer step whose gradients overflow is skipped without counting, and the
# trainer logs "step 0" after each skip at the start: those are not timed.
skipped = sum(1 for step, _, _ in logged if step == 0)
logged = [entry for entry in logged if entry[0] > 0]
rate = "n/a"
images = "n/a"
if len(logged) >= 2:
    (s0, t0, _), (s1, t1, _) = logged[0], logged[-1]
    per_s = (s1 - s0) / max((t1 - t0).total_seconds(), 1e-9)
    rate, images = f"{per_s:.2f}", f"{per_s * (batch or 0):.1f}"
last = done[1] if done else (logged[-1][2] if logged else {})
steps = done[0] if done else (logged[-1][0] if logged else 0)
finite = bool(last) and all(math.isfinite(v) for v in last.values())
total = f"{last['total_loss']:.4f}" if "total_loss" in last else "n/a"
detail = ", ".join(f"{k.replace('_loss', '')} {v:.4f}" for k, v in last.items() if k != "total_loss")
if not finite:
    detail = "**NOT FINITE or missing** " + detail
note = "" if status == 0 else f" (exit {status}{', timed out' if status == 124 else ''})"
if skipped:
    note += f"; {skipped} steps skipped by loss scaling at the start"
print(f"| {policy}{note} | {steps} | {rate} | {images} | {total} | {detail} | {wall} |")
sys.exit(0 if finite and status == 0 else 1)
EOF
  then
    FAILED=1
  fi
done
echo >> "$REPORT"

# --- Summary ------------------------------------------------------------------------------
{
  echo "## Summary"
  echo
  echo "| step | status | seconds |"
  echo "|---|---|---|"
  printf '%s\n' "${SUMMARY[@]}"
  echo
  echo "Total: ${SECONDS}s of a ${BUDGET_S}s budget; load average at the end $(cut -d' ' -f1-3 /proc/loadavg)."
  [[ $FAILED == 0 ]] && echo "Result: all steps passed." || echo "Result: **FAILED** (see above)."
} >> "$REPORT"

cat "$REPORT"
echo "gpu_check: wrote $REPORT" >&2
exit "$FAILED"
