"""Model repositories: discover models and complete versions on disk or an fsspec URL.

```
repo/
  ranker/
    config.toml       # optional: batching, device, dtype, instances, version policy
    1/                # numeric versions; a version counts once complete and verified
      manifest.json
      model.pt2
```
"""

from torchrig.repository.config import BatchingConfig, ModelConfig, VersionPolicy, parse_config
from torchrig.repository.discovery import (
    ModelInfo,
    Repository,
    RepositoryIndex,
    VersionInfo,
    selected_versions,
)

__all__ = [
    "BatchingConfig",
    "ModelConfig",
    "ModelInfo",
    "Repository",
    "RepositoryIndex",
    "VersionInfo",
    "VersionPolicy",
    "parse_config",
    "selected_versions",
]
