import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("HEATVOL_SHARED_DATA", ROOT.parent / "shared" / "data"))


def shared_data(sub: str) -> Path:
    """A folder of ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA / sub
    if not path.is_dir():
        pytest.skip(f"real data not found at {path} (the shared data folder sits beside the repo)")
    return path
