"""Real locks from two real virtual environments that differ in one distribution.

Two wheels of a tiny distribution (1.0.0 and 2.0.0) are built here, pip installs one into
each of two fresh venvs, and `torchrig env snapshot` runs inside each; torch and torchrig
come from this environment through a `.pth` file, after each venv's own site-packages.
The locks are then diffed and checked by real processes. Also here: secrets in the process
environment and credentials in direct_url.json never reach a lock.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import site
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest

import torchrig
from torchrig.envlock.packages import collect_packages

PROBE = "torchrig-drift-probe"
PROBE_MODULE = "torchrig_drift_probe"
PROBE_KEY = f"packages.{PROBE}"
VERSION_A, VERSION_B = "1.0.0", "2.0.0"
TIMEOUT_S = 120


def _record_digest(data: bytes) -> str:
    """A RECORD hash: urlsafe base64 of the sha256, without padding (PEP 376/427)."""
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_wheel(directory: Path, version: str) -> Path:
    """A valid pure-Python wheel of the probe distribution, written byte by byte."""
    dist_info = f"{PROBE_MODULE}-{version}.dist-info"
    files = {
        f"{PROBE_MODULE}/__init__.py": f'__version__ = "{version}"\n'.encode(),
        f"{dist_info}/METADATA": (
            f"Metadata-Version: 2.1\nName: {PROBE}\nVersion: {version}\n"
            "Summary: torchrig test probe\n"
        ).encode(),
        f"{dist_info}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: torchrig-tests\nRoot-Is-Purelib: true\n"
            b"Tag: py3-none-any\n"
        ),
    }
    record = [f"{name},{_record_digest(data)},{len(data)}" for name, data in files.items()]
    record.append(f"{dist_info}/RECORD,,")
    wheel = directory / f"{PROBE_MODULE}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        archive.writestr(f"{dist_info}/RECORD", "\n".join(record) + "\n")
    return wheel


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment without anything that would steer the child's sys.path
    or torchrig settings."""
    dropped = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("TORCHRIG_") and k not in dropped
    }
    env.update(extra)
    return env


def run(
    python: Path | str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), *args],
        capture_output=True,
        text=True,
        env=child_env() if env is None else env,
        timeout=TIMEOUT_S,
        check=False,
    )


def torchrig_cli(python: Path | str, *args: str) -> subprocess.CompletedProcess[str]:
    return run(python, "-m", "torchrig", *args)


def outer_import_paths() -> list[str]:
    """Where this interpreter finds torch, torchrig's dependencies and torchrig itself."""
    candidates = [
        sysconfig.get_path("purelib"),
        sysconfig.get_path("platlib"),
        *site.getsitepackages(),
        str(Path(torchrig.__file__).resolve().parent.parent),  # src/ of an editable install
    ]
    return list(dict.fromkeys(candidates))


@dataclass(frozen=True)
class ProbeVenv:
    """A venv holding one version of the probe; `lock` is its `env snapshot`."""

    version: str
    python: Path
    wheel: Path
    lock: Path


def make_venv(root: Path, wheel: Path, version: str) -> ProbeVenv:
    created = run(sys.executable, "-m", "venv", "--without-pip", str(root))
    assert created.returncode == 0, created.stderr
    python = root / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    installed = run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        str(python),
        "install",
        "--no-index",
        "--no-deps",
        "--no-cache-dir",
        "--disable-pip-version-check",
        "--quiet",
        str(wheel),
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    purelib = run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))")
    assert purelib.returncode == 0, purelib.stderr
    # .pth entries go after the venv's own site-packages: its probe wins, torch comes from here
    pth = Path(purelib.stdout.strip()) / "torchrig-outer-environment.pth"
    pth.write_text("\n".join(outer_import_paths()) + "\n")
    lock = root.parent / f"lock-{version}.json"
    taken = torchrig_cli(python, "env", "snapshot", "-o", str(lock))
    assert taken.returncode == 0, taken.stdout + taken.stderr
    return ProbeVenv(version=version, python=python, wheel=wheel, lock=lock)


@pytest.fixture(scope="module")
def venvs(tmp_path_factory: pytest.TempPathFactory) -> tuple[ProbeVenv, ProbeVenv]:
    wheels = tmp_path_factory.mktemp("wheels")
    a, b = (
        make_venv(tmp_path_factory.mktemp(f"venv-{v}") / "venv", build_wheel(wheels, v), v)
        for v in (VERSION_A, VERSION_B)
    )
    return a, b


