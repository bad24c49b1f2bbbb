"""The torch build as it describes itself: this machine's CPU wheel, and parsers fed real text."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
import torch

from torchrig.facts.torch_build import (
    encode_cudnn_version,
    format_nccl_version,
    parse_build_flags,
    read_torch,
)

# `torch.__config__.show()` of a CUDA 12.6 source build (JetPack, torch 2.10), verbatim
# apart from the compiler flags, shortened.
CUDA_BUILD_CONFIG = """\
PyTorch built with:
  - GCC 11.4
  - C++ Version: 201703
  - OpenMP 201511 (a.k.a. OpenMP 4.5)
  - CUDA Runtime 12.6
  - NVCC architecture flags: -gencode;arch=compute_87,code=sm_87
  - CuDNN 90.3
  - Build settings: BLAS_INFO=open, BUILD_TYPE=Release, COMMIT_SHA=449b1768410104d3ed79d3bcfe4ba1d65c7f22c0, CUDA_VERSION=12.6, CUDNN_VERSION=9.3.0, CXX_COMPILER=/usr/bin/c++, CXX_FLAGS= -ffunction-sections -fdata-sections -DUSE_PTHREADPOOL -O2 -fPIC -Wall -Wextra, FORCE_FALLBACK_CUDA_MPI=1, LAPACK_INFO=open, TORCH_VERSION=2.10.0, USE_CUDA=1, USE_CUDNN=1, USE_CUSPARSELT=ON, USE_EIGEN_FOR_BLAS=ON, USE_GFLAGS=OFF, USE_GLOG=OFF, USE_GLOO=ON, USE_MKL=OFF, USE_MKLDNN=0, USE_MPI=ON, USE_NCCL=1, USE_NNPACK=ON, USE_OPENMP=ON, USE_ROCM=OFF, USE_ROCM_KERNEL_ASSERT=OFF, USE_XCCL=OFF, USE_XPU=OFF
"""  # noqa: E501


def test_parse_build_flags_of_a_cuda_build() -> None:
    flags = parse_build_flags(CUDA_BUILD_CONFIG)

    assert flags == {
        "BUILD_TYPE": "Release",
        "CUDA_VERSION": "12.6",
        "CUDNN_VERSION": "9.3.0",
        "TORCH_VERSION": "2.10.0",
        "USE_CUDA": "1",
        "USE_CUDNN": "1",
        "USE_CUSPARSELT": "ON",
        "USE_GLOO": "ON",
        "USE_MKLDNN": "0",
        "USE_MPI": "ON",
        "USE_NCCL": "1",
        "USE_OPENMP": "ON",
        "USE_ROCM": "OFF",
    }


def test_parse_build_flags_of_this_build() -> None:
    flags = parse_build_flags(torch.__config__.show())

    assert flags["TORCH_VERSION"] == torch.__version__.split("+")[0]
    assert flags["BUILD_TYPE"] in {"Release", "Debug", "RelWithDebInfo"}
    assert "USE_CUDA" in flags
    assert all("," not in value for value in flags.values())


def test_parse_build_flags_without_settings_line() -> None:
    assert parse_build_flags("PyTorch built with:\n  - GCC 13.3\n") == {}


@pytest.mark.parametrize(
    ("version", "encoded"),
    [((9, 10, 2), 91002), ((9, 1, 0), 90100), ((8, 9, 7), 8907), ((9, 20, 0), 92000)],
)
def test_encode_cudnn_version(version: tuple[int, int, int], encoded: int) -> None:
    assert encode_cudnn_version(*version) == encoded


@pytest.mark.parametrize(
    ("raw", "text"),
    [((2, 27, 5), "2.27.5"), ((2, 21, 5, "+cuda12.1"), "2.21.5.+cuda12.1"), (22705, "2.27.5")],
)
def test_format_nccl_version(raw: object, text: str) -> None:
    assert format_nccl_version(raw) == text


def test_format_nccl_version_old_integer_encoding() -> None:
    assert format_nccl_version(2708) == "2.7.8"
    assert format_nccl_version("2.27.5") is None


def test_read_torch_describes_the_installed_build() -> None:
    facts, error = read_torch()

    assert error is None
    assert facts is not None
    assert facts.version == torch.__version__
    assert facts.location == os.path.dirname(torch.__file__)
    assert facts.cuda == torch.version.cuda
    assert facts.git_version == torch.version.git_version
    assert facts.cxx11_abi is not None
    assert facts.num_threads == torch.get_num_threads()
    assert facts.device_count == torch.cuda.device_count()
    assert facts.build_flags["TORCH_VERSION"] == torch.__version__.split("+")[0]


def test_read_torch_on_a_cpu_build() -> None:
    if torch.version.cuda is not None:
        pytest.skip("this torch is a CUDA build: tests/facts/test_gpu.py covers it")
    facts, _ = read_torch()

    assert facts is not None
    assert (facts.cuda, facts.hip) == (None, None)
    assert facts.cuda_available is False
    assert facts.cuda_init_error is None  # not attempted on a CPU build
    assert facts.arch_list == []
    assert (facts.cudnn_version, facts.cudnn_compile_version, facts.nccl_version) == (
        None,
        None,
        None,
    )


def test_missing_torch_is_a_reason_not_an_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # what `import torch` sees uninstalled

    assert read_torch() == (None, "torch is not installed")


def test_a_broken_torch_install_is_recorded(tmp_path: Path) -> None:
    # A torch whose import fails the way a wheel with a missing CUDA library does.
    fake = tmp_path / "torch"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "raise OSError('libcudnn.so.9: cannot open shared object file: No such file')\n"
    )
    script = (
        "import sys\n"
        "from torchrig.facts import collect_snapshot\n"
        "from torchrig.facts.model import snapshot_to_json\n"
        "sys.stdout.buffer.write(snapshot_to_json(collect_snapshot()))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}

    completed = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, check=True, timeout=120
    )

    snapshot = msgspec.json.decode(completed.stdout)
    assert snapshot["torch"] is None
    assert snapshot["torch_error"] == (
        "importing torch failed: OSError: libcudnn.so.9: cannot open shared object file: "
        "No such file"
    )
    assert snapshot["python"]["version"]
