"""The plain-data answers of the knowledge base: what it knows and what it concludes.

All are frozen msgspec Structs, so the CLI can emit them as JSON unchanged and
the doctor can keep them in its own reports.
"""

from __future__ import annotations

from typing import Literal

import msgspec

VariantStatus = Literal["stable", "experimental", "legacy"]
ArchHow = Literal["sass-exact", "sass-compatible", "ptx-jit"]
DriverStatus = Literal["ok", "minor-compat", "insufficient", "unknown"]
Verdict = Literal["ok", "warn", "fail", "unknown"]
Topic = Literal["arch", "driver", "torch", "gpu"]
HostArch = Literal["x86_64", "aarch64"]


def host_arch(machine: str) -> HostArch:
    """`platform.machine()` as torch keys its wheels: `aarch64`/`arm64` -> aarch64, else x86_64."""
    return "aarch64" if machine.strip().lower() in {"aarch64", "arm64"} else "x86_64"


class PlatformArchs(msgspec.Struct, frozen=True):
    """The architectures a variant's wheels for another host architecture (aarch64) carry."""

    sass: list[str]
    ptx: list[str]
    source: str
    verified: bool
    notes: str = ""

    @property
    def arch_list(self) -> list[str]:
        """The architectures as `torch.cuda.get_arch_list()` prints them."""
        sass = [f"sm_{cc.replace('.', '')}" for cc in self.sass]
        return sass + [f"compute_{cc.replace('.', '')}" for cc in self.ptx]


class VariantInfo(msgspec.Struct, frozen=True):
    """One wheel variant of one torch release (e.g. 2.9 cu126) and what it was built with.

    `sass`/`ptx` are the x86_64 wheels' architectures; `aarch64` those of the aarch64
    (SBSA) wheels where the knowledge base knows them: the two lists differ.
    """

    release: str
    variant: str
    cuda: str
    sass: list[str]
    ptx: list[str]
    cudnn: str | None
    nccl: str | None
    status: VariantStatus
    pypi_default: bool
    patches: list[str]
    index_url: str
    source: str
    verified: bool
    notes: str = ""
    aarch64: PlatformArchs | None = None

    @property
    def arch_list(self) -> list[str]:
        """The x86_64 architectures as `torch.cuda.get_arch_list()` prints them."""
        sass = [f"sm_{cc.replace('.', '')}" for cc in self.sass]
        return sass + [f"compute_{cc.replace('.', '')}" for cc in self.ptx]

    def arch_list_for(self, machine: str) -> list[str] | None:
        """The arch list of this variant's wheels for host `machine` (`x86_64`, `aarch64`);
        None where the knowledge base does not know that host's list."""
        if host_arch(machine) == "aarch64":
            return self.aarch64.arch_list if self.aarch64 is not None else None
        return self.arch_list

    @property
    def latest_patch(self) -> str:
        """The newest known patch version that ships this variant."""
        return self.patches[-1]

    def pip_command(self, version: str | None = None) -> str:
        """The pip command that installs this variant (latest known patch by default)."""
        return f"pip install torch=={version or self.latest_patch} --index-url {self.index_url}"


class TorchRelease(msgspec.Struct, frozen=True):
    """A torch minor release (`2.9`) with its known patches and wheel variants."""

    release: str
    patches: list[str]
    pypi_default: str
    variants: list[VariantInfo]
    source: str
    verified: bool
    notes: str = ""

    @property
    def latest_patch(self) -> str:
        """The newest known patch version of the release."""
        return self.patches[-1]

    def variant(self, name: str) -> VariantInfo | None:
        """The variant named `name` (`cu126`), or None."""
        for info in self.variants:
            if info.variant == name:
                return info
        return None


class GpuModel(msgspec.Struct, frozen=True):
    """A GPU model and its compute capability."""

    name: str
    compute_capability: str
    datacenter: bool
    architecture: str
    aliases: list[str]
    source: str
    verified: bool
    notes: str = ""


class DriverRequirement(msgspec.Struct, frozen=True):
    """The Linux driver a CUDA toolkit needs: fully (`min_driver`) or under minor-version compat."""

    cuda: str
    min_driver: str
    minor_compat_floor: str
    source: str
    verified: bool


class ArchSupport(msgspec.Struct, frozen=True):
    """Whether a build's compiled architectures can run on a compute capability, and how."""

    runs: bool
    how: ArchHow | None
    via: str | None
    message: str


class DriverSupport(msgspec.Struct, frozen=True):
    """Whether a driver can run a CUDA runtime fully, under minor-version compat, or not at all."""

    status: DriverStatus
    cuda: str
    driver: str
    min_driver: str | None
    floor: str | None
    message: str
    fix: str | None


class BuildChoice(msgspec.Struct, frozen=True):
    """A torch build that runs on a given GPU (and driver), with the command that installs it."""

    torch_version: str
    release: str
    variant: str
    cuda: str
    min_driver: str | None
    how: ArchHow
    driver_status: DriverStatus | None
    status: VariantStatus
    pip_command: str


class Finding(msgspec.Struct, frozen=True):
    """One conclusion of `check`, with the fix when something is wrong."""

    status: Verdict
    topic: Topic
    message: str
    fix: str | None = None


class CompatReport(msgspec.Struct, frozen=True):
    """The verdict of `check` over all findings, and the facts it worked from."""

    verdict: Verdict
    findings: list[Finding]
    known: dict[str, str]
