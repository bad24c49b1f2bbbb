"""The facts snapshot: what a machine is, as plain, JSON-serialisable data.

`facts` collects it once; `doctor` and `envlock` judge it with pure functions. A
snapshot taken on a GPU node (or written by hand) can be judged anywhere. Every
field that could not be collected is `None` (or an empty list) and, where the
reason matters, the reason is kept in an `*_error` field: collecting never raises.

Bump `SCHEMA_VERSION` on any incompatible change; `snapshot_from_json` refuses other
schema versions with a clear message.
"""

from __future__ import annotations

import msgspec

from torchrig.errors import SnapshotError
from torchrig.jsondoc import from_json, to_json

SCHEMA_VERSION = 1


class _Fact(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    """Base of every snapshot record: immutable, keyword-only."""


class OsFacts(_Fact, frozen=True, kw_only=True):
    system: str  # platform.system(): "Linux", "Darwin", "Windows"
    release: str  # kernel release
    machine: str  # "x86_64", "aarch64"
    distro: str | None = None  # PRETTY_NAME from /etc/os-release
    libc: str | None = None  # "glibc 2.36"


class PythonFacts(_Fact, frozen=True, kw_only=True):
    version: str  # "3.11.7"
    implementation: str  # "CPython"
    executable: str


class TorchFacts(_Fact, frozen=True, kw_only=True):
    """What the installed torch build is and what it says about CUDA."""

    version: str  # torch.__version__, e.g. "2.9.1+cu128"
    location: str | None = None  # directory of the torch package
    cuda: str | None = None  # torch.version.cuda, "12.8"; None for a CPU or ROCm build
    hip: str | None = None  # torch.version.hip
    git_version: str | None = None
    debug: bool = False
    cxx11_abi: bool | None = None
    arch_list: list[str] = []  # torch.cuda.get_arch_list(): ["sm_80", "sm_90", "compute_90"]
    # torch.cuda.PYTORCH_RELEASES_CODE_CC (recent releases): the release's own table of
    # compiled architectures per CUDA version and host arch, {"13.0": {"aarch64": [80, ...]}};
    # readable without a GPU, unlike get_arch_list()
    release_arch_table: dict[str, dict[str, list[int]]] = {}
    cudnn_version: int | None = None  # runtime, torch.backends.cudnn.version(): 91002
    cudnn_compile_version: int | None = None  # what the build was compiled against
    cudnn_error: str | None = None  # what torch.backends.cudnn.version() raised (mismatch)
    nccl_version: str | None = None  # "2.27.5"
    build_flags: dict[str, str] = {}  # USE_CUDNN, USE_NCCL, USE_FLASH_ATTENTION, ... from
    # torch.__config__.show(); values as printed ("ON"/"OFF"/"1"/...)
    # torch.backends.cuda.is_flash_attention_available()
    flash_attention_available: bool | None = None
    cuda_available: bool | None = None  # torch.cuda.is_available()
    device_count: int | None = None  # torch.cuda.device_count()
    cuda_init_error: str | None = None  # the message torch.cuda.init() raised, if any
    num_threads: int | None = None  # torch.get_num_threads()


class GpuFacts(_Fact, frozen=True, kw_only=True):
    """One physical GPU as NVML (or, failing that, torch) sees it."""

    index: int
    name: str  # "NVIDIA H100 80GB HBM3"
    uuid: str | None = None
    compute_capability: str | None = None  # "9.0"
    memory_total_bytes: int | None = None
    memory_used_bytes: int | None = None
    pci_bus_id: str | None = None
    mig_enabled: bool | None = None
    mig_devices: int | None = None  # MIG instances created on this GPU
    persistence_mode: bool | None = None
    ecc_enabled: bool | None = None
    ecc_uncorrected_volatile: int | None = None
    retired_pages_pending: bool | None = None
    remapped_rows_pending: bool | None = None
    remapped_rows_failure: bool | None = None
    source: str = "nvml"  # "nvml" or "torch"


class DriverFacts(_Fact, frozen=True, kw_only=True):
    version: str | None = None  # "570.86.15"
    cuda_version: str | None = None  # highest CUDA the driver supports, "12.8"
    nvml_version: str | None = None
    source: str = "nvml"  # "nvml" or "proc" (/proc/driver/nvidia/version)


class LoadedLibrary(_Fact, frozen=True, kw_only=True):
    """A CUDA-stack shared library mapped into the collecting process."""

    name: str  # family: "libcudnn", "libnccl", "libcublas", "libcublasLt",
    # "libnvJitLink", "libcudart", "libcuda", "libcusparse", "libcufft", ...
    path: str  # the real path of the mapped file
    version: str | None = None  # from the file name, "9.10.2" or "9" when only the major shows
    from_wheel: bool = False  # under site-packages (nvidia/* wheels or torch/lib)


class CandidateLibrary(_Fact, frozen=True, kw_only=True):
    """A CUDA-stack library found in an LD_LIBRARY_PATH directory (it could shadow)."""

    name: str
    path: str
    ld_library_path_entry: str


class CgroupFacts(_Fact, frozen=True, kw_only=True):
    version: int | None = None  # 1 or 2
    memory_limit_bytes: int | None = None  # None: unlimited or unknown
    cpu_quota_cores: float | None = None  # cpu.max quota/period; None: unlimited


class ShmFacts(_Fact, frozen=True, kw_only=True):
    path: str = "/dev/shm"
    total_bytes: int | None = None
    free_bytes: int | None = None


class ContainerFacts(_Fact, frozen=True, kw_only=True):
    in_container: bool = False
    runtime: str | None = None  # "docker", "podman", "kubernetes", "containerd", ...
    gpu_requested: bool = False  # the container asked for GPUs (NVIDIA_VISIBLE_DEVICES etc.)
    gpu_request_hint: str | None = None  # what made us think so
    device_nodes: list[str] = []  # /dev/nvidia* present


class KernelProbe(_Fact, frozen=True, kw_only=True):
    """`--deep`: a real kernel launch and a matmul checked against the CPU on one device."""

    device: str  # "cuda:0" or "cpu"
    ok: bool
    kernel_ms: float | None = None
    matmul_max_rel_error: float | None = None
    error: str | None = None


class SdpaBackendProbe(_Fact, frozen=True, kw_only=True):
    backend: str  # "flash", "efficient", "cudnn", "math"
    ok: bool
    median_ms: float | None = None
    error: str | None = None


class SdpaProbe(_Fact, frozen=True, kw_only=True):
    """`--deep`: which scaled_dot_product_attention backends run, and how fast."""

    device: str
    dtype: str  # "bfloat16"
    shape: list[int]  # [batch, heads, seq_len, head_dim]
    causal: bool = True
    backends: list[SdpaBackendProbe] = []
    error: str | None = None


class AllReduceProbe(_Fact, frozen=True, kw_only=True):
    """`--deep`: a collective across local devices (NCCL on GPUs, gloo on CPU)."""

    backend: str  # "nccl" or "gloo"
    world_size: int
    ok: bool
    size_bytes: int | None = None
    median_ms: float | None = None
    bus_bandwidth_gbps: float | None = None
    error: str | None = None


class ProbeFacts(_Fact, frozen=True, kw_only=True):
    kernels: list[KernelProbe] = []
    sdpa: list[SdpaProbe] = []
    allreduce: AllReduceProbe | None = None
    error: str | None = None  # the probe process itself failed (crash, timeout)
    duration_s: float | None = None


class Snapshot(_Fact, frozen=True, kw_only=True):
    """Everything the checks need to know about one machine or container."""

    taken_at: str  # ISO 8601, UTC
    os: OsFacts
    python: PythonFacts
    schema_version: int = SCHEMA_VERSION
    hostname: str | None = None
    torch: TorchFacts | None = None
    torch_error: str | None = None  # why torch is None ("not installed", import error)
    driver: DriverFacts | None = None
    nvml_error: str | None = None  # why NVML could not be used
    gpus: list[GpuFacts] = []
    libraries: list[LoadedLibrary] = []
    library_candidates: list[CandidateLibrary] = []
    cgroup: CgroupFacts = CgroupFacts()
    host_memory_bytes: int | None = None
    cpu_count: int | None = None
    shm: ShmFacts | None = None
    container: ContainerFacts = ContainerFacts()
    env: dict[str, str] = {}  # only whitelisted variable names, never secrets
    probes: ProbeFacts | None = None  # only with --deep


def snapshot_to_json(snapshot: Snapshot) -> bytes:
    """Stable, diff-friendly JSON: sorted keys, two-space indent, trailing newline."""
    return to_json(snapshot)


def snapshot_from_json(data: bytes | str, *, origin: str = "snapshot") -> Snapshot:
    """Parse and validate a snapshot; every defect becomes a `SnapshotError` naming the fix."""
    return from_json(
        data,
        Snapshot,
        origin=origin,
        what="snapshot",
        schema="snapshot",
        schema_version=SCHEMA_VERSION,
        error=SnapshotError,
        fix="Take a new one with `torchrig doctor --save-snapshot FILE`.",
    )
