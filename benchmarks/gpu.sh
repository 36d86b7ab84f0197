#!/usr/bin/env bash
# The GPU benchmarks in one command, from a clean clone, in under 8 minutes on one H100/H200:
#   1. the machine: GPU, driver, torch, CUDA (environment.json)
#   2. ParticleNet and ParticleNet-Lite train steps, ours against weaver-core's, same weights,
#      inputs and batch: fp32 and bf16 autocast, and ParticleNet under torch.compile
#      (benchmarks/model.py)
#   3. trial packing: K trials fused into one against one at a time (benchmarks/packing.py)
#   4. the staged loader into GPU memory: pageable and pinned copies, kvikio's GPUDirect
#      Storage path where kvikio imports, else it says so (benchmarks/loader_device.py)
#   5. a DDP train step on every GPU against one, where there are two or more
#      (benchmarks/ddp_step.py)
# then prints a short table last and writes every result, as JSON and Markdown, under --out
# (gpu.json and gpu.md summarise them).
#
#   benchmarks/gpu.sh                      # on a GPU machine, results in benchmarks/results/gpu
#   benchmarks/gpu.sh --wheels DIR         # offline: dependencies from a folder of wheels
#   benchmarks/gpu.sh --device cpu --quick --no-install   # a dry run without a GPU (tested)
#
# Installing: a virtualenv that sees the running Python's packages (so the machine's own CUDA
# torch is kept) gets trainyard and its dependencies, and weaver-core without its dependencies (its
# model code needs only torch). --no-install runs with $PYTHON as it is.
set -euo pipefail

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; }

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEVICE=cuda
OUT="$ROOT/benchmarks/results/gpu"
WHEELS=""
QUICK=0
INSTALL=1
PYTHON=${PYTHON:-python3}
while [[ $# -gt 0 ]]; do
    case "$1" in
        --device) DEVICE=${2:?--device needs cuda or cpu}; shift 2 ;;
        --out) OUT=${2:?--out needs a folder}; shift 2 ;;
        --wheels) WHEELS=${2:?--wheels needs a folder of wheels}; shift 2 ;;
        --quick) QUICK=1; shift ;;
        --no-install) INSTALL=0; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "gpu.sh: unknown option '$1'; see benchmarks/gpu.sh --help" >&2; exit 2 ;;
    esac
done
if [[ "$DEVICE" != cuda && "$DEVICE" != cpu ]]; then
    echo "gpu.sh: --device is '$DEVICE'; use cuda or cpu" >&2
    exit 2
fi
if [[ -n "$WHEELS" && ! -d "$WHEELS" ]]; then
    echo "gpu.sh: --wheels $WHEELS is not a folder; give the folder that holds the wheels" >&2
    exit 2
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$ROOT"
started=$SECONDS
failed=()
step() { echo; echo "== [$((SECONDS - started)) s] $*"; }
# A benchmark that fails is named at the end; the others still run, so one broken step does
# not cost a whole (scarce) GPU session.
bench() {
    if ! "$PYTHON" "$@"; then
        echo "gpu.sh: FAILED: python $*" >&2
        failed+=("$*")
    fi
}

if [[ $INSTALL == 1 ]]; then
    step "installing into a virtualenv that keeps the system's torch"
    venv=${VENV:-$(mktemp -d -t trainyard-gpu-XXXXXX)/venv}
    "$PYTHON" -m venv --system-site-packages "$venv"
    # Where $PYTHON is itself a virtualenv (as on many GPU images), its packages are not the
    # system's: a .pth file puts them on the new one's path, so its torch is kept too.
    "$PYTHON" -c 'import site; print("\n".join(site.getsitepackages()))' \
        >"$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/_base.pth"
    pip_options=(--quiet --disable-pip-version-check)
    if [[ -n "$WHEELS" ]]; then
        pip_options+=(--no-index --find-links "$WHEELS" --no-build-isolation)
    fi
    "$venv/bin/python" -m pip install "${pip_options[@]}" -e .
    "$venv/bin/python" -m pip install "${pip_options[@]}" --no-deps 'weaver-core>=0.5.3,<0.6'
    PYTHON="$venv/bin/python"
