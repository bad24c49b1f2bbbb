"""The installed Python distributions, as the interpreter would import them."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from importlib import metadata
from urllib.parse import urlsplit, urlunsplit

from packaging.utils import canonicalize_name

from torchrig.envlock.model import Distribution

# installers that, without a direct_url.json, got the distribution from a package index
INDEX_INSTALLERS = frozenset({"pip", "uv", "poetry", "pdm"})


def _strip_credentials(url: str) -> str | None:
    """The URL without user:password@ and without its query (pre-signed URLs carry tokens
    there); None when it cannot be parsed. Index tokens must never reach a lock."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", parts.fragment))


def _direct_url(dist: metadata.Distribution) -> tuple[str | None, str | None, str | None]:
    """(source, url, hash) from PEP 610's direct_url.json; all None for an index install."""
    text = dist.read_text("direct_url.json")
    if not text:
        return None, None, None
    try:
        info = json.loads(text)
    except ValueError:
        return None, None, None
    if not isinstance(info, dict):
        return None, None, None
    url = info.get("url")
    url = _strip_credentials(url) if isinstance(url, str) else None
    if isinstance(info.get("vcs_info"), dict):
        commit = info["vcs_info"].get("commit_id")
        return "vcs", url, f"commit={commit}" if commit else None
    dir_info = info.get("dir_info")
    if isinstance(dir_info, dict):
        return ("editable" if dir_info.get("editable") else "file"), url, None
    archive = info.get("archive_info")
    digest: str | None = None
    if isinstance(archive, dict):
        hashes = archive.get("hashes")
        if isinstance(hashes, dict) and hashes:
            algo = "sha256" if "sha256" in hashes else sorted(hashes)[0]
            digest = f"{algo}={hashes[algo]}"
        elif isinstance(archive.get("hash"), str):
            digest = archive["hash"]
    source = "file" if url and url.startswith("file:") else "url"
    return source, url, digest


def collect_packages(path: Iterable[str] | None = None) -> list[Distribution]:
    """Every distribution on `path` (default sys.path), the first one of each name winning,
    as the import system would pick it; sorted by canonical name."""
    seen: dict[str, Distribution] = {}
    for dist in metadata.distributions(path=list(sys.path if path is None else path)):
        raw_name = dist.metadata["Name"] if dist.metadata else None
        if not raw_name:
            continue  # a broken dist-info without metadata
        name = canonicalize_name(raw_name)
        if name in seen:
            continue
        source, url, digest = _direct_url(dist)
        installer = (dist.read_text("INSTALLER") or "").strip() or None
        if source is None and url is None and installer in INDEX_INSTALLERS:
            source = "index"
        seen[name] = Distribution(
            name=name,
            version=dist.version,
            installer=installer,
            requested=dist.read_text("REQUESTED") is not None,
            source=source,  # type: ignore[arg-type]
            url=url,
            hash=digest,
        )
    return [seen[name] for name in sorted(seen)]
