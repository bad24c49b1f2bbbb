"""LitServe app for the demo ranker: POST /predict {"dense": [13 floats], "sparse": [26 ints]}.

Run: `python litserve_app.py PORT MAX_BATCH_SIZE BATCH_TIMEOUT_S`.
"""

import sys
from typing import Any

import litserve as ls
import torch
from ranker_model import load_ranker


class RankerAPI(ls.LitAPI):  # type: ignore[misc]
    def setup(self, device: str) -> None:
        self.model = load_ranker()

    def decode_request(self, request: dict[str, Any]) -> tuple[list[float], list[int]]:
        return request["dense"], request["sparse"]

    def batch(self, inputs: list[tuple[list[float], list[int]]]) -> tuple[torch.Tensor, ...]:
        dense = torch.tensor([row[0] for row in inputs], dtype=torch.float32)
        sparse = torch.tensor([row[1] for row in inputs], dtype=torch.int64)
        return dense, sparse

    def predict(self, x: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(*x)

    def unbatch(self, output: torch.Tensor) -> list[float]:
        return output[:, 0].tolist()  # type: ignore[no-any-return]

    def encode_response(self, output: float) -> dict[str, float]:
        return {"probability": output}


def main() -> None:
    port, max_batch_size, batch_timeout = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    api = RankerAPI(max_batch_size=max_batch_size, batch_timeout=batch_timeout)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1)
    server.run(
        host="127.0.0.1",
        port=port,
        num_api_servers=1,
        generate_client_file=False,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