fi
export PYTHONPATH="$ROOT/src:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

step "the machine"
"$PYTHON" -m benchmarks.environment "$OUT/environment.json"
# The GPUs torch sees, read from that record: a process that imports torch again just to count
# them would cost seconds.
gpus=$("$PYTHON" -c 'import json, sys; print(len(json.load(open(sys.argv[1]))["gpus"]))' \
    "$OUT/environment.json")
if [[ "$DEVICE" == cuda ]] && ((gpus == 0)); then
    echo "gpu.sh: torch sees no CUDA device; run on a GPU machine, or --device cpu for a dry run" >&2
    exit 1
fi

quick=()
precisions=(fp32 bf16)
# A dry run checks the script, not the numbers: one precision and one model are enough
# (tests/benchmarks/test_model_benchmark.py runs both models' quick pass).
if [[ $QUICK == 1 ]]; then quick=(--quick --models particlenet-lite); precisions=(fp32); fi

# On a GPU a step takes milliseconds: time 20 of them per pass.
model_steps=()
if [[ "$DEVICE" == cuda ]]; then model_steps=(--steps 20 --warmup 5); fi
step "model: train steps, ours against weaver-core"
for precision in "${precisions[@]}"; do
    bench -m benchmarks.model --device "$DEVICE" --precision "$precision" "${model_steps[@]}" \
        --out "$OUT" --tag "model-$DEVICE-$precision" "${quick[@]}"
done
if [[ "$DEVICE" == cuda ]]; then
    # Compiling takes about a minute per model and precision: ParticleNet in bf16 only.
    step "model: train steps under torch.compile (ParticleNet, bf16, batch 512)"
    bench -m benchmarks.model --device "$DEVICE" --precision bf16 --compile \
        --models particlenet --batch-sizes 512 "${model_steps[@]}" \
        --out "$OUT" --tag "model-$DEVICE-bf16-compile" "${quick[@]}"
fi

# A GPU has room for wider packs than a CPU.
pack_sizes=()
if [[ "$DEVICE" == cuda ]]; then pack_sizes=(--ks 1 4 8 16); fi
step "packing: K trials in one against one at a time"
for precision in "${precisions[@]}"; do
    bench -m benchmarks.packing --device "$DEVICE" --precision "$precision" "${pack_sizes[@]}" \
        --out "$OUT" --tag "packing-$DEVICE-$precision" "${quick[@]}"
done

step "loader into device memory"
loader_jets=200000
if [[ $QUICK == 1 ]]; then loader_jets=5000; fi
bench -m benchmarks.loader_device --device "$DEVICE" --jets "$loader_jets" \
    --out "$OUT" --tag "loader-$DEVICE"

step "DDP train step"
ddp_options=(--device "$DEVICE")
if [[ $QUICK == 1 ]]; then
    ddp_options+=(--model particlenet-lite --batch-size 8 --steps 1 --warmup 1 --repeats 1)
fi
ranks=$gpus
if [[ "$DEVICE" == cpu ]]; then ranks=2; fi
if ((ranks >= 2)); then
    for n in 1 "$ranks"; do
        bench -m torch.distributed.run --standalone --nproc_per_node "$n" \
            -m benchmarks.ddp_step "${ddp_options[@]}" --out "$OUT/ddp-$DEVICE-$n.json"
    done
else
    echo "one GPU: the DDP scaling step needs two or more, skipped" | tee "$OUT/ddp-skipped.txt"
fi

step "summary"
bench -m benchmarks.gpu_summary "$OUT"
echo "($((SECONDS - started)) s in all; results in $OUT)"
if ((${#failed[@]})); then
    printf 'gpu.sh: %d step(s) failed:\n' "${#failed[@]}" >&2
    printf '  python %s\n' "${failed[@]}" >&2
    exit 1
fi
