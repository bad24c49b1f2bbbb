"""Fail the image build when an installed distribution is not the constraints file's pin.

Run by the builder stage with the image's Python; standard library only. The
CUDA-specific families (nvidia-*, cuda-*, triton) may be absent from the file when
torch pins them itself (the file then says so in a comment).
"""

import re
import sys
from importlib import metadata


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main(path: str) -> int:
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    pins: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[canonical(name)] = version
    torch_pins_cuda = "pinned exactly by torch" in text
    problems = []
    for dist in metadata.distributions():
        name, version = canonical(dist.metadata["Name"]), dist.version
        if name == "pip":
            continue
        if name not in pins:
            if torch_pins_cuda and name.startswith(("nvidia-", "cuda-", "triton")):
                continue
            problems.append(f"{name}=={version} is installed but not pinned")
        elif pins[name] != version and pins[name] != version.split("+", 1)[0]:
            # a pin without a local label (torch==2.14.1) takes the index's +cu130 build too
            problems.append(f"{name}=={version} is installed but {pins[name]} is pinned")
    for problem in problems:
        print(f"verify_pins: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
