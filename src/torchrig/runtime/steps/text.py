"""The text step: a batch of UTF-8 strings -> token ids and an attention mask.

The tokenizer is a Hugging Face `tokenizers` file packed with the version (`pack --file
tokenizer.json`), so the server tokenizes exactly as training did. A batch is encoded in
one call (the library spreads it over threads, off the event loop), truncated to
`max_length`, and padded to the batch's longest string, to the smallest bucket that holds
it, or to `max_length`; the mask is 1 on tokens and 0 on padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from torchrig.errors import ArtifactError, InvalidInput
from torchrig.packaging.manifest import DynamicDim, TensorSpec
from torchrig.repository.steps import TextStep

INTEGER_DATATYPES = {"INT64": np.int64, "INT32": np.int32}


def _load_tokenizer(path: Path, where: str) -> Any:
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise ArtifactError(
            f"{where}: a text step needs Hugging Face tokenizers: pip install 'torchrig[text]'"
        ) from None
    if not path.is_file():
        raise ArtifactError(
            f"{where}.tokenizer: {path.name} is not in the version directory; pack it with "
            f"the model (torchrig pack --file {path.name})"
        )
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # the library's own parse errors
        raise ArtifactError(
            f"{where}.tokenizer: {path.name} is not a tokenizers file ({exc}); save it with "
            "Tokenizer.save() or take the tokenizer.json of a Hugging Face model"
        ) from None


class TextTransform:
    """A text step bound to a program's ids (and mask) inputs and a tokenizer file."""

    def __init__(
        self,
        step: TextStep,
        specs: dict[str, TensorSpec],
        version_dir: Path,
        device: str,
        where: str,
        *,
        dynamic: Sequence[DynamicDim] = (),
    ) -> None:
        self.step = step
        self.input = step.input
        self.device = torch.device(device)
        self.ids_spec = self._spec(specs, step.ids, "ids", where)
        self.mask_spec = self._spec(specs, step.mask, "mask", where) if step.mask else None
        self.feeds = [s.name for s in (self.ids_spec, self.mask_spec) if s is not None]
        # a length range declared at pack (--dynamic input_ids:1:MIN-MAX) bounds the padding
        declared = next((d for d in dynamic if d.input == step.ids and d.dim == 1), None)
        self.min_length = declared.min if declared is not None else 1
        self.max_length = (
            step.max_length
            or (step.buckets[-1] if step.buckets else None)
            or (declared.max if declared is not None else None)
        )
        for spec in (self.ids_spec, self.mask_spec):
            if spec is None:
                continue
            fixed = spec.shape[1]
            if fixed != -1 and (step.padding != "max_length" or step.max_length != fixed):
                raise ArtifactError(
                    f"{where}: the model's input {spec.name} has a fixed length of {fixed}; set "
                    f'padding = "max_length" and max_length = {fixed}, or pack the model with '
                    f"a dynamic length (pack --dynamic {spec.name}:1)"
                )
        self.tokenizer = _load_tokenizer(version_dir / step.tokenizer, where)
        self.tokenizer.no_padding()
        if self.max_length is not None:
            self.tokenizer.enable_truncation(self.max_length)
        else:
            self.tokenizer.no_truncation()
        self.pad_id = self._pad_id()

    @staticmethod
    def _spec(specs: dict[str, TensorSpec], name: str, key: str, where: str) -> TensorSpec:
        spec = specs.get(name)
        if spec is None:
            hint = ' (mask = "" when it has none)' if key == "mask" else ""
            raise ArtifactError(
                f"{where}.{key}: the model has no input {name!r}; its inputs are "
                + ", ".join(specs)
                + hint
            )
        if spec.datatype not in INTEGER_DATATYPES or len(spec.shape) != 2:
            raise ArtifactError(
                f"{where}.{key}: the model's input {name} is {spec.datatype}{spec.shape}; "
                "token ids and masks are INT64 or INT32 [batch, length]"
            )
        return spec

    def _pad_id(self) -> int:
        if self.step.pad_id is not None:
            return self.step.pad_id
        padding = self.tokenizer.padding
        if padding is not None:
            return int(padding["pad_id"])
        for token in ("[PAD]", "<pad>", "<PAD>"):
            found = self.tokenizer.token_to_id(token)
            if found is not None:
                return int(found)
        return 0

    def _length(self, longest: int) -> int:
        step = self.step
        if step.padding == "max_length" and step.max_length is not None:
            return step.max_length
        for bucket in step.buckets:
            if bucket >= longest:
                return max(bucket, self.min_length)
        return max(longest, self.min_length, 1)

    def __call__(self, texts: Sequence[bytes]) -> dict[str, Any]:
        """A batch of strings -> {ids: [rows, length], mask: [rows, length]} on the device."""
        strings = []
        for index, raw in enumerate(texts):
            try:
                strings.append(bytes(raw).decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise InvalidInput(
                    f"input {self.input!r} element {index} is not UTF-8 text ({exc})"
                ) from None
        encodings = self.tokenizer.encode_batch(
            strings, add_special_tokens=self.step.add_special_tokens
        )
        length = self._length(max((len(e.ids) for e in encodings), default=1))
        ids = np.full((len(strings), length), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(strings), length), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            tokens = encoding.ids[:length]
            ids[row, : len(tokens)] = tokens
            mask[row, : len(tokens)] = 1
        result = {self.ids_spec.name: self._tensor(ids, self.ids_spec)}
        if self.mask_spec is not None:
            result[self.mask_spec.name] = self._tensor(mask, self.mask_spec)
        return result

    def _tensor(self, array: Any, spec: TensorSpec) -> Any:
        array = array.astype(INTEGER_DATATYPES[spec.datatype], copy=False)
        return torch.from_numpy(array).to(self.device)

    def example(self) -> bytes:
        """One valid element: a short string."""
        return b"torchrig warm-up"
