#!/usr/bin/env bash
# One command for a bare machine with one NVIDIA GPU (H200; Python 3 + pip, the repo checked
# out, PyPI reachable): makes a virtual environment, installs the CUDA build of torch and the
# repo, then runs bench/gpu_check.py (a Qwen2-VL-7B-shaped model, random bf16 weights: LoRA
# training steps under DeepSpeed ZeRO-2, prefix-shared vs naive embedding extraction) and
# writes bench/results/gpu.json. Everything fits in GPU_CHECK_BUDGET_S (480 s = 8 min).
#
#   bash bench/gpu_check.sh [gpu_check.py options, e.g. --images 32]
#
# Environment (all optional):
#   GPU_CHECK_VENV      the virtual environment (default ~/.cache/skinground/gpu-venv; an
#                       existing one that already imports everything is reused: no installs)
#   GPU_CHECK_PYTHON    use this interpreter as it is, install nothing (e.g. an image's own
#                       python3 that has torch, transformers, peft, deepspeed and the repo)
#   PYTHON              the interpreter that makes the venv (default python3)
#   TORCH_SPEC          the torch requirement (default torch==2.13.0: PyPI's build of it is
#                       for CUDA 13.0, which needs NVIDIA driver >= 580; the H200 here has 580)
#   GPU_CHECK_PINS      the other packages, pinned to the versions the CPU tests ran with
#   GPU_CHECK_BUDGET_S  the whole run's limit in seconds (default 480)
set -euo pipefail
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
    say "no nvidia-smi: this needs a machine with an NVIDIA GPU (on CPU: python bench/gpu_check.py --tiny)"
    exit 2
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
DRIVER=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -n1 | cut -d. -f1)
if [[ "$TORCH_SPEC" == "torch==2.13.0" && "${DRIVER:-0}" -lt 580 ]]; then
    say "warning: driver ${DRIVER:-?} < 580 cannot run PyPI's torch 2.13.0 (CUDA 13.0);" \
        "set TORCH_SPEC to a torch whose PyPI build matches your driver's CUDA"
fi

IMPORTS='import torch, transformers, peft, deepspeed, accelerate, skinground
assert torch.cuda.is_available(), "torch " + torch.__version__ + " sees no GPU"
print("torch", torch.__version__, "CUDA", torch.version.cuda, "on", torch.cuda.get_device_name(0))'

if [[ -n "${GPU_CHECK_PYTHON:-}" ]]; then
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

REMAINING=$(( $(left) - 15 ))
if (( REMAINING < 90 )); then
    say "only ${REMAINING}s left of ${BUDGET}s after the installs; running anyway (phases cut short)"
    REMAINING=90
fi
say "running bench/gpu_check.py (${REMAINING}s for both phases)"
status=0
timeout --kill-after=20 "$((REMAINING + 10))" \
    "$PY" bench/gpu_check.py --budget-s "$REMAINING" "$@" || status=$?
say "done (status $status): bench/results/gpu.json; the A6000 estimate from it:" \
    "python -m skinground.cost config.yaml"
exit "$status"
