"""`torchrig bench`: a load generator for any V2 (Open Inference Protocol) server, and the
in-process ceiling of a packed model to compare it with.

- `target.prepare()` checks the server and model and encodes a pool of requests from the
  model's metadata (random data per datatype);
- `parallel.run_levels()` runs closed-loop (concurrency) or open-loop (rate) levels in
  one process or several, and merges their latency histograms;
- `inprocess.measure_ceiling()` times the executor per batch size on its device.

Nothing here imports torch except the in-process ceiling, so load processes start fast.
"""

from torchrig.bench.histogram import Histogram, LatencySummary
from torchrig.bench.loadgen import LoadPlan
from torchrig.bench.results import Level, LevelResult

__all__ = ["Histogram", "LatencySummary", "Level", "LevelResult", "LoadPlan"]
