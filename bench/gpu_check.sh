#!/usr/bin/env bash
# One command for a machine with NVIDIA GPUs: runs bench/gpu_check.py (a Qwen2-VL-7B-shaped
# model, random bf16 weights: LoRA training steps under DeepSpeed ZeRO-2 in both layouts,
# prefix-shared vs naive embedding extraction, image-once vs per-question generation) and
# writes bench/results/gpu.json. Everything fits in GPU_CHECK_BUDGET_S (480 s = 8 min).
#
#   bash bench/gpu_check.sh [gpu_check.py options, e.g. --images 32]
#       PyPI reachable: makes a virtual environment, installs the CUDA build of torch, the
#       pins below and the repo (pip install -e .)
#   bash bench/gpu_check.sh --offline BUNDLE [gpu_check.py options]
#       no network: the node's python3 (the reference image, bench/reference_image.txt) plus
#       the folder of wheels `python bench/gpu_bundle.py` built (copied with the tree). Checks
#       the bundle (whole, for this Python, its skinground is this tree's), installs it with
#       pip --no-index --no-deps into a folder of its own (GPU_CHECK_SITE) first on PYTHONPATH:
#       the image itself is not changed. With --tiny and no GPU this is the CPU rehearsal
#       tests/test_gpu_bundle.py runs.
#
# --gpus N (passed through to gpu_check.py): the training phases on N GPUs, N ranks under
# torchrun, config.yaml's global batch split over them (model.global_batch.train_batch), each
# rank's throughput and the MFU against N GPUs' peak. The default is 1 whatever the node has:
# one GPU without communication, as every earlier gpu.json measured, the same on any node.
# The paper trained on 4: --gpus 4 on a node with 4 measures that, communication included.
# Refused before any install where nvidia-smi shows fewer GPUs. Embedding and prediction run
# on one GPU either way (the workflow runs them one job per GPU).
#
# Environment (all optional):
#   GPU_CHECK_PYTHON    online: use this interpreter as it is, install nothing (one that has
#                       torch, transformers, peft, deepspeed, polars and the repo);
#                       --offline: the node's interpreter (default python3)
#   GPU_CHECK_SITE      --offline: where the bundle goes (default $TMPDIR/skinground-gpu-site;
#                       emptied first)
#   GPU_CHECK_VENV      online: the virtual environment (default ~/.cache/skinground/gpu-venv;
#                       an existing one that already imports everything is reused: no installs)
#   PYTHON              online: the interpreter that makes the venv (default python3)
#   TORCH_SPEC          online: the torch requirement (default torch==2.13.0: PyPI's build of
#                       it is for CUDA 13.0, which needs NVIDIA driver >= 580)
#   GPU_CHECK_PINS      online: the other packages, pinned to the versions the CPU tests ran with
#   GPU_CHECK_BUDGET_S  the whole run's limit in seconds (default 480)
set -euo pipefail
OFFLINE=
if [[ "${1:-}" == --offline ]]; then
    if [[ -z "${2:-}" || ! -d "$2" ]]; then
        echo "usage: bash bench/gpu_check.sh --offline BUNDLE_DIR [gpu_check.py options]" \
             "(no folder ${2:-given}; build one with: python bench/gpu_bundle.py)" >&2
        exit 2
    fi
    OFFLINE=$(cd "$2" && pwd)
    shift 2
fi
TINY=0
GPUS=1
prev=
for arg in "$@"; do
    [[ "$arg" == --tiny ]] && TINY=1
    [[ "$prev" == --gpus ]] && GPUS=$arg
    [[ "$arg" == --gpus=* ]] && GPUS=${arg#--gpus=}
    prev=$arg
done
if ! [[ "$GPUS" =~ ^[1-9][0-9]*$ ]]; then
    echo "--gpus takes a number of GPUs (1 or more), not '$GPUS'" >&2
    exit 2
fi
cd "$(dirname "$0")/.."
START=$SECONDS
BUDGET=${GPU_CHECK_BUDGET_S:-480}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
PINS=${GPU_CHECK_PINS:-transformers==5.24.0 peft==0.21.2 deepspeed==0.19.8 accelerate==1.15.0}
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_DEFAULT_TIMEOUT=60
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

say() { printf '== gpu_check.sh [%3ds] %s\n' "$((SECONDS - START))" "$*"; }
left() { echo $((BUDGET - (SECONDS - START))); }
# run LIMIT CMD...: CMD, killed when LIMIT seconds or the whole budget run out.
run() {
    local limit=$1; shift
    local l; l=$(left)
    (( l < limit )) && limit=$l
    if (( limit <= 0 )); then say "out of time before: $*"; return 124; fi
    timeout --kill-after=10 "$limit" "$@"
}

# The GPU and its driver.
if ! command -v nvidia-smi >/dev/null; then
    if (( ! TINY )); then
        say "no nvidia-smi: this needs a machine with an NVIDIA GPU (on CPU: add --tiny)"
        exit 2
    fi
    say "no nvidia-smi: a CPU rehearsal (--tiny)"
else
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    SEEN=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | grep -c . || true)
    if (( ! TINY && SEEN < GPUS )); then
        say "--gpus $GPUS: nvidia-smi shows ${SEEN:-0} GPU(s)"
        exit 2
    fi
    DRIVER=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -n1 | cut -d. -f1)
    if [[ -z "$OFFLINE" && "$TORCH_SPEC" == "torch==2.13.0" && "${DRIVER:-0}" -lt 580 ]]; then
        say "warning: driver ${DRIVER:-?} < 580 cannot run PyPI's torch 2.13.0 (CUDA 13.0);" \
            "set TORCH_SPEC to a torch whose PyPI build matches your driver's CUDA"
    fi