def probe_of(lock: dict[str, Any]) -> dict[str, Any]:
    found: list[dict[str, Any]] = [p for p in lock["packages"] if p["name"] == PROBE]
    assert len(found) == 1, [p["name"] for p in lock["packages"]]
    return found[0]


def by_key(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["key"]: d for d in report["differences"]}


def test_each_lock_records_the_wheel_pip_installed(venvs: tuple[ProbeVenv, ProbeVenv]) -> None:
    for venv in venvs:
        lock = json.loads(venv.lock.read_text())
        probe = probe_of(lock)
        wheel_sha256 = hashlib.sha256(venv.wheel.read_bytes()).hexdigest()
        assert probe["version"] == venv.version
        assert probe["source"] == "file"
        assert probe["hash"] == f"sha256={wheel_sha256}"
        assert probe["url"] == venv.wheel.as_uri()
        assert probe["installer"] == "pip"
        assert probe["requested"] is True
        assert lock["snapshot"]["python"]["executable"] == str(venv.python)
        # torch and torchrig were imported inside the venv, through the .pth file
        assert lock["snapshot"]["torch"]["version"]
        assert {"torch", "torchrig", "msgspec"} <= {p["name"] for p in lock["packages"]}


def test_diff_reports_the_version_change_as_info(venvs: tuple[ProbeVenv, ProbeVenv]) -> None:
    a, b = venvs
    proc = torchrig_cli(sys.executable, "env", "diff", str(a.lock), str(b.lock), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert (report["breaking"], report["risky"]) == (0, 0), report["differences"]
    diffs = by_key(report)
    probe = diffs[PROBE_KEY]
    assert (probe["severity"], probe["a"], probe["b"]) == ("info", VERSION_A, VERSION_B)
    executable = diffs["python.executable"]
    assert (executable["severity"], executable["a"], executable["b"]) == (
        "info",
        str(a.python),
        str(b.python),
    )
    # the probe is the only distribution that differs: both see the same torch and deps
    assert [k for k in diffs if k.startswith("packages.")] == [PROBE_KEY]


@pytest.mark.parametrize("spelling", [PROBE, "numpy,Torchrig_Drift.Probe"])
def test_a_model_dependency_change_is_risky_not_breaking(
    venvs: tuple[ProbeVenv, ProbeVenv], spelling: str
) -> None:
    a, b = venvs
    proc = torchrig_cli(
        sys.executable, "env", "diff", str(a.lock), str(b.lock), "--json", "--model-deps", spelling
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["breaking"] == 0
    risky = [d for d in report["differences"] if d["severity"] == "risky"]
    assert [(d["key"], d["a"], d["b"]) for d in risky] == [(PROBE_KEY, VERSION_A, VERSION_B)]
    assert risky[0]["consequence"]
    assert report["differences"][0] == risky[0]  # risky before info


def test_human_diff_names_the_distribution(venvs: tuple[ProbeVenv, ProbeVenv]) -> None:
    a, b = venvs
    proc = torchrig_cli(sys.executable, "env", "diff", str(a.lock), str(b.lock))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{PROBE} changed: {VERSION_A} → {VERSION_B}" in proc.stdout
    assert "no breaking or risky drift" in proc.stdout


def test_check_in_venv_b_against_lock_a(venvs: tuple[ProbeVenv, ProbeVenv]) -> None:
    a, b = venvs
    plain = torchrig_cli(b.python, "env", "check", str(a.lock), "--json")
    assert plain.returncode == 0, plain.stdout + plain.stderr
    report = json.loads(plain.stdout)
    assert (report["breaking"], report["risky"]) == (0, 0), report["differences"]
    assert by_key(report)[PROBE_KEY]["b"] == VERSION_B  # B is the running venv

    strict = torchrig_cli(
        b.python, "env", "check", str(a.lock), "--json", "--strict", "--model-deps", PROBE
    )
    assert strict.returncode == 1, strict.stdout + strict.stderr
    report = json.loads(strict.stdout)
    risky = [d["key"] for d in report["differences"] if d["severity"] == "risky"]
    assert (report["breaking"], risky) == (0, [PROBE_KEY])


# Names that look like secrets, prefixed NCCL_ ones included (NCCL_ variables are kept).
SECRETS = {
    "AWS_SECRET_ACCESS_KEY": "trsecret-aws-4b1f9e",
    "HF_TOKEN": "trsecret-hf-77c2d0",
    "NCCL_IB_KEY": "trsecret-ibkey-19aa3c",
    "NCCL_PLUGIN_TOKEN": "trsecret-plugin-5e0d71",
    "NCCL_NET_PASSWORD": "trsecret-pw-c3a9b2",
    "NCCL_PROXY_CREDENTIALS": "trsecret-cred-0f6e48",
}


def test_secrets_in_the_environment_never_reach_a_lock() -> None:
    env = child_env(**SECRETS, NCCL_DEBUG="WARN")
    proc = run(sys.executable, "-m", "torchrig", "env", "snapshot", env=env)
    assert proc.returncode == 0, proc.stderr
    lock = json.loads(proc.stdout)
    assert lock["snapshot"]["env"]["NCCL_DEBUG"] == "WARN"  # the environment is recorded
    output = proc.stdout + proc.stderr
    leaked = [text for pair in SECRETS.items() for text in pair if text in output]
    assert leaked == []


def write_dist_info(root: Path, name: str, direct_url: dict[str, Any]) -> None:
    dist_info = root / f"{name}-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (dist_info / "INSTALLER").write_text("pip\n")
    (dist_info / "direct_url.json").write_text(json.dumps(direct_url))


ARCHIVE = {"archive_info": {"hashes": {"sha256": "ab" * 32}}}


@pytest.mark.parametrize(
    ("direct_url", "expected"),
    [
        (
            {"url": "https://user:s3cr3t@host/pkg.whl", **ARCHIVE},
            ("url", "https://host/pkg.whl", f"sha256={'ab' * 32}"),
        ),
        (
            {"url": "https://user:s3cr3t@host:8443/simple/pkg.whl", **ARCHIVE},
            ("url", "https://host:8443/simple/pkg.whl", f"sha256={'ab' * 32}"),
        ),
        (
            {"url": "https://s3cr3t@host/pkg.whl", **ARCHIVE},
            ("url", "https://host/pkg.whl", f"sha256={'ab' * 32}"),
        ),
        (
            {
                "url": "git+https://user:s3cr3t@github.com/org/repo.git",
                "vcs_info": {"vcs": "git", "commit_id": "0123abc"},
            },
            ("vcs", "git+https://github.com/org/repo.git", "commit=0123abc"),
        ),
        (
            {"url": "https://u:s3cr3t@host:notaport/pkg.whl", **ARCHIVE},
            ("url", "https://host:notaport/pkg.whl", f"sha256={'ab' * 32}"),
        ),
        (
            {"url": "https://u:s3cr3t@[::1]:8443/pkg.whl", **ARCHIVE},
            ("url", "https://[::1]:8443/pkg.whl", f"sha256={'ab' * 32}"),
        ),
        (
            {"url": "https://u:s3cr3t@[::1/pkg.whl", **ARCHIVE},
            ("url", None, f"sha256={'ab' * 32}"),
        ),
        (
            {"url": "https://bucket.s3/pkg.whl?X-Amz-Signature=s3cr3t", **ARCHIVE},
            ("url", "https://bucket.s3/pkg.whl", f"sha256={'ab' * 32}"),
        ),
    ],
    ids=[
        "user-password",
        "with-port",
        "token-as-user",
        "vcs",
        "bad-port",
        "ipv6",
        "unparsable",
        "presigned-query",
    ],
)
def test_credentials_in_a_direct_url_are_stripped(
    tmp_path: Path, direct_url: dict[str, Any], expected: tuple[str, str, str]
) -> None:
    write_dist_info(tmp_path, "private-pkg", direct_url)
    write_dist_info(tmp_path, "public-pkg", {"url": "https://host/public.whl", **ARCHIVE})
    private, public = collect_packages(path=[str(tmp_path)])
    assert (private.name, private.installer) == ("private-pkg", "pip")
    assert (private.source, private.url, private.hash) == expected
    assert b"s3cr3t" not in msgspec.json.encode(private)
    assert public.url == "https://host/public.whl"  # a URL without credentials is kept as is
