"""Which CUDA-stack shared libraries are really loaded, and which could shadow them.

A system cuDNN or nvJitLink on LD_LIBRARY_PATH that wins over the wheel's own copy
causes "cuDNN version incompatibility" and `undefined symbol: __nvJitLinkComplete_12_4`.
/proc/self/maps shows the files the dynamic loader actually mapped, so it is read
after torch was imported and cuDNN/NCCL were loaded.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from torchrig.facts._files import read_text
from torchrig.facts.model import CandidateLibrary, LoadedLibrary

PROC_SELF_MAPS = Path("/proc/self/maps")

# The libraries of the CUDA stack, by family. Sub-libraries and companions are folded
# into the family they are versioned with (libcudnn_graph -> libcudnn).
LIBRARY_FAMILIES: tuple[str, ...] = (
    "libcudnn",
    "libnccl",
    "libcublas",
    "libcublasLt",
    "libnvJitLink",
    "libcudart",
    "libcuda",
    "libcusparse",
    "libcusparseLt",
    "libcufft",
    "libcurand",
    "libcusolver",
    "libnvrtc",
    "libcupti",
    "libnvToolsExt",
)
_FOLDED_PREFIXES = (("libcudnn_", "libcudnn"), ("libnvrtc-builtins", "libnvrtc"))

# stem, an optional auditwheel hash ("libnvToolsExt-847d78f2.so.1"), ".so", version.
_LIBRARY_FILE = re.compile(
    r"^(?P<stem>lib[A-Za-z0-9_]+(?:-builtins)?)(?:-[0-9a-f]{8})?\.so(?:\.(?P<version>\d+(?:\.\d+)*))?$"
)
_WHEEL_DIRS = frozenset({"site-packages", "dist-packages"})


def library_family(filename: str) -> tuple[str, str | None] | None:
    """`(family, version)` for a CUDA-stack library file name, else None.

    "libcudnn.so.9.10.2" -> ("libcudnn", "9.10.2"); "libcudnn_ops.so.9" -> ("libcudnn", "9");
    "libcuda.so" -> ("libcuda", None); "libcudart_static.a" -> None.
    """
    match = _LIBRARY_FILE.match(filename)
    if match is None:
        return None
    stem = match.group("stem")
    family = stem if stem in LIBRARY_FAMILIES else None
    for prefix, folded in _FOLDED_PREFIXES:
        if stem.startswith(prefix):
            family = folded
    if family is None:
        return None
    return family, match.group("version")


def is_from_wheel(path: str) -> bool:
    """Whether a library lies inside a Python environment (nvidia/*/lib, torch/lib)."""
    return not _WHEEL_DIRS.isdisjoint(PurePosixPath(path).parts)


def parse_maps(text: str) -> list[LoadedLibrary]:
    """The CUDA-stack libraries named in the text of a /proc/<pid>/maps file.

    Each file is listed once (the kernel already shows the resolved path of a mapping),
    in the order it first appears.
    """
    seen: set[str] = set()
    libraries: list[LoadedLibrary] = []
    for line in text.splitlines():
        # address perms offset dev inode pathname; the path may contain spaces.
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or not fields[5].startswith("/"):
            continue
        path = fields[5].removesuffix(" (deleted)")
        if path in seen:
            continue
        found = library_family(PurePosixPath(path).name)
        if found is None:
            continue
        seen.add(path)
        libraries.append(
            LoadedLibrary(
                name=found[0], path=path, version=found[1], from_wheel=is_from_wheel(path)
            )
        )
    return libraries


def read_loaded_libraries(maps: Path = PROC_SELF_MAPS) -> list[LoadedLibrary]:
    """CUDA-stack libraries mapped into this process; empty without /proc (not Linux)."""
    text = read_text(maps)
    return [] if text is None else parse_maps(text)


def find_library_candidates(environ: Mapping[str, str]) -> list[CandidateLibrary]:
    """CUDA-stack library files directly inside each LD_LIBRARY_PATH directory."""
    candidates: list[CandidateLibrary] = []
    seen: set[str] = set()
    for entry in environ.get("LD_LIBRARY_PATH", "").split(os.pathsep):
        if not entry or entry in seen:
            continue
        seen.add(entry)
        try:
            names = sorted(item.name for item in os.scandir(entry))
        except OSError:  # a stale entry: missing or unreadable directory
            continue
        for name in names:
            found = library_family(name)
            if found is not None:
                candidates.append(
                    CandidateLibrary(
                        name=found[0], path=os.path.join(entry, name), ld_library_path_entry=entry
                    )
                )
    return candidates
