from __future__ import annotations

from pathlib import Path

import pytest
from data_helpers import make_image_tree


@pytest.fixture
def image_tree(tmp_path: Path) -> Path:
    """An ImageFolder tree: 4 classes of 3 PNGs each (300x260, 240x320, 400x300), one README."""
    return make_image_tree(tmp_path / "src")
