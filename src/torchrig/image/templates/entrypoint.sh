#!/bin/sh
# torchrig serve image entrypoint: prove the container can run its PyTorch build on its
# GPUs (the quick doctor, under 2 s), then replace this shell with the server command.
# The doctor reads TORCHRIG_DOCTOR_* variables; in CUDA images TORCHRIG_DOCTOR_REQUIRE_GPU
# is true, so a pod scheduled without a GPU stops at once with the cause and the fix
# (TORCHRIG_DOCTOR_REQUIRE_GPU=false starts without a GPU, e.g. a CPU smoke test); in CPU
# images it is false.
set -eu

TORCHRIG_DOCTOR_REQUIRE_GPU="${TORCHRIG_DOCTOR_REQUIRE_GPU:-true}"
export TORCHRIG_DOCTOR_REQUIRE_GPU

if [ "$#" -eq 0 ]; then
    echo "torchrig-entrypoint: no command to run (the image's CMD is 'torchrig serve /models')" >&2
    exit 64
fi

status=0
torchrig doctor >&2 || status=$?
if [ "$status" -ne 0 ]; then
    echo "torchrig-entrypoint: torchrig doctor failed (exit $status), so '$*' was not started;" \
        "the failed checks above name the cause and the fix" \
        "(TORCHRIG_DOCTOR_REQUIRE_GPU=false starts without a GPU)" >&2
    exit "$status"
fi
exec "$@"
