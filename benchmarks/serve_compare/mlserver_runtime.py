"""MLServer custom runtime for the demo ranker (V2 JSON; adaptive batching in model-settings)."""

from __future__ import annotations

import torch
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from ranker_model import load_ranker


class RankerRuntime(MLModel):  # type: ignore[misc]
    async def load(self) -> bool:
        self._model = load_ranker()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        arrays = {inp.name: NumpyCodec.decode_input(inp) for inp in payload.inputs}
        with torch.inference_mode():
            out = self._model(torch.from_numpy(arrays["dense"]), torch.from_numpy(arrays["sparse"]))
        return InferenceResponse(
            model_name=self.name,
            id=payload.id,
            outputs=[NumpyCodec.encode_output("probability", out.numpy())],
        )
