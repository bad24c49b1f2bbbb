"""The built-in steps a model's config.toml declares around its program.

`[[preprocess]]` entries turn BYTES inputs (encoded images, strings) into the program's
tensor inputs; `[[postprocess]]` entries turn its outputs into what clients want
(probabilities, top classes with labels). Each entry names its kind with `step = "..."`;
every key is checked here (types, ranges, combinations) so that a typo never falls back
to a default. What needs the program's signature (does `into` name one of its inputs?
does the image's final shape match it?) is checked when the version loads
(`torchrig.runtime.steps`). The steps run in `torchrig.runtime.steps`.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import msgspec

from torchrig.errors import RepositoryError

Size = int | list[int]  # one side, or [height, width]


class _Step(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="step"
):
    pass


class ImageStep(_Step, frozen=True, kw_only=True, forbid_unknown_fields=True, tag="image"):
    """Encoded images (JPEG, PNG) in a BYTES input -> one image tensor of the program."""

    input: str = "image"  # the public BYTES input, one encoded image per row
    into: str | None = None  # the program's input it fills; None: its only input
    color: Literal["RGB", "L"] = "RGB"  # channels after decoding (L: grayscale, 1 channel)
    resize: Size | None = None  # an int: the shorter side (aspect kept); [H, W]: exactly
    center_crop: Size | None = None  # an int: a square; [H, W]
    layout: Literal["CHW", "HWC"] = "CHW"
    dtype: Literal["FP32", "FP16", "BF16", "UINT8"] | None = None  # None: the input's
    # float dtypes: pixel values divided by 255 first, then (x - mean) / std per channel
    mean: list[float] | None = None
    std: list[float] | None = None


class TextStep(_Step, frozen=True, kw_only=True, forbid_unknown_fields=True, tag="text"):
    """Strings in a BYTES input -> token ids (and an attention mask) with a tokenizer file."""

    input: str = "text"  # the public BYTES input, one UTF-8 string per row
    tokenizer: str = "tokenizer.json"  # a Hugging Face tokenizers file packed with the version
    ids: str = "input_ids"  # the program's input of token ids
    mask: str | None = "attention_mask"  # its attention-mask input (1 token, 0 padding)
    padding: Literal["longest", "max_length"] = "longest"
    buckets: list[int] = []  # pad up to the smallest bucket holding the batch's longest
    max_length: int | None = None  # truncate to it; with padding = "max_length", pad to it
    pad_id: int | None = None  # None: the tokenizer's padding id, else its [PAD], else 0
    add_special_tokens: bool = True


class SoftmaxStep(_Step, frozen=True, kw_only=True, forbid_unknown_fields=True, tag="softmax"):
    """An output's scores -> probabilities over its last dimension (FP32)."""

    output: str | None = None  # the program's output; None: its only output


class TopKStep(_Step, frozen=True, kw_only=True, forbid_unknown_fields=True, tag="top_k"):
    """An output's scores -> the top k classes of each row, as the classification
    extension answers them: BYTES "score:index:label" (labels from `pack --labels`)."""

    output: str | None = None  # the program's output; None: its only output
    k: int = 5
    into: str | None = None  # the public output's name; None: it replaces `output`


PreStep = ImageStep | TextStep
PostStep = SoftmaxStep | TopKStep

STEP_KEYS = {
    "image": "input, into, color, resize, center_crop, layout, dtype, mean, std",
    "text": "input, tokenizer, ids, mask, padding, buckets, max_length, pad_id, add_special_tokens",
    "softmax": "output",
    "top_k": "output, k, into",
}


def _size(value: Size | None, key: str, problems: list[str]) -> None:
    if value is None:
        return
    sides = [value] if isinstance(value, int) else value
    if len(sides) not in (1, 2) or any(side < 1 for side in sides) or isinstance(value, bool):
        problems.append(f"{key} must be a positive integer or [height, width], not {value!r}")


def check_steps(pre: list[PreStep], post: list[PostStep]) -> list[str]:
    """Problems of the declared steps that need no signature, each naming its key."""
    problems: list[str] = []
    inputs: set[str] = set()
    for index, step in enumerate(pre):
        where = f"preprocess[{index}]"
        if step.input in inputs:
            problems.append(f"{where}.input {step.input!r} is taken by an earlier step")
        inputs.add(step.input)
        if isinstance(step, ImageStep):
            _size(step.resize, f"{where}.resize", problems)
            _size(step.center_crop, f"{where}.center_crop", problems)
            channels = 1 if step.color == "L" else 3
            for key, values in (("mean", step.mean), ("std", step.std)):
                if values is not None and len(values) not in (1, channels):
                    problems.append(
                        f"{where}.{key} has {len(values)} values; give 1 or one per channel "
                        f"({channels} for color {step.color!r})"
                    )
            if step.std is not None and any(value <= 0 for value in step.std):
                problems.append(f"{where}.std must be > 0")
            if step.dtype == "UINT8" and (step.mean is not None or step.std is not None):
                problems.append(f'{where}: mean and std need a float dtype, not "UINT8"')
        else:
            if not step.tokenizer:
                problems.append(f"{where}.tokenizer must name the tokenizer file")
            if step.max_length is not None and step.max_length < 1:
                problems.append(f"{where}.max_length must be >= 1")
            if step.padding == "max_length" and step.max_length is None:
                problems.append(f'{where}: padding = "max_length" needs max_length')
            if any(b < 1 for b in step.buckets) or step.buckets != sorted(set(step.buckets)):
                problems.append(f"{where}.buckets must be positive and ascending, no repeats")
            if step.buckets and step.padding == "max_length":
                problems.append(f'{where}: buckets go with padding = "longest"')
            if step.mask is not None and step.mask == step.ids:
                problems.append(f"{where}: ids and mask must name different inputs")
    for index, post_step in enumerate(post):
        if isinstance(post_step, TopKStep) and post_step.k < 1:
            problems.append(f"postprocess[{index}].k must be >= 1")
    return problems


def parse_step(kind: str, options: dict[str, Any], *, where: str) -> PreStep | PostStep:
    """One built-in step from its kind and options (a pipeline's `step` and `options`);
    a `RepositoryError` naming `where`, the key and the step's keys when they are wrong."""
    try:
        step: PreStep | PostStep = msgspec.convert(
            {**options, "step": kind}, type=PreStep | PostStep
        )
    except msgspec.ValidationError as exc:
        known = f" Keys of a {kind!r} step: {STEP_KEYS[kind]}." if kind in STEP_KEYS else ""
        kinds = ", ".join(STEP_KEYS)
        raise RepositoryError(
            f"{where}: {exc}.{known or f' Built-in steps are {kinds}.'}"
        ) from None
    pre = [step] if isinstance(step, ImageStep | TextStep) else []
    post = [step] if isinstance(step, SoftmaxStep | TopKStep) else []
    problems = [  # named by their key alone: `where` says which step
        re.sub(r"^(pre|post)process\[0\](\.|: )", "", problem) for problem in check_steps(pre, post)
    ]
    if problems:
        raise RepositoryError(f"{where}: " + "; ".join(problems) + ".")
    return step
