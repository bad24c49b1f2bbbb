"""The requirement set of each image resolves for real against the reachable index.

The torch CUDA indexes are not reachable from the build machines; PyPI (and its
mirror) is. Where the index cannot be reached, the resolving tests skip and say so:
that is the only reason they may skip.
"""

from __future__ import annotations

import functools
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from torchrig import __version__
from torchrig.errors import UsageError
from torchrig.image.lock import IndexUnreachableError, parse_constraints, resolve
from torchrig.image.spec import resolve_spec

UNREACHABLE = "http://127.0.0.1:9/simple"  # the discard port: nothing listens there
# the requirement sets the tests below lock: (torch, cuda, flavour, python)
LOCKED = [("2.9.1", "12.8", flavour, "3.12") for flavour in ("runtime", "dev", "serve")] + [
    ("2.9.1", "12.6", "runtime", "3.10")
]
# one worker runs this module, so that the sets above resolve once, side by side
pytestmark = pytest.mark.xdist_group("image-lock")


def _resolve(torch: str, cuda: str, flavour: str, python: str) -> str:
    return resolve(resolve_spec(torch=torch, cuda=cuda, flavour=flavour, python=python))


@functools.cache
def _resolving() -> dict[tuple[str, str, str, str], Future[str]]:
    """Every set of LOCKED resolving at once: each waits on the index for most of its
    15-20 s, so four in a row would take a minute."""
    pool = ThreadPoolExecutor(len(LOCKED), thread_name_prefix="lock")
    return {key: pool.submit(_resolve, *key) for key in LOCKED}


def _locked(torch: str, cuda: str, flavour: str, python: str) -> str:
    try:
        return _resolving()[(torch, cuda, flavour, python)].result()
    except IndexUnreachableError as exc:
        pytest.skip(f"package index unreachable, requirement set not resolved: {exc.message}")


@pytest.mark.parametrize("flavour", ["runtime", "dev", "serve"])
def test_each_flavour_resolves_on_pypi_variant(flavour: str) -> None:
    text = _locked("2.9.1", "12.8", flavour, "3.12")
    pins = parse_constraints(text)  # every line name==version, or it raises
    assert pins["torch"] == "2.9.1"  # PyPI's wheel is the cu128 build: no local label
    assert "numpy" in pins
    assert "sympy" in pins
    assert "setuptools" in pins
    assert pins["nvidia-cudnn-cu12"].startswith("9.10.")  # PyPI's 2.9.1 wheel is the cu128 build
    if flavour == "dev":
        assert {"jupyterlab", "jupyter-server", "ipykernel"} <= set(pins)
    if flavour == "serve":
        assert pins["torchrig"] == __version__
        assert {"click", "rich", "msgspec", "nvidia-ml-py", "packaging"} <= set(pins)
    assert "tomli" not in pins  # markers are evaluated for Python 3.12, not the running one


def test_other_variant_leaves_cuda_packages_to_torchs_exact_pins() -> None:
    text = _locked("2.9.1", "12.6", "runtime", "3.10")
    pins = parse_constraints(text)
    assert pins["torch"] == "2.9.1+cu126"
    assert not [name for name in pins if name.startswith(("nvidia-", "triton", "cuda-"))]
    assert "pinned exactly by torch==2.9.1+cu126 itself" in text
    assert "setuptools" not in pins  # torch needs setuptools only from Python 3.12


@pytest.mark.parametrize("pip_retries", ["1", "0"])
def test_unreachable_index_is_reported_not_resolved(
    monkeypatch: pytest.MonkeyPatch, pip_retries: str
) -> None:
    # one refused connection says it: not uv's 3 and pip's 5 retries with back-off (20 s).
    # With retries left pip warns of the refused connection; with none (PIP_RETRIES=0) it
    # says only "from versions: none", and its verbose rerun tells the two apart
    monkeypatch.setenv("UV_HTTP_RETRIES", "0")
    monkeypatch.setenv("PIP_RETRIES", pip_retries)
    spec = resolve_spec(torch="2.9.1", cuda="12.8")
    with pytest.raises(IndexUnreachableError, match="package index is unreachable"):
        resolve(spec, index_url=UNREACHABLE)
    running = f"{sys.version_info[0]}.{sys.version_info[1]}"
    same_python = resolve_spec(torch="2.9.1", cuda="12.8", python=running)
    with pytest.raises(IndexUnreachableError, match="pip install --dry-run"):
        resolve(same_python, index_url=UNREACHABLE, resolver="pip")


def test_an_index_without_the_package_is_not_called_unreachable(tmp_path: Path) -> None:
    """The other "from versions: none": a reachable index (here an empty local one) that
    lacks the package does not resolve; it is not reported as unreachable."""
    index = tmp_path / "simple"
    index.mkdir()
    running = f"{sys.version_info[0]}.{sys.version_info[1]}"
    spec = resolve_spec(torch="2.9.1", cuda="12.8", python=running)
    with pytest.raises(UsageError, match="does not resolve") as refused:
        resolve(spec, index_url=index.as_uri(), resolver="pip")
    assert not isinstance(refused.value, IndexUnreachableError)
    assert "from versions: none" in refused.value.message


def test_pip_cannot_lock_for_another_python() -> None:
    other = "3.13" if sys.version_info[:2] != (3, 13) else "3.12"
    spec = resolve_spec(torch="2.9.1", cuda="12.8", python=other)
    with pytest.raises(UsageError, match="pip evaluates environment markers"):
        resolve(spec, resolver="pip")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("torch>=2.9\n", "is not an exact pin"),
        ("-r other.txt\n", "is not an exact pin"),
        ("numpy==1.0\nNumPy==1.0\n", "pinned twice"),
        ("git+https://example.com/x.git\n", "is not an exact pin"),
    ],
)
def test_parse_constraints_rejects_anything_but_pins(text: str, needle: str) -> None:
    with pytest.raises(UsageError, match=needle):
        parse_constraints(text)
