"""Class labels from an archive's ``index_to_name.json`` (TorchServe's rules).

The file maps class indices (as strings) to names; a list value, like ImageNet's
``["n01440764", "tench"]``, contributes its last element.  Without the file, labels are the
index strings.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ModelLoadError

INDEX_TO_NAME = "index_to_name.json"


class Labels:
    """Index -> label lookup; falls back to the index as a string."""

    def __init__(self, mapping: dict[str, str] | None = None) -> None:
        self.mapping = mapping or {}

    @classmethod
    def from_model_dir(cls, model_dir: str | Path, filename: str = INDEX_TO_NAME) -> "Labels":
        path = Path(model_dir) / filename
        if not path.exists():
            return cls()
        try:
            data = json.loads(path.read_text())
        except ValueError as exc:
            raise ModelLoadError(f"{filename} is not valid JSON: {exc}") from None
        if isinstance(data, list):
            data = dict(enumerate(data))
        if not isinstance(data, dict):
            raise ModelLoadError(f"{filename} must map indices to names")
        return cls({str(k): str(v[-1] if isinstance(v, list) else v) for k, v in data.items()})

    def __call__(self, index: int) -> str:
        return self.mapping.get(str(int(index)), str(int(index)))

    def index_of(self, label: str) -> int | None:
        """The class index for a label name or an index string; ``None`` if unknown."""
        for key, name in self.mapping.items():
            if name == label:
                return int(key)
        return int(label) if label.strip().lstrip("-").isdigit() else None
