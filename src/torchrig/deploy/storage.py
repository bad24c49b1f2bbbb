"""Where the pod reads its model repository from, decided once from the deploy options.

Three forms, each rendered so that the server can read it without editing the output:

- an object store URL (s3://, gs://, az://, https://) read by the server through fsspec,
  with the pod's identity (a ServiceAccount) or credentials from a Secret;
- a volume (`--model-volume pvc:NAME[:SUBPATH]` or `nfs:SERVER:/PATH`) mounted read-only,
  `--model-repo pvc://NAME/PATH` being the same as `--model-volume pvc:NAME:PATH`;
- a path inside the image, only with `--model-in-image`: a bare path with nothing mounted
  there is refused, since the pod would start with an empty repository.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Any

from torchrig.errors import UsageError

MODEL_MOUNT = "/models"  # where a model volume is mounted when --model-repo names no path
VOLUME_NAME = "models"
# fsspec protocols the server can read, and the torchrig extra that brings each one's
# filesystem (the serve image installs torchrig[s3,gcs]; http(s) comes with s3fs's aiohttp)
URL_EXTRAS = {
    "s3": "s3",
    "gs": "gcs",
    "gcs": "gcs",
    "az": "azure",
    "abfs": "azure",
    "abfss": "azure",
    "http": "s3",
    "https": "s3",
}

# paths the pod uses for itself: a model volume must not hide them
RESERVED_PATHS = ("/tmp", "/dev", "/proc", "/sys", "/etc", "/usr", "/var/run", "/home/torchrig")
_URL = re.compile(r"^(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<rest>\S+)$")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
VOLUME_FORMS = "pvc:CLAIM[:SUBPATH] or nfs:SERVER:/PATH"


@dataclass(frozen=True)
class ModelStorage:
    """The repository as the server sees it, and the volume (if any) that provides it."""

    repo: str  # the `torchrig serve` argument: a URL or a path in the container
    kind: str  # "url", "volume" or "image"
    volume: tuple[tuple[str, Any], ...] = ()  # the volume source, e.g. persistentVolumeClaim
    sub_path: str = ""  # inside the volume
    scheme: str = ""  # of a URL

    @property
    def extra(self) -> str:
        """The torchrig extra that reads this URL ("" for a path)."""
        return URL_EXTRAS.get(self.scheme, "")

    def volume_source(self) -> dict[str, Any]:
        return {key: dict(value) for key, value in self.volume}

    def claim(self) -> str:
        """The PVC's name ("" when the volume is not a PVC)."""
        source = dict(self.volume).get("persistentVolumeClaim")
        return str(dict(source)["claimName"]) if source else ""

    def kserve_uri(self) -> str:
        """The storageUri KServe downloads or mounts for this storage, or a UsageError."""
        if self.kind == "url":
            return self.repo
        if self.claim():
            return f"pvc://{self.claim()}" + (f"/{self.sub_path}" if self.sub_path else "")
        if self.kind == "volume":
            raise UsageError(
                "KServe mounts only PVCs (pvc://) and downloads URLs: bind the NFS share to a "
                "PersistentVolumeClaim and give --model-volume pvc:CLAIM[:SUBPATH]"
            )
        raise UsageError(
            "KServe needs a storage URI: give --model-repo s3://..., gs://... or "
            "--model-volume pvc:CLAIM[:SUBPATH], not --model-in-image"
        )


def _check_sub_path(sub_path: str, given: str) -> str:
    clean = posixpath.normpath(sub_path) if sub_path else ""
    if sub_path and (sub_path.startswith("/") or clean.startswith("..") or clean == "."):
        raise UsageError(
            f"{given}: the path inside the volume {sub_path!r} must be relative and stay "
            "inside it, e.g. pvc:models-pvc:ranking"
        )
    return clean


def _check_claim(name: str, given: str) -> str:
    if not _NAME.match(name):
        raise UsageError(
            f"{given}: {name!r} is not a PersistentVolumeClaim name: use lower-case letters, "
            "digits, '-' and '.', e.g. pvc:models-pvc"
        )
    return name


