"""`[[preprocess]]` and `[[postprocess]]` in config.toml: every key checked, each error
naming the step, the key and the fix; pack's writer and the reader agree."""

from __future__ import annotations

import pytest

from torchrig.errors import RepositoryError
from torchrig.packaging.config_toml import config_toml
from torchrig.repository.config import ModelConfig, parse_config
from torchrig.repository.steps import ImageStep, SoftmaxStep, TextStep, TopKStep, parse_step

FULL = """
[[preprocess]]
step = "image"
input = "frame"
into = "pixels"
color = "L"
resize = [256, 320]
center_crop = 224
layout = "HWC"
dtype = "FP16"
mean = [0.5]
std = [0.25]

[[preprocess]]
step = "text"
tokenizer = "vocab/tokenizer.json"
ids = "ids"
mask = "mask"
buckets = [16, 64]
pad_id = 3
add_special_tokens = false

[[postprocess]]
step = "softmax"
output = "logits"

[[postprocess]]
step = "top_k"
output = "logits"
k = 3
into = "classes"
"""


def test_every_key_parses_and_round_trips_through_packs_writer() -> None:
    config = parse_config(FULL)
    image, text = config.preprocess
    assert isinstance(image, ImageStep)
    assert isinstance(text, TextStep)
    assert (image.resize, image.center_crop, image.layout, image.dtype) == (
        [256, 320], 224, "HWC", "FP16"
    )  # fmt: skip
    assert (text.buckets, text.pad_id, text.add_special_tokens) == ([16, 64], 3, False)
    assert config.postprocess == [
        SoftmaxStep(output="logits"),
        TopKStep(output="logits", k=3, into="classes"),
    ]
    assert parse_config(config_toml(config)) == config
    assert parse_config(config_toml(ModelConfig())) == ModelConfig()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[preprocess]]\nstep = "image"\nresise = 256',
         'unknown field `resise` - at `$.preprocess[0]`. Keys of a "image" step: step, input,'),
        ('[[preprocess]]\nstep = "imag"',
         "Invalid value 'imag' - at `$.preprocess[0].step`. Each [[preprocess]] entry needs "
         "step = one of image, text"),
        ("[[postprocess]]\nk = 3",
         "missing required field `step` - at `$.postprocess[0]`. Each [[postprocess]] entry "
         "needs step = one of softmax, top_k"),
        ('[[preprocess]]\nstep = "image"\nresize = [1, 2, 3]',
         "preprocess[0].resize must be a positive integer or [height, width], not [1, 2, 3]"),
        ('[[preprocess]]\nstep = "image"\ncenter_crop = 0', "preprocess[0].center_crop must be"),
        ('[[preprocess]]\nstep = "image"\nmean = [0.1, 0.2]',
         "preprocess[0].mean has 2 values; give 1 or one per channel (3 for color 'RGB')"),
        ('[[preprocess]]\nstep = "image"\nstd = [0.0]', "preprocess[0].std must be > 0"),
        ('[[preprocess]]\nstep = "image"\ndtype = "UINT8"\nmean = [0.5]',
         'mean and std need a float dtype, not "UINT8"'),
        ('[[preprocess]]\nstep = "text"\npadding = "max_length"',
         'preprocess[0]: padding = "max_length" needs max_length'),
        ('[[preprocess]]\nstep = "text"\nbuckets = [32, 16]',
         "preprocess[0].buckets must be positive and ascending"),
        ('[[preprocess]]\nstep = "text"\nmask = "input_ids"',
         "ids and mask must name different inputs"),
        ('[[preprocess]]\nstep = "text"\n[[preprocess]]\nstep = "text"\nids = "b"\nmask = "c"',
         "preprocess[1].input 'text' is taken by an earlier step"),
        ('[[postprocess]]\nstep = "top_k"\nk = 0', "postprocess[0].k must be >= 1"),
        ('[[postprocess]]\nstep = "image"', "Invalid value 'image'"),
    ],
)  # fmt: skip
def test_errors_name_the_step_the_key_and_the_fix(text: str, message: str) -> None:
    with pytest.raises(RepositoryError) as raised:
        parse_config(text, origin="models/m/config.toml")
    assert str(raised.value).startswith("models/m/config.toml: ")
    assert message in str(raised.value)


def test_a_pipelines_built_in_step_parses_by_kind_and_options() -> None:
    step = parse_step("top_k", {"k": 2}, where="pipeline step 2")
    assert step == TopKStep(k=2)
    with pytest.raises(RepositoryError, match=r"pipeline step 1: .*Keys of a 'image' step"):
        parse_step("image", {"size": 3}, where="pipeline step 1")
    with pytest.raises(RepositoryError, match="Built-in steps are image, text, softmax, top_k"):
        parse_step("resize", {}, where="pipeline step 1")
    with pytest.raises(RepositoryError, match="pipeline step 1: k must be >= 1"):
        parse_step("top_k", {"k": 0}, where="pipeline step 1")
