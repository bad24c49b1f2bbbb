"""A model's optional `config.toml`: batching, device, dtype, instances, version policy.

Every key is validated; an error names the file, the key and the fix, so a typo never
silently falls back to a default.
"""

from __future__ import annotations

import math
import re
import sys
from typing import Any, Literal

import msgspec

from torchrig.errors import RepositoryError
from torchrig.repository.budget import parse_memory_budget
from torchrig.repository.steps import STEP_KEYS, PostStep, PreStep, check_steps

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 only
    import tomli as tomllib

CONFIG_FILE = "config.toml"
DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")
_STEP_PATH = re.compile(r"\$\.(?P<section>preprocess|postprocess)\[(?P<index>\d+)\]")


# beyond these a config.toml is refused with the reason before any of its worker threads
# (instances per replica) or torch threads (threads per worker) would start
MAX_INSTANCES = 256
MAX_QUEUE_DELAY_MS = 600_000.0  # 10 min, twice the default cap on a request timeout; inf: a typo
MAX_THREADS = 1024


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class BatchingConfig(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    max_batch_size: int = 64  # rows per batch; 1 turns batching off
    # 0: a batch starts as soon as a worker is free, holding what queued meanwhile; > 0:
    # the first request of a batch may wait up to this long for company (opt-in)
    max_queue_delay_ms: float = 0.0
    preferred_batch_sizes: list[int] = []  # warm-up (and CUDA graph) sizes; default: powers of 2
    max_queue_size: int = 1024  # requests waiting; beyond it: queue full (503 + Retry-After)
    # a CPU model whose largest batch takes under this (timed at warm-up) runs its batches
    # on the event loop instead of a worker thread; 0 keeps every model on a worker thread
    inline_max_ms: float = 1.0


class VersionPolicy(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    policy: Literal["latest", "all", "specific"] = "latest"
    latest: int = 1  # with policy "latest": serve the N highest versions
    versions: list[int] = []  # with policy "specific"


class PipelineStep(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One `[[pipeline.step]]`: a member model (`model`) or a built-in step (`step`).

    `input_map` / `output_map` rename tensors as Triton's ensembles do: the key is the
    member's own tensor name, the value the pipeline's; a name left out keeps its own."""

    model: str = ""  # a model of the same repository, batched by its own batcher
    version: int | None = None  # None: the member's highest ready version
    step: str = ""  # a built-in step kind (torchrig.runtime.steps), instead of a model
    options: dict[str, Any] = {}  # the built-in step's options
    input_map: dict[str, str] = {}
    output_map: dict[str, str] = {}


class PipelineConfig(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`[pipeline]`: the model is a list of steps run in order, served as one model."""

    step: list[PipelineStep] = []
    # the pipeline's outputs (pipeline tensor names); empty: every output of the last step
    outputs: list[str] = []


class PaddingConfig(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`[padding]`: the model ignores padded positions (a mask input marks the real ones),
    so requests whose dynamic dimensions differ may share a batch, each padded up to a
    bucket (torchrig.runtime.padding). Without it, a batch holds one shape only."""

    buckets: list[int] = []  # sizes to pad up to; default: the dynamic dims' warm-up buckets
    values: dict[str, float] = {}  # input -> pad value (default 0; 0 is False for BOOL)


class ModelConfig(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    batching: BatchingConfig = BatchingConfig()
    # "auto": a replica on every visible GPU (else the CPU); "cpu", "cuda", "cuda:N": that
    # one device (torchrig.runtime.placement)
    device: str = "auto"
    # replicas listed explicitly, one per entry ("cpu", "cuda", "cuda:N"; repeats allowed),
    # instead of `device`
    devices: list[str] = []
    dtype: Literal["fp32", "fp16", "bf16"] | None = None  # None: as exported
    channels_last: bool | None = None  # None: on for 4-D float inputs on CUDA
    instances: int = 1  # per replica (per GPU with "auto"): CUDA lanes and worker threads
    # torch CPU threads each instance's batches use; None: 1 on CUDA (the host only joins
    # and copies batches), the process's torch thread count on CPU
    threads: int | None = None
    warmup: bool = True  # run every preferred batch size once before ready
    # On CUDA: capture a CUDA graph per warm-up batch size for each instance; a batch runs
    # in the smallest graph that holds it (padded). A capture failure falls back to eager.
    # Capturing runs each size, so `warmup = false` turns it off too.
    cuda_graphs: bool = True
    # torch.compile the program before warm-up ("off" by default: compiling takes minutes
    # for large models); a compile failure falls back to eager with a warning.
    compile: Literal["off", "default", "max-autotune-no-cudagraphs"] = "off"
    # "auto": a CPU torch.export program of PyTorch's own operators runs as a TorchScript
    # trace of its graph (no Python per operator) once the trace gave exactly its outputs at
    # every warm-up shape and golden example; else, and with "off", the exported module runs
    trace: Literal["auto", "off"] = "auto"
    # checked at load: bytes with a unit ("4GiB") or a fraction of device memory (0.5)
    memory_budget: str | float | None = None
    version_policy: VersionPolicy = VersionPolicy()
    # a pipeline (Triton's ensemble): this model has no versions of its own, its steps run
    # the models they name (see torchrig.runtime.pipeline)
    pipeline: PipelineConfig | None = None
    # built-in steps around the program (torchrig.repository.steps): BYTES inputs decoded
    # into its tensors before it runs, its outputs turned into answers after, per batch
    preprocess: list[PreStep] = []
    postprocess: list[PostStep] = []
    padding: PaddingConfig | None = None  # pad requests of dynamic shapes to buckets


def _check_pipeline(pipeline: PipelineConfig) -> list[str]:
    problems: list[str] = []
    if not pipeline.step:
        problems.append('pipeline needs at least one [[pipeline.step]] with model = "NAME"')
    for number, step in enumerate(pipeline.step, 1):
        if bool(step.model) == bool(step.step):
            problems.append(
                f'pipeline step {number} must name either model = "NAME" or step = "KIND" '
                "(exactly one)"
            )
        if step.version is not None and step.version < 1:
            problems.append(f"pipeline step {number}: version must be >= 1 (or left out)")
        if step.options and not step.step:
            problems.append(f"pipeline step {number}: options are for built-in steps only")
    return problems


def _check(config: ModelConfig, origin: str) -> ModelConfig:
    b = config.batching
    problems: list[str] = []
    if b.max_batch_size < 1:
        problems.append("batching.max_batch_size must be >= 1 (1 turns batching off)")
    if not 0 <= b.max_queue_delay_ms <= MAX_QUEUE_DELAY_MS:  # NaN too
        problems.append(
            f"batching.max_queue_delay_ms must be 0..{MAX_QUEUE_DELAY_MS:g} (0: a batch starts "
            "as soon as a worker is free)"
        )
    if b.max_queue_size < 1:
        problems.append("batching.max_queue_size must be >= 1")
    if not 0 <= b.inline_max_ms < math.inf:  # NaN too
        problems.append(
            "batching.inline_max_ms must be a finite number >= 0 (0: always a worker thread)"
        )
    bad_sizes = [s for s in b.preferred_batch_sizes if not 1 <= s <= b.max_batch_size]
    if bad_sizes:
        problems.append(
            f"batching.preferred_batch_sizes {bad_sizes} must lie in 1..max_batch_size "
            f"({b.max_batch_size})"
        )
    if not DEVICE.match(config.device):
        problems.append(f'device {config.device!r} must be "auto", "cpu", "cuda" or "cuda:N"')
    bad_devices = [d for d in config.devices if d == "auto" or not DEVICE.match(d)]
    if bad_devices:
        problems.append(
            f'devices {bad_devices}: each entry must be "cpu", "cuda" or "cuda:N" ("auto" '
            'goes in device = "auto", which places on every visible GPU)'
        )
    if config.devices and config.device != "auto":
        problems.append("set device or devices, not both (devices lists every replica)")
    if not 1 <= config.instances <= MAX_INSTANCES:
        problems.append(
            f"instances must be 1..{MAX_INSTANCES} (each is a worker thread per replica, "
            "and on a GPU a CUDA stream)"
        )
    if config.threads is not None and not 1 <= config.threads <= MAX_THREADS:
        problems.append(f"threads must be 1..{MAX_THREADS} (or left out for the default)")
    if config.memory_budget is not None:
        try:
            parse_memory_budget(config.memory_budget)
        except ValueError as exc:
            problems.append(str(exc))
    policy = config.version_policy
    if policy.policy == "latest" and policy.latest < 1:
        problems.append("version_policy.latest must be >= 1")
    if policy.policy == "specific" and not policy.versions:
        problems.append('version_policy.versions must list versions when policy = "specific"')
    if config.pipeline is not None:
        problems.extend(_check_pipeline(config.pipeline))
        if msgspec.structs.replace(config, pipeline=None) != ModelConfig():
            problems.append(
                "a pipeline's config.toml holds [pipeline] only: batching, device, steps and "
                "the other keys belong in its member models' config.toml"
            )
    problems.extend(check_steps(config.preprocess, config.postprocess))
    if config.padding is not None:
        buckets = config.padding.buckets
        if any(b < 1 for b in buckets) or buckets != sorted(set(buckets)):
            problems.append(f"padding.buckets {buckets} must be positive and ascending, no repeats")
    if problems:
        raise RepositoryError(f"{origin}: " + "; ".join(problems) + ".")
    return config


def parse_config(text: str, *, origin: str = CONFIG_FILE) -> ModelConfig:
    """Parse a config.toml; unknown keys, wrong types and bad values name the key and fix."""
    try:
        raw: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RepositoryError(f"{origin} is not valid TOML: {exc}.") from None
    try:
        config = msgspec.convert(raw, type=ModelConfig)
    except msgspec.ValidationError as exc:
        message = str(exc)
        hint = _step_hint(raw, message)
        if not hint and message.startswith("Object contains unknown field"):
            hint = (
                " Known keys: batching.{max_batch_size, max_queue_delay_ms, "
                "preferred_batch_sizes, max_queue_size, inline_max_ms}, device, devices, dtype, "
                "channels_last, "
                "instances, threads, warmup, cuda_graphs, compile, trace, memory_budget, "
                "version_policy.{policy, latest, versions}, pipeline.{outputs, step[].{model, "
                "version, step, options, input_map, output_map}}, [[preprocess]], "
                "[[postprocess]] (built-in steps)."
            )
        raise RepositoryError(f"{origin}: {message}.{hint}") from None
    return _check(config, origin)


def _step_hint(raw: dict[str, Any], message: str) -> str:
    """The keys of the built-in step a validation error points into, or ""."""
    match = _STEP_PATH.search(message)
    if match is None:
        return ""
    entries = raw.get(match["section"])
    index = int(match["index"])
    entry = entries[index] if isinstance(entries, list) and index < len(entries) else None
    kind = entry.get("step") if isinstance(entry, dict) else None
    if kind in STEP_KEYS:
        return f' Keys of a "{kind}" step: step, {STEP_KEYS[kind]}.'
    kinds = "image, text" if match["section"] == "preprocess" else "softmax, top_k"
    return f" Each [[{match['section']}]] entry needs step = one of {kinds}."


def default_config() -> ModelConfig:
    return ModelConfig()