def parse_model_volume(text: str) -> tuple[tuple[tuple[str, Any], ...], str]:
    """`pvc:CLAIM[:SUBPATH]` or `nfs:SERVER:/PATH` as (volume source, sub path)."""
    given = f"--model-volume {text!r}"
    kind, _, rest = text.partition(":")
    if kind == "pvc" and rest:
        claim, _, sub_path = rest.partition(":")
        source = {"claimName": _check_claim(claim, given), "readOnly": True}
        return (("persistentVolumeClaim", source),), _check_sub_path(sub_path, given)
    if kind == "nfs" and rest:
        server, _, path = rest.partition(":")
        if server and path.startswith("/"):
            return (("nfs", {"server": server, "path": path, "readOnly": True}),), ""
    raise UsageError(
        f"{given} is not a volume torchrig can mount: give {VOLUME_FORMS}, "
        "e.g. --model-volume pvc:models-pvc:ranking"
    )


def _check_mount_path(path: str) -> str:
    clean = posixpath.normpath(path)
    if clean == "/" or any(clean == p or clean.startswith(p + "/") for p in RESERVED_PATHS):
        raise UsageError(
            f"--model-repo {path} would mount the model volume over a path the pod needs: "
            f"mount it elsewhere, e.g. {MODEL_MOUNT}"
        )
    return clean


def model_storage(
    model_repo: str | None, model_volume: str | None = None, *, model_in_image: bool = False
) -> ModelStorage:
    """The storage the options describe, or a UsageError naming the option to use."""
    url = _URL.match(model_repo or "")
    if url and url["scheme"] == "pvc":
        if model_volume is not None:
            raise UsageError(
                "give the PVC once: --model-volume pvc:CLAIM[:SUBPATH] or --model-repo "
                "pvc://CLAIM/PATH, not both"
            )
        claim, _, sub_path = url["rest"].partition("/")
        return model_storage(MODEL_MOUNT, f"pvc:{claim}:{sub_path.strip('/')}".rstrip(":"))
    if url:
        if model_volume is not None or model_in_image:
            raise UsageError(
                f"--model-repo {model_repo} is a URL the server reads itself: drop "
                "--model-volume/--model-in-image, or give --model-repo as the path where "
                "the volume is mounted"
            )
        scheme = url["scheme"]
        if scheme not in URL_EXTRAS:
            raise UsageError(
                f"--model-repo {model_repo}: the server cannot read {scheme}:// repositories; "
                "use s3://, gs://, az:// or https://, or a volume (--model-volume "
                f"{VOLUME_FORMS})"
            )
        return ModelStorage(repo=str(model_repo), kind="url", scheme=scheme)
    if model_repo is not None and (not model_repo.startswith("/") or " " in model_repo):
        raise UsageError(
            f"--model-repo {model_repo!r} is neither a URL nor an absolute path: give the "
            "repository as the pod sees it, e.g. s3://models/ranking, or mount a volume with "
            f"--model-volume {VOLUME_FORMS}"
        )
    if model_volume is not None:
        if model_in_image:
            raise UsageError("give --model-volume or --model-in-image, not both")
        volume, sub_path = parse_model_volume(model_volume)
        path = _check_mount_path(model_repo or MODEL_MOUNT)
        return ModelStorage(repo=path, kind="volume", volume=volume, sub_path=sub_path)
    if model_repo is None:
        raise UsageError(
            "give the model repository: --model-repo s3://bucket/repo (gs://, az://, "
            f"https://) or --model-volume {VOLUME_FORMS}"
        )
    if not model_in_image:
        raise UsageError(
            f"--model-repo {model_repo} is a path, but nothing is mounted there, so the pod "
            f"would serve an empty repository: give --model-volume {VOLUME_FORMS} (mounted "
            f"read-only at {model_repo}), an object store URL such as s3://bucket/repo, or "
            "--model-in-image if the image holds the models at that path"
        )
    return ModelStorage(repo=model_repo, kind="image")