fi

IMPORTS='import torch, transformers, peft, deepspeed, accelerate, polars, skinground
print("torch", torch.__version__, "CUDA", torch.version.cuda, "transformers",
      transformers.__version__, "deepspeed", deepspeed.__version__, "skinground from",
      skinground.__file__)'
GPU='import sys, torch
assert torch.cuda.is_available(), "torch " + torch.__version__ + " sees no GPU"
n, want = torch.cuda.device_count(), int(sys.argv[1])
assert n >= want, f"--gpus {want}: torch sees {n} GPU(s)"
print("on", want, "of", n, "x", torch.cuda.get_device_name(0))'
EXTRA=()

if [[ -n "$OFFLINE" ]]; then
    PY=${GPU_CHECK_PYTHON:-python3}
    SITE=${GPU_CHECK_SITE:-${TMPDIR:-/tmp}/skinground-gpu-site}
    say "offline: the bundle $OFFLINE for $("$PY" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
    # stdlib only: the copy is whole, made for this Python, and its skinground is this tree's
    LISTED=$("$PY" bench/gpu_bundle.py --verify "$OFFLINE") || exit 2
    mapfile -t WHEELS <<<"$LISTED"
    PIP=("$PY" -m pip)
    if ! "$PY" -m pip --version >/dev/null 2>&1; then
        PIP_WHEEL=$(find "$OFFLINE" -maxdepth 1 -name 'pip-*.whl' | head -n1)
        if [[ -z "$PIP_WHEEL" ]]; then
            say "$PY has no pip and the bundle has none: build it with" \
                "python bench/gpu_bundle.py --with-pip"
            exit 2
        fi
        PIP=("$PY" "$PIP_WHEEL/pip")  # pip runs from its own wheel
    fi
    # Nothing but the bundle's files: no index, no pip configuration or PIP_* settings.
    CLEAN=()
    while read -r name; do CLEAN+=(-u "$name"); done < <(compgen -e | grep '^PIP_' || true)
    rm -rf "$SITE"
    say "installing ${#WHEELS[@]} wheels into $SITE (pip install --no-index --no-deps --target)"
    run 180 env "${CLEAN[@]}" PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1 \
        "${PIP[@]}" install --quiet --no-index --no-deps --no-warn-script-location \
        --target "$SITE" "${WHEELS[@]}"
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PATH="$SITE/bin:$PATH"
    EXTRA=(--bundle "$OFFLINE")
elif [[ -n "${GPU_CHECK_PYTHON:-}" ]]; then
    PY=$GPU_CHECK_PYTHON
    say "using $PY as it is (GPU_CHECK_PYTHON), no installs"
else
    VENV=${GPU_CHECK_VENV:-$HOME/.cache/skinground/gpu-venv}
    PY=$VENV/bin/python
    if [[ -x "$PY" ]] && "$PY" -c "$IMPORTS" >/dev/null 2>&1 \
            && "$PY" -c 'import skinground, pathlib, sys; sys.exit(pathlib.Path(skinground.__file__).resolve().parents[2] != pathlib.Path.cwd().resolve())'; then
        say "reusing $VENV"
    else
        say "creating $VENV"
        mkdir -p "$(dirname "$VENV")"
        if ! "${PYTHON:-python3}" -m venv --clear "$VENV"; then
            say "python3 -m venv failed (no ensurepip?); trying virtualenv"
            "${PYTHON:-python3}" -m pip install -q --user virtualenv
            "${PYTHON:-python3}" -m virtualenv --clear "$VENV"
        fi
        run 120 "$PY" -m pip install -q --upgrade pip setuptools wheel
        say "installing $TORCH_SPEC (CUDA build from PyPI)"
        run 300 "$PY" -m pip install -q "$TORCH_SPEC"
        say "installing $PINS and the repo (pip install -e .)"
        # shellcheck disable=SC2086  # PINS is a list of requirements
        run 300 "$PY" -m pip install -q "$TORCH_SPEC" $PINS -e .
    fi
fi
"$PY" -c "$IMPORTS"
if (( ! TINY )); then "$PY" -c "$GPU" "$GPUS"; fi

REMAINING=$(( $(left) - 15 ))
if (( REMAINING < 90 )); then
    say "only ${REMAINING}s left of ${BUDGET}s after the installs; running anyway (phases cut short)"
    REMAINING=90
fi
say "running bench/gpu_check.py (${REMAINING}s for all phases)"
status=0
timeout --kill-after=20 "$((REMAINING + 10))" \
    "$PY" bench/gpu_check.py --budget-s "$REMAINING" "${EXTRA[@]}" "$@" || status=$?
say "done (status $status): bench/results/gpu.json (or --out); the A6000 estimate from it:" \
    "python -m skinground.cost config.yaml"
exit "$status"
