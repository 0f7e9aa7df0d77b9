"""Reference sample documents for the REST tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).resolve().parents[2] / "config" / "examples"


FILES = {
    "acceleratorData": "accelerator-data.json",
    "capacityData": "capacity-data.json",
    "modelData": "model-data.json",
    "serviceClassData": "serviceclass-data.json",
    "serverData": "server-data.json",
    "optimizerData": "optimizer-data.json",
}


EXPECTED_COST = {"small": 43819.0, "large": 19273.0}  # greedy, limited, RoundRobin


def sample_doc(name: str) -> dict[str, Any]:
    """The reference sample directory as one ``{"system": …}`` document."""
    return {
        "system": {
            key: json.loads((EXAMPLES / name / file).read_text()) for key, file in FILES.items()
        }
    }
