"""The image step: a batch of encoded images (JPEG, PNG) -> one tensor of the program.

Per image: decode to RGB (or L), resize (the shorter side to N keeping the aspect ratio,
torchvision's rule, or exactly [H, W]; bilinear with antialiasing), center-crop; then per
batch: stack, move to the model's device as uint8 (a quarter of the bytes of floats),
lay out as CHW or HWC, convert the dtype and normalise there.

Decoding uses Pillow on the CPU. On CUDA, when torchvision imports, JPEGs are decoded
together on the GPU with nvJPEG (`torchvision.io.decode_jpeg` on a list) and resized
there. A bad image (not JPEG or PNG, corrupt, too small for the crop) raises
`InvalidInput` naming the input and the element: the batcher then fails only the request
it came from.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from torchrig.errors import ArtifactError, InvalidInput
from torchrig.packaging.manifest import TensorSpec
from torchrig.repository.steps import ImageStep, Size

FLOAT_DTYPES = {"FP32": torch.float32, "FP16": torch.float16, "BF16": torch.bfloat16}
SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")
MAX_PIXELS = 64 * 1024 * 1024  # a larger image is refused before it is decoded


def _pair(size: Size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (size[0], size[-1])


def resized_size(height: int, width: int, resize: Size) -> tuple[int, int]:
    """(height, width) after `resize`: an int sets the shorter side (torchvision's rule,
    the longer side truncated), [H, W] the size itself."""
    if not isinstance(resize, int):
        return _pair(resize)
    if width <= height:
        return int(resize * height / width), resize
    return resize, int(resize * width / height)


def crop_box(height: int, width: int, crop: tuple[int, int]) -> tuple[int, int]:
    """(top, left) of a centered crop of `crop` = (height, width), as torchvision rounds."""
    return round((height - crop[0]) / 2.0), round((width - crop[1]) / 2.0)


class ImageTransform:
    """An image step bound to one input of a program on a device."""

    def __init__(self, step: ImageStep, spec: TensorSpec, device: str, where: str) -> None:
        self.step = step
        self.input = step.input
        self.into = spec.name
        self.feeds = [spec.name]  # the program inputs it fills
        self.device = torch.device(device)
        self.channels = 1 if step.color == "L" else 3
        datatype = step.dtype or spec.datatype
        if datatype != spec.datatype:
            raise ArtifactError(
                f"{where}.dtype is {datatype!r} but the model's input {spec.name} is "
                f"{spec.datatype}; leave dtype out (it follows the input) or re-pack the model"
            )
        if datatype not in (*FLOAT_DTYPES, "UINT8"):
            raise ArtifactError(
                f"{where}: the model's input {spec.name} is {spec.datatype}; an image step "
                "fills FP32, FP16, BF16 or UINT8 inputs"
            )
        if datatype == "UINT8" and (step.mean is not None or step.std is not None):
            raise ArtifactError(f"{where}: mean and std need a float input, {spec.name} is UINT8")
        self.datatype = datatype
        self.size = self._final_size(spec, where)
        shape = [spec.shape[0], self.channels, *self.size]
        if step.layout == "HWC":
            shape = [spec.shape[0], *self.size, self.channels]
        if spec.shape != shape:
            raise ArtifactError(
                f"{where} makes {step.layout} images of shape {shape} but the model's input "
                f"{spec.name} is {spec.shape}; set resize / center_crop / layout / color to "
                "match it"
            )
        self._scale = self._normaliser()
        self._gpu_decoder: Any = _torchvision_io() if self.device.type == "cuda" else None
        try:  # Pillow decodes on the CPU (and makes the generated example)
            import PIL.Image  # noqa: F401
        except ImportError:
            raise ArtifactError(
                f"{where}: an image step needs Pillow: pip install 'torchrig[vision]'"
            ) from None

    def _final_size(self, spec: TensorSpec, where: str) -> tuple[int, int]:
        """The (height, width) every image of a batch has, or an error naming the fix."""
        step = self.step
        if step.center_crop is not None:
            crop = _pair(step.center_crop)
            if isinstance(step.resize, int) and min(crop) > step.resize:
                raise ArtifactError(
                    f"{where}: center_crop {list(crop)} is larger than the resized shorter side "
                    f"{step.resize}; resize to at least {max(crop)}"
                )
            if step.resize is not None and not isinstance(step.resize, int):
                size = _pair(step.resize)
                if crop[0] > size[0] or crop[1] > size[1]:
                    raise ArtifactError(
                        f"{where}: center_crop {list(crop)} is larger than resize {list(size)}"
                    )
            return crop
        if step.resize is not None and not isinstance(step.resize, int):
            return _pair(step.resize)
        raise ArtifactError(
            f"{where}: images of a batch must end the same size for the model's input "
            f"{spec.name} {spec.shape}: set center_crop (with resize = shorter side) or "
            "resize = [height, width]"
        )

    def _normaliser(self) -> tuple[Any, Any] | None:
        """(scale, shift) per channel such that x * scale + shift == (x/255 - mean) / std."""
        step = self.step
        if self.datatype == "UINT8":
            return None
        mean = np.asarray(step.mean if step.mean is not None else [0.0], dtype=np.float64)
        std = np.asarray(step.std if step.std is not None else [1.0], dtype=np.float64)
        mean = np.broadcast_to(mean, (self.channels,))
        std = np.broadcast_to(std, (self.channels,))
        scale = 1.0 / (255.0 * std)
        shift = -mean / std
        view = (self.channels, 1, 1) if step.layout == "CHW" else (1, 1, self.channels)
        return (
            torch.tensor(scale, dtype=torch.float32, device=self.device).reshape(view),
            torch.tensor(shift, dtype=torch.float32, device=self.device).reshape(view),
        )

    # ---- running -------------------------------------------------------------------------

    def __call__(self, images: Sequence[bytes]) -> dict[str, Any]:
        """A batch of encoded images -> {into: tensor [rows, ...] on the device}."""
        for index, data in enumerate(images):
            if not data.startswith(SIGNATURES):
                raise InvalidInput(
                    f"input {self.input!r} element {index} is not a JPEG or PNG image (it "
                    f"starts with {bytes(data[:8])!r}); send the file's encoded bytes"
                )
        if self._gpu_decoder is not None:
            batch = self._decode_on_gpu(images)
        else:
            batch = torch.from_numpy(
                np.stack([self._pillow(data, i) for i, data in enumerate(images)])
            )
            batch = batch.to(self.device, non_blocking=True)  # [rows, H, W, C] uint8
        if self.step.layout == "CHW":
            batch = batch.permute(0, 3, 1, 2)
        if self._scale is not None:
            scale, shift = self._scale
            batch = torch.addcmul(shift, batch.to(torch.float32), scale)
            if self.datatype != "FP32":
                batch = batch.to(FLOAT_DTYPES[self.datatype])
        batch = batch.contiguous()
        if batch.is_cuda:  # the executor's lane copies on its own stream
            torch.cuda.current_stream(batch.device).synchronize()
        return {self.into: batch}

    def _pillow(self, data: bytes, index: int) -> Any:
        """One image decoded, resized and cropped with Pillow: uint8 [H, W, C]."""
        from PIL import Image

        where = f"input {self.input!r} element {index}"
        try:
            with Image.open(io.BytesIO(data), formats=("JPEG", "PNG")) as opened:
                if opened.width * opened.height > MAX_PIXELS:
                    raise InvalidInput(
                        f"{where}: an image of {opened.width}x{opened.height} pixels is larger "
                        f"than {MAX_PIXELS} pixels; send it smaller"
                    )
                image = opened.convert(self.step.color)
        except InvalidInput:
            raise
        except Exception as exc:  # Pillow's assorted decode errors (OSError, SyntaxError...)
            raise InvalidInput(
                f"{where} is not a decodable JPEG or PNG image ({type(exc).__name__}: {exc})"
            ) from None
        if self.step.resize is not None:
            height, width = resized_size(image.height, image.width, self.step.resize)
            image = image.resize((width, height), Image.Resampling.BILINEAR)
        if self.step.center_crop is not None:
            top, left = self._crop_origin(image.height, image.width, where)
            image = image.crop((left, top, left + self.size[1], top + self.size[0]))
        array = np.asarray(image)
        return array[:, :, None] if array.ndim == 2 else array

    def _crop_origin(self, height: int, width: int, where: str) -> tuple[int, int]:
        if height < self.size[0] or width < self.size[1]:
            raise InvalidInput(
                f"{where}: an image of {width}x{height} pixels is smaller than center_crop "
                f"{list(self.size)}; send a larger image"
            )
        return crop_box(height, width, self.size)

    def _decode_on_gpu(self, images: Sequence[bytes]) -> Any:
        """JPEGs decoded together by nvJPEG (PNGs on the CPU), resized and cropped on the
        GPU: uint8 [rows, H, W, C] on the device."""
        io_module = self._gpu_decoder
        mode = (
            io_module.ImageReadMode.GRAY if self.step.color == "L" else io_module.ImageReadMode.RGB
        )
        raw = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in images]
        jpegs = [i for i, data in enumerate(images) if data.startswith(SIGNATURES[0])]
        decoded: dict[int, Any] = {}
        if jpegs:
            try:
                batch = io_module.decode_jpeg(
                    [raw[i] for i in jpegs], mode=mode, device=self.device
                )
                decoded.update(zip(jpegs, batch, strict=True))
            except RuntimeError:  # one bad image fails the call: find it
                for i in jpegs:
                    decoded[i] = self._gpu_one(io_module, raw[i], mode, i)
        for i in range(len(images)):
            if i not in decoded:
                decoded[i] = self._gpu_one(io_module, raw[i], mode, i)
        return torch.stack([self._resize_crop(decoded[i], i) for i in range(len(images))])

    def _gpu_one(self, io_module: Any, raw: Any, mode: Any, index: int) -> Any:
        try:
            image = io_module.decode_image(raw, mode=mode)
        except RuntimeError as exc:
            raise InvalidInput(
                f"input {self.input!r} element {index} is not a decodable JPEG or PNG image ({exc})"
            ) from None
        return image.to(self.device, non_blocking=True)

    def _resize_crop(self, image: Any, index: int) -> Any:
        """A decoded CHW uint8 image on the device -> resized, cropped, HWC."""
        if self.step.resize is not None:
            height, width = resized_size(int(image.shape[1]), int(image.shape[2]), self.step.resize)
            image = (
                torch.nn.functional.interpolate(
                    image[None].float(), size=(height, width), mode="bilinear", antialias=True
                )[0]
                .round_()
                .clamp_(0, 255)
                .to(torch.uint8)
            )
        if self.step.center_crop is not None:
            where = f"input {self.input!r} element {index}"
            top, left = self._crop_origin(int(image.shape[1]), int(image.shape[2]), where)
            image = image[:, top : top + self.size[0], left : left + self.size[1]]
        return image.permute(1, 2, 0)

    def example(self) -> bytes:
        """One valid element: a small gray PNG, larger than any crop."""
        from PIL import Image

        side = max(self.size) * 2
        buffer = io.BytesIO()
        Image.new(self.step.color, (side, side), 128).save(buffer, format="PNG")
        return buffer.getvalue()


def _torchvision_io() -> Any:
    """torchvision.io when it imports (its wheel must match torch's), else None."""
    try:
        import torchvision.io  # type: ignore[import-not-found]
    except Exception:  # not installed, or built for another torch: Pillow decodes
        return None
    return torchvision.io
