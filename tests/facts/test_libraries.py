"""Which CUDA-stack libraries are mapped, parsed from real /proc/<pid>/maps text."""

from __future__ import annotations

from pathlib import Path

import pytest

from torchrig.facts.libraries import (
    find_library_candidates,
    is_from_wheel,
    library_family,
    parse_maps,
    read_loaded_libraries,
)

SITE = "/opt/venv/lib/python3.11/site-packages"

# /proc/self/maps of an imagined GPU box where a system cuDNN 8 on LD_LIBRARY_PATH was
# loaded next to the wheel's cuDNN 9: the shadowing the doctor must name.
GPU_BOX_MAPS = f"""\
55d0c6a00000-55d0c6a2c000 r--p 00000000 fd:01 1835025                    /usr/bin/python3.11
55d0c8f4e000-55d0c9130000 rw-p 00000000 00:00 0                          [heap]
7f1c40000000-7f1c40021000 rw-p 00000000 00:00 0
7f1c52a00000-7f1c52c00000 r--p 00000000 fd:01 2621571                    /usr/local/cuda/lib64/libcudnn.so.8
7f1c52c00000-7f1c53000000 r-xp 00200000 fd:01 2621571                    /usr/local/cuda/lib64/libcudnn.so.8
7f1c60000000-7f1c60400000 r--p 00000000 fd:01 3145801                    {SITE}/nvidia/cudnn/lib/libcudnn.so.9
7f1c60400000-7f1c60800000 r-xp 00400000 fd:01 3145801                    {SITE}/nvidia/cudnn/lib/libcudnn.so.9
7f1c61000000-7f1c61400000 r-xp 00000000 fd:01 3145802                    {SITE}/nvidia/cudnn/lib/libcudnn_graph.so.9
7f1c62000000-7f1c62400000 r-xp 00000000 fd:01 3145900                    {SITE}/nvidia/nccl/lib/libnccl.so.2
7f1c63000000-7f1c63400000 r-xp 00000000 fd:01 3145950                    {SITE}/nvidia/cublas/lib/libcublasLt.so.12
7f1c63400000-7f1c63800000 r-xp 00000000 fd:01 3145951                    {SITE}/nvidia/cublas/lib/libcublas.so.12
7f1c64000000-7f1c64400000 r-xp 00000000 fd:01 3146000                    {SITE}/nvidia/cuda_runtime/lib/libcudart.so.12
7f1c65000000-7f1c65400000 r-xp 00000000 fd:01 2621600                    /usr/lib/x86_64-linux-gnu/libcuda.so.570.86.15
7f1c66000000-7f1c66400000 r-xp 00000000 fd:01 2621700                    /usr/local/cuda-12.4/lib64/libnvJitLink.so.12.4.127 (deleted)
7f1c67000000-7f1c67400000 r-xp 00000000 fd:01 3146100                    {SITE}/torch/lib/libtorch_cuda.so
7f1c68000000-7f1c68100000 r-xp 00000000 fd:01 3146101                    {SITE}/torch/lib/libnvToolsExt-847d78f2.so.1
7f1c69000000-7f1c69100000 r-xp 00000000 fd:01 1835100                    /usr/lib/x86_64-linux-gnu/libc.so.6
7ffd5a1e0000-7ffd5a201000 rw-p 00000000 00:00 0                          [stack]
"""  # noqa: E501


def test_parse_maps_finds_both_cudnns_and_where_they_come_from() -> None:
    libraries = parse_maps(GPU_BOX_MAPS)

    cudnn = [(lib.path, lib.version, lib.from_wheel) for lib in libraries if lib.name == "libcudnn"]
    assert cudnn == [
        ("/usr/local/cuda/lib64/libcudnn.so.8", "8", False),
        (f"{SITE}/nvidia/cudnn/lib/libcudnn.so.9", "9", True),
        (f"{SITE}/nvidia/cudnn/lib/libcudnn_graph.so.9", "9", True),
    ]


