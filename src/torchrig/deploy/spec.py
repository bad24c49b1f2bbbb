"""What `torchrig deploy` renders, validated once, before anything is rendered or written.

`DeploySpec.create(...)` checks every input (DNS-1123 names, a pinned image, positive
resource quantities, a GPU count a node can hold, a model repository the pod can reach)
and raises `UsageError` with the problem and the fix; the renderers trust a spec.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from torchrig.deploy.options import (
    GPU_RESOURCE,
    check_gpu_resource,
    check_object_name,
    mig_memory_gib,
    milli_cpu,
    parse_env,
    parse_gpu_products,
    parse_metadata,
)
from torchrig.deploy.storage import ModelStorage, model_storage
from torchrig.errors import UsageError
from torchrig.image.lock import SERVE_EXTRAS
from torchrig.settings import ServeSettings

MAX_GPUS = 8  # an HGX/DGX node: the most GPUs the common node types carry
# a name stays a valid InferenceService and Service name with KServe's "-predictor" added
MAX_NAME = 53
SHM_PER_GPU = 2 << 30  # memory-backed /dev/shm per GPU or worker (Docker's default is 64 MiB)
SHM_PER_MIG = 1 << 30  # per MIG slice: a slice holds a smaller model
MEMORY_PER_GPU = 16 << 30  # default container memory per GPU
MIN_MEMORY = 1 << 30
MIN_MIG_MEMORY = 4 << 30
DEFAULT_CPU = "4"
CPU_PER_WORKER = 2  # a server process: its event loop, and torch's host-side work
MAX_WORKERS = 64
DEFAULT_MIN_REPLICAS = 2
DEFAULT_MAX_REPLICAS = 8
DEFAULT_TARGET_INFLIGHT = 32
DEFAULT_NODE_SELECTOR = (("nvidia.com/gpu.present", "true"),)  # GPU feature discovery's label

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_RFC1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_QUANTITY = re.compile(
    r"^(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?$"
)
_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18, "m": -3}
# the OCI reference grammar (github.com/distribution/reference), compactly
_DOMAIN = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE_NAME = re.compile(
    rf"^(?:{_DOMAIN}(?:\.{_DOMAIN})*(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*$"
)
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[0-9a-fA-F]{32,}$")
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://\S+$")
# label keys: an optional DNS subdomain prefix and a name of up to 63 characters
_LABEL_KEY = re.compile(
    r"^(?:[a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^(?:[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


def parse_quantity(text: str, *, what: str, binary_only: bool = False) -> Decimal:
    """A Kubernetes resource quantity ("16Gi", "500m", "4") as a number, or a UsageError."""
    match = _QUANTITY.match(text.strip())
    example = "16Gi or 64G" if binary_only else "4 or 500m"
    if not match:
        raise UsageError(f"{what} {text!r} is not a Kubernetes quantity; write it like {example}")
    suffix = match["suffix"] or ""
    if binary_only and suffix == "m":
        raise UsageError(f"{what} {text!r} is in milli-bytes; write it like 16Gi")
    try:
        number = Decimal(match["number"])
    except InvalidOperation:  # pragma: no cover - the pattern admits only decimals
        raise UsageError(f"{what} {text!r} is not a number; write it like {example}") from None
    if suffix in _BINARY:
        value = number * (Decimal(1024) ** _BINARY[suffix])
    else:
        value = number * (Decimal(10) ** _DECIMAL.get(suffix, 0))
    if value <= 0:
        raise UsageError(f"{what} {text!r} must be positive; write it like {example}")
    return value


def gibibytes(count: int) -> str:
    """`count` GiB as a quantity string ("2Gi")."""
    return f"{count}Gi"


def check_name(name: str, *, what: str = "--name") -> str:
    """A resource name torchrig can use for every object: an RFC 1035 label, <= 53 chars."""
    if not name or len(name) > MAX_NAME or not _RFC1035.match(name):
        raise UsageError(
            f"{what} {name!r} is not a valid name: use 1 to {MAX_NAME} lower-case letters, "
            "digits and '-', starting with a letter and ending with a letter or digit "
            "(DNS-1123/RFC 1035 label), e.g. ranker"
        )
    return name


def check_namespace(namespace: str) -> str:
    """A namespace: a DNS-1123 label of at most 63 characters."""
    if len(namespace) > 63 or not _LABEL.match(namespace):
        raise UsageError(
            f"--namespace {namespace!r} is not a valid namespace: use 1 to 63 lower-case "
            "letters, digits and '-', starting and ending with a letter or digit, e.g. serving"
        )
    return namespace


def check_image(image: str) -> str:
    """An image reference pinned by a tag (not `latest`) or a digest."""
    fix = "e.g. registry.example.com/platform/pytorch:2.9.1-cuda12.8-serve"
    rest, _, digest = image.partition("@")
    name, tag = rest, ""
    if ":" in rest.rsplit("/", 1)[-1]:
        name, tag = rest.rsplit(":", 1)
    if not _IMAGE_NAME.match(name) or (tag and not _TAG.match(tag)):
        raise UsageError(
            f"--image {image!r} is not a valid image reference: use "
            f"[registry/]path:tag with lower-case path components, {fix}"
        )
    if digest and not _DIGEST.match(digest):
        raise UsageError(f"--image {image!r} has a malformed digest: use @sha256:<64 hex digits>")
    if not tag and not digest:
        raise UsageError(
            f"--image {image!r} has no tag or digest, so every node may pull a different "
            f"image: pin a tag or a digest, {fix}"
        )
    if tag == "latest" and not digest:
        raise UsageError(
            f"--image {image!r} uses the moving tag 'latest': pin a version tag or a digest, {fix}"
        )
    return image


def check_model_repo(url: str) -> str:
    """A model repository the pod can reach: an fsspec URL (s3://, gs://, ...) or an
    absolute path (of a volume you mount)."""
    if _URL.match(url) or (url.startswith("/") and " " not in url):
        return url
    raise UsageError(
        f"--model-repo {url!r} is neither a URL nor an absolute path: give the repository as "
        "the pod sees it, e.g. s3://models/ranking or gs://bucket/repo (or --model-volume "
        "pvc:CLAIM for a volume)"
    )


def _check_names(items: tuple[str, ...], what: str, example: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(check_object_name(i, what=what, example=example) for i in items))


def parse_node_selector(items: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """`KEY=VALUE` pairs as (key, value), each a valid label key and value."""
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not _LABEL_KEY.match(key) or not _LABEL_VALUE.match(value):
            raise UsageError(
                f"--node-selector {item!r} is not KEY=VALUE with a valid label key and value, "
                "e.g. nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3"
            )
        pairs.append((key, value))
    return tuple(pairs)


@dataclass(frozen=True)
class DeploySpec:
    """One torchrig deployment: what to run, where, with which resources and scaling.

    `replicas` set means a fixed replica count and no autoscaler; otherwise the
    HorizontalPodAutoscaler scales between `min_replicas` and `max_replicas`.
    """

    name: str
    image: str
    model_repo: str  # the `torchrig serve` argument: a URL or a path in the container
    storage: ModelStorage
    gpus: int = 1
    memory: str = ""  # empty: MEMORY_PER_GPU per GPU
    cpu: str = DEFAULT_CPU
    namespace: str | None = None
    replicas: int | None = None
    min_replicas: int = DEFAULT_MIN_REPLICAS
    max_replicas: int = DEFAULT_MAX_REPLICAS
    target_inflight: int = DEFAULT_TARGET_INFLIGHT
    drain_timeout_s: float = ServeSettings.drain_timeout_s
    node_selector: tuple[tuple[str, str], ...] = DEFAULT_NODE_SELECTOR
    token_secret: str | None = None  # an existing Secret: then none is rendered
    workers: int = 1
    env: tuple[tuple[str, str], ...] = ()
    env_from_secrets: tuple[str, ...] = ()
    image_pull_secrets: tuple[str, ...] = ()
    service_account: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    priority_class: str | None = None
    gpu_products: tuple[str, ...] = ()
    gpu_resource: str = GPU_RESOURCE

    @classmethod
    def create(
        cls,
        *,
        name: str,
        image: str,
        model_repo: str | None = None,
        model_volume: str | None = None,
        model_in_image: bool = False,
        gpus: int = 1,
        memory: str | None = None,
        cpu: str | None = None,
        namespace: str | None = None,
        replicas: int | None = None,
        min_replicas: int | None = None,
        max_replicas: int | None = None,
        target_inflight: int | None = None,
        drain_timeout_s: float | None = None,
        node_selector: tuple[str, ...] = (),
        token_secret: str | None = None,
        workers: int | None = None,
        env: tuple[str, ...] = (),
        env_from_secrets: tuple[str, ...] = (),
        image_pull_secrets: tuple[str, ...] = (),
        service_account: str | None = None,
        labels: tuple[str, ...] = (),
        annotations: tuple[str, ...] = (),
        priority_class: str | None = None,
        gpu_products: tuple[str, ...] = (),
        gpu_resource: str | None = None,
    ) -> DeploySpec:
        """Validate the inputs (None: the default) and build the spec, or raise UsageError."""
        check_name(name)
        check_image(image)
        storage = model_storage(model_repo, model_volume, model_in_image=model_in_image)
        resource = check_gpu_resource(gpu_resource or GPU_RESOURCE)
        # default: one server process per GPU (or MIG slice), each on its own device
        workers = max(1, gpus) if workers is None else workers
        if not 1 <= workers <= MAX_WORKERS:
            raise UsageError(f"--workers {workers} must lie in 1..{MAX_WORKERS}")
        if service_account is not None:
            check_object_name(service_account, what="--service-account", example="ranker-reader")
        if priority_class is not None:
            check_object_name(priority_class, what="--priority-class", example="serving-high")
        if namespace is not None:
            check_namespace(namespace)
        if token_secret is not None and (len(token_secret) > 253 or not _LABEL.match(token_secret)):
            raise UsageError(
                f"--token-secret {token_secret!r} is not a valid Secret name: use lower-case "
                "letters, digits and '-'"
            )
        if gpus < 1:
            raise UsageError(
                f"--gpus {gpus}: a torchrig server needs at least 1 GPU; give 1 to {MAX_GPUS}"
            )
        if gpus > MAX_GPUS:
            raise UsageError(
                f"--gpus {gpus} is more than a node has ({MAX_GPUS} on an HGX/DGX node), so the "
                f"pod would never be scheduled: give 1 to {MAX_GPUS} and scale out with replicas"
            )
        slice_gib = mig_memory_gib(resource)
        # for a MIG slice: host memory to stage what fits in the slice, twice over
        per_gpu = max(MIN_MIG_MEMORY, (2 * slice_gib) << 30) if slice_gib else MEMORY_PER_GPU
        memory = memory or gibibytes(per_gpu * gpus >> 30)
        memory_bytes = parse_quantity(memory, what="--memory", binary_only=True)
        shm = shm_bytes(gpus, workers, resource)
        if memory_bytes < max(MIN_MEMORY, shm + MIN_MEMORY):
            need = gibibytes(max(MIN_MEMORY, shm + MIN_MEMORY) >> 30)
            raise UsageError(
                f"--memory {memory} is too little: /dev/shm ({gibibytes(shm >> 30)} for {gpus} "
                f"GPU(s), {workers} worker(s)) is memory-backed and counts against the limit; "
                f"give at least {need}"
            )
        cpu = cpu or milli_cpu(max(Decimal(DEFAULT_CPU), Decimal(CPU_PER_WORKER * workers)))
        if parse_quantity(cpu, what="--cpu") < Decimal("0.1"):
            raise UsageError(f"--cpu {cpu} is too little to run the server: give at least 100m")
        if replicas is not None and (min_replicas is not None or max_replicas is not None):
            raise UsageError(
                "give either --replicas (a fixed count, no autoscaler) or "
                "--min-replicas/--max-replicas (autoscaled), not both"
            )
        if replicas is not None and replicas < 1:
            raise UsageError(f"--replicas {replicas} must be at least 1")
        low = DEFAULT_MIN_REPLICAS if min_replicas is None else min_replicas
        high = max(DEFAULT_MAX_REPLICAS, low) if max_replicas is None else max_replicas
        if low < 1:
            raise UsageError(
                f"--min-replicas {low} must be at least 1 (a GPU server cannot scale from zero "
                "without a minutes-long cold start)"
            )
        if high < low:
            raise UsageError(f"--max-replicas {high} is below --min-replicas {low}")
        inflight = DEFAULT_TARGET_INFLIGHT if target_inflight is None else target_inflight
        if inflight < 1:
            raise UsageError(f"--target-inflight {inflight} must be at least 1")
        drain = ServeSettings.drain_timeout_s if drain_timeout_s is None else drain_timeout_s
        if not 0 < drain <= 3600:  # NaN fails too
            raise UsageError(f"--drain-timeout-s {drain} must lie in (0, 3600] seconds")
        return cls(
            name=name,
            image=image,
            model_repo=storage.repo,
            storage=storage,
            gpus=gpus,
            memory=memory,
            cpu=cpu,
            namespace=namespace,
            replicas=replicas,
            min_replicas=low,
            max_replicas=high,
            target_inflight=inflight,
            drain_timeout_s=drain,
            node_selector=parse_node_selector(node_selector) or DEFAULT_NODE_SELECTOR,
            token_secret=token_secret,
            workers=workers,
            env=parse_env(env),
            env_from_secrets=_check_names(env_from_secrets, "--env-from-secret", "s3-credentials"),
            image_pull_secrets=_check_names(
                image_pull_secrets, "--image-pull-secret", "registry-credentials"
            ),
            service_account=service_account,
            labels=parse_metadata(labels, what="--labels"),
            annotations=parse_metadata(annotations, what="--annotations"),
            priority_class=priority_class,
            gpu_products=parse_gpu_products(gpu_products),
            gpu_resource=resource,
        )

    @property
    def autoscaled(self) -> bool:
        return self.replicas is None

    @property
    def shm_size(self) -> str:
        return gibibytes(shm_bytes(self.gpus, self.workers, self.gpu_resource) >> 30)

    def notes(self) -> list[str]:
        """Things worth saying on stderr that are not errors."""
        notes = []
        tag = self.image.partition("@")[0].rsplit("/", 1)[-1].partition(":")[2]
        if tag and not tag.endswith("-serve") and "-serve-" not in tag:
            notes.append(
                f"image tag {tag!r} is not a torchrig serve image "
                "(pytorch:<torch>-cuda<X.Y>-serve): the manifests assume its entrypoint "
                "(the quick doctor, then the command) and its user, UID 10001"
            )
        storage = self.storage
        if storage.extra and storage.extra not in SERVE_EXTRAS:
            notes.append(
                f"{storage.scheme}:// repositories need the '{storage.extra}' extra, which the "
                f"serve image does not install (it has torchrig[{','.join(SERVE_EXTRAS)}]): "
                "build it with torchrig image build ... --torchrig-spec "
                f"'torchrig[{','.join((*SERVE_EXTRAS, storage.extra))}]==<version>'"
            )
        public = storage.scheme in ("http", "https")
        identity = self.service_account is not None or bool(self.env_from_secrets)
        if storage.kind == "url" and not public and not identity:
            notes.append(
                f"{self.model_repo} needs credentials: give --service-account (IRSA, GKE or "
                "Azure Workload Identity) or --env-from-secret NAME; without either the "
                "pod relies on the node's own identity"
            )
        # each worker places its models on every GPU of its share (device = "auto"): all
        # GPUs are used, evenly only when one count divides the other
        low, high = sorted((self.workers, self.gpus))
        if self.workers < self.gpus and mig_memory_gib(self.gpu_resource):
            notes.append(
                f"--workers {self.workers} for {self.gpus} MIG slices: a CUDA process sees "
                f"only the first slice it is given, so give --workers {self.gpus} (the default)"
            )
        elif high % low:
            notes.append(
                f"--workers {self.workers} for {self.gpus} GPUs: the server gives each worker "
                'its share of the GPUs (device = "auto" places a replica on each), but '
                "unevenly, while requests are spread evenly over the workers; give "
                f"--workers {self.gpus} (the default) or a divisor or multiple of {self.gpus}"
            )
        return notes


def shm_bytes(gpus: int, workers: int, resource: str = GPU_RESOURCE) -> int:
    """Memory-backed /dev/shm: per GPU (or MIG slice) or per worker, whichever is more."""
    per = SHM_PER_MIG if mig_memory_gib(resource) else SHM_PER_GPU
    return per * max(gpus, workers)
