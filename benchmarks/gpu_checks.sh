#!/usr/bin/env bash
# Every GPU check of torchrig in one run on a CUDA machine, for a session that has one:
# the GPU-marked tests, the deep doctor, golden replay on the GPU, the demo's torchvision
# models, and the runtime/server throughput benchmark. Each step has its own time limit;
# a failing step is reported and the next one runs. Output lands in $OUT (default ./out).
#
# Run from the repository root: `bash benchmarks/gpu_checks.sh [steps]`, steps a comma list
# of tests,throughput,cpu_runtime,frames,doctor,verify,torchvision,image_pipeline,pipelines,
# placement (default: all). torchrig must be importable
# (`pip install -e .`, or PYTHONPATH=src with its dependencies installed).
set -uo pipefail
OUT="${OUT:-./out}"
mkdir -p "$OUT"
STEPS="${1:-tests,throughput,cpu_runtime,frames,doctor,verify,torchvision,image_pipeline,pipelines,placement}"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1

step() {  # step NAME LIMIT_S COMMAND...
    local name=$1 limit=$2
    shift 2
    case ",$STEPS," in *",$name,"*) ;; *) return 0 ;; esac
    echo "=== $name (limit ${limit}s) $(date -u +%T)"
    local start=$SECONDS
    timeout -k 10 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
    echo "=== $name: exit ${PIPESTATUS[0]} in $((SECONDS - start)) s"
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'

step tests "${TESTS_LIMIT_S:-240}" "$PY" -m pytest -q -p no:cacheprovider -m gpu \
    tests/facts/test_gpu.py tests/packaging/test_verify.py tests/server/test_metrics.py \
    tests/runtime
step throughput "${THROUGHPUT_LIMIT_S:-420}" "$PY" benchmarks/gpu_throughput.py --out "$OUT" ${THROUGHPUT_ARGS:-}
# the CPU runtime ratio of the demo ranker with more cores than a laptop CI box has
step cpu_runtime 120 bash -c "$PY benchmarks/runtime_ranker.py --seconds 2 --runs 3 \
&& $PY benchmarks/runtime_ranker.py --seconds 2 --runs 3 --threads 4"
# the server's own CPU per 1.2 MB frame request, on the GPU machine's cores
step frames 120 "$PY" benchmarks/serve_frames.py --rounds 3 --duration 4 --processes 4 -c 64
step doctor 120 "$PY" -m torchrig doctor --deep --probe-timeout-s 90
step verify 120 bash -c "rm -rf /tmp/demo-repo && $PY -c 'from pathlib import Path; \
from torchrig.demo import build_demo_repository; build_demo_repository(Path(\"/tmp/demo-repo\"))' \
&& $PY -m torchrig verify /tmp/demo-repo --device cuda"
step torchvision 180 "$PY" -m pytest -q -p no:cacheprovider \
    tests/demo/test_demo.py::test_torchvision_models_pack_when_asked
# JPEG bytes to top-5 through the server's image pipeline: nvJPEG batched decode (torchvision
# when it imports), resize and normalise on the GPU, against a PIL loop; then the image and
# text pipeline tests (their CPU path) on this machine
step image_pipeline 420 bash -c "$PY benchmarks/image_pipeline.py --device cuda --rounds 3 \
--images 64 -c 16 && $PY -m pytest -q -p no:cacheprovider tests/server/test_image_pipeline.py \
tests/server/test_text_pipeline.py tests/runtime/test_steps.py"
# pipelines and Python handlers with their models on the GPU (device "auto" picks cuda:0):
# tensors handed between members, a handler given cuda:0, answers equal the in-process models
step pipelines 300 "$PY" -m pytest -q -p no:cacheprovider tests/server/test_pipeline.py \
    tests/server/test_pipeline_images.py tests/server/test_handlers.py tests/runtime/test_pipeline.py
# device = "auto" on the real GPUs: one replica per GPU with `instances` lanes each, batches
# overlapping on the lanes (and landing on every GPU where there are two or more; that
# test skips on a one-GPU machine), then the CPU replica and placement tests on this box
step placement 240 "$PY" -m pytest -q -p no:cacheprovider -rs tests/server/test_replicas_gpu.py \
    tests/server/test_replicas.py tests/runtime/test_placement.py tests/deploy/test_gpu_placement.py