def test_parse_maps_lists_each_file_once_and_skips_non_cuda_mappings() -> None:
    names = [(lib.name, lib.version) for lib in parse_maps(GPU_BOX_MAPS)]

    assert names == [
        ("libcudnn", "8"),
        ("libcudnn", "9"),
        ("libcudnn", "9"),
        ("libnccl", "2"),
        ("libcublasLt", "12"),
        ("libcublas", "12"),
        ("libcudart", "12"),
        ("libcuda", "570.86.15"),
        ("libnvJitLink", "12.4.127"),
        ("libnvToolsExt", "1"),
    ]


def test_deleted_files_keep_their_path_without_the_marker() -> None:
    (jitlink,) = [lib for lib in parse_maps(GPU_BOX_MAPS) if lib.name == "libnvJitLink"]

    assert jitlink.path == "/usr/local/cuda-12.4/lib64/libnvJitLink.so.12.4.127"
    assert not jitlink.from_wheel


def test_read_loaded_libraries_reads_a_maps_file(tmp_path: Path) -> None:
    maps = tmp_path / "maps"
    maps.write_text(GPU_BOX_MAPS)

    assert read_loaded_libraries(maps) == parse_maps(GPU_BOX_MAPS)
    assert read_loaded_libraries(tmp_path / "missing") == []


def test_this_process_maps_no_cuda_library_with_a_cpu_torch() -> None:
    import torch

    if torch.version.cuda is not None:
        pytest.skip("this torch is a CUDA build: tests/facts/test_gpu.py covers it")
    assert Path("/proc/self/maps").is_file()
    assert read_loaded_libraries() == []


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("libcudnn.so.9.10.2", ("libcudnn", "9.10.2")),
        ("libcudnn.so.9", ("libcudnn", "9")),
        ("libcudnn_engines_precompiled.so.9", ("libcudnn", "9")),
        ("libcublasLt.so.12", ("libcublasLt", "12")),
        ("libcusparseLt.so.0", ("libcusparseLt", "0")),
        ("libcuda.so", ("libcuda", None)),
        ("libnvrtc-builtins.so.12.8", ("libnvrtc", "12.8")),
        ("libnccl.so.2.27.5", ("libnccl", "2.27.5")),
        ("libcudart_static.a", None),
        ("libtorch_cuda.so", None),
        ("libcufftw.so.11", None),
        ("libc.so.6", None),
    ],
)
def test_library_family(filename: str, expected: tuple[str, str | None] | None) -> None:
    assert library_family(filename) == expected


def test_is_from_wheel() -> None:
    assert is_from_wheel(f"{SITE}/torch/lib/libtorch_cuda.so")
    assert is_from_wheel("/usr/lib/python3/dist-packages/nvidia/nccl/lib/libnccl.so.2")
    assert not is_from_wheel("/usr/local/cuda/lib64/libcublas.so.12")


def test_candidates_are_cuda_libraries_directly_in_ld_library_path_dirs(tmp_path: Path) -> None:
    cuda = tmp_path / "cuda" / "lib64"
    (cuda / "stubs").mkdir(parents=True)
    for name in ("libcudnn.so.8", "libcublasLt.so.12", "libfoo.so.1", "README"):
        (cuda / name).write_bytes(b"")
    (cuda / "stubs" / "libcuda.so").write_bytes(b"")  # not searched: not recursive
    other = tmp_path / "other"
    other.mkdir()
    (other / "libnccl.so.2").write_bytes(b"")
    ld_library_path = f"{cuda}::{tmp_path / 'missing'}:{other}:{cuda}"

    candidates = find_library_candidates({"LD_LIBRARY_PATH": ld_library_path})

    assert [(c.name, c.path, c.ld_library_path_entry) for c in candidates] == [
        ("libcublasLt", str(cuda / "libcublasLt.so.12"), str(cuda)),
        ("libcudnn", str(cuda / "libcudnn.so.8"), str(cuda)),
        ("libnccl", str(other / "libnccl.so.2"), str(other)),
    ]


def test_no_ld_library_path_no_candidates() -> None:
    assert find_library_candidates({}) == []
