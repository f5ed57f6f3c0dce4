"""pytorch-grad-cam's own test files against the compat layer (``scripts/run-gradcam-tests``).

The suite needs a copy of github.com/jacobgil/pytorch-grad-cam: set ``GRADCAM_REPO`` to a
checkout or a bare git directory; without it the suite tests are skipped. Only the import
rewriting is tested always.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "run-gradcam-tests"
REPO = os.environ.get("GRADCAM_REPO")
needs_repo = pytest.mark.skipif(not REPO, reason="set GRADCAM_REPO to a pytorch-grad-cam copy")


def load_script():
    loader = importlib.machinery.SourceFileLoader("run_gradcam_tests", str(SCRIPT))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_rewrite_imports_touches_import_lines_only() -> None:
    script = load_script()
    source = (
        "import torch\n"
        "from pytorch_grad_cam import GradCAM, \\\n    ScoreCAM\n"
        "from pytorch_grad_cam.utils.image import preprocess_image\n"
        "import pytorch_grad_cam_extra\n"
    )
    out = script.rewrite_imports(source)
    assert "from camwall.compat.pytorch_grad_cam import GradCAM, \\\n    ScoreCAM" in out
    assert "from camwall.compat.pytorch_grad_cam.utils.image import preprocess_image" in out
    assert "import pytorch_grad_cam_extra" in out  # another package, left alone
    with pytest.raises(ValueError, match="outside an import line"):
        script.rewrite_imports("import pytorch_grad_cam as g\nx = pytorch_grad_cam.GradCAM\n")


@needs_repo
def test_model_free_files_pass() -> None:
    files = ["test_svd_no_side_effect.py", "test_fasterrcnn_target_device.py"]
    results = load_script().run_suite(Path(str(REPO)), files)
    for name in files:
        assert results[name]["failed"] == []
        assert len(results[name]["passed"]) == 3


@needs_repo
@pytest.mark.slow
def test_model_files_pass() -> None:
    """Quick subset: the 48 test_run_all_models cases, test_one_channel and test_refine_cam."""
    files = ["test_one_channel.py", "test_run_all_models.py", "test_refine_cam.py"]
    results = load_script().run_suite(Path(str(REPO)), files)
    for name in files:
        assert results[name]["failed"] == []
    assert len(results["test_one_channel.py"]["passed"]) == 1
    assert len(results["test_run_all_models.py"]["passed"]) == 48
    assert len(results["test_refine_cam.py"]["passed"]) == 3
