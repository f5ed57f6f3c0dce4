"""Issue 22 in the bench: data never lost, mixed or overwritten; checks before work starts;
finercam's comparison; the principal-component sign stated; --resume at another batch size."""

from __future__ import annotations

import errno
import shutil
import sqlite3
from pathlib import Path

import pytest
import torch
from bench_tiny import SIZE, tiny_bench_model, tiny_dataset
from PIL import Image

from camwall.bench import STORE_NAME, Store, run_bench
from camwall.bench._inputs import resolve_dataset, resolve_model
from camwall.cli import main
from camwall.errors import CamwallError
from camwall.runtime import LOCK_NAME

FIXTURES = Path(__file__).parent / "fixtures"


def _bench(out: Path, methods=("uniform",), models=None, data=None, **kw) -> Path:
    return run_bench(
        models or [tiny_bench_model()],
        data or [tiny_dataset("d", 4)],
        list(methods),
        out,
        progress=False,
        **kw,
    )


def _one_line(err: pytest.ExceptionInfo[CamwallError]) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


# -- §2: the lock file ---------------------------------------------------------------------------


def test_a_symlink_at_the_lock_is_never_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_NAME).symlink_to(victim)
    with pytest.raises(CamwallError, match="symbolic link") as err:
        _bench(out)
    assert str(out) in _one_line(err)
    assert victim.read_text() == "keep me"
    assert not (out / STORE_NAME).exists()


# -- §2: a full disk -----------------------------------------------------------------------------


def _sqlite_full(*_a, **_k):
    raise sqlite3.OperationalError("database or disk is full")


def _no_space(out):
    raise OSError(errno.ENOSPC, "No space left on device", str(Path(out) / "table.md"))


@pytest.mark.parametrize(
    ("where", "fail", "rows"),
    [
        ("camwall.bench._store.Store.add_batch", _sqlite_full, 0),  # storing a batch
        ("camwall.bench._report.write_report", _no_space, 4),  # writing the report
    ],
)
def test_a_full_disk_is_one_line_naming_the_folder(tmp_path, monkeypatch, where, fail, rows):
    monkeypatch.setattr(where, fail)
    with pytest.raises(CamwallError) as err:
        _bench(tmp_path)
    text = _one_line(err)
    assert str(tmp_path) in text
    assert "disk is full" in text
    assert "remove" not in text
    assert "not a camwall results store" not in text
    with Store(tmp_path / STORE_NAME) as store:
        assert store.count() == rows  # the rows stored before are kept


def test_a_full_disk_on_open_never_advises_removing_the_store(tmp_path, monkeypatch):
    _bench(tmp_path)

    monkeypatch.setattr(Store, "_connect", _sqlite_full)
    with pytest.raises(CamwallError) as err:
        Store(tmp_path / STORE_NAME)
    text = _one_line(err)
    assert "disk is full" in text
    assert "remove" not in text
    assert "not a camwall results store" not in text


# -- §2: a read-only store -----------------------------------------------------------------------


def _read_only_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Opening a store for writing fails as SQLite does on a read-only file."""
    real = Store._connect

    def connect(self, readonly):
        if not readonly:
            raise sqlite3.OperationalError("attempt to write a readonly database")
        return real(self, readonly)

    monkeypatch.setattr(Store, "_connect", connect)


def test_resume_on_a_read_only_store_is_one_line(tmp_path, monkeypatch):
    _bench(tmp_path)

    def read_only(*_a, **_k):
        raise sqlite3.OperationalError("attempt to write a readonly database")

    monkeypatch.setattr(Store, "start_run", read_only)
    with pytest.raises(CamwallError, match="read-only") as err:
        _bench(tmp_path, resume=True)
    assert "remove" not in _one_line(err)


def test_report_on_a_read_only_v1_store_migrates_in_memory(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "old-run"
    folder.mkdir()
    shutil.copy(FIXTURES / "store_v1.sqlite", folder / STORE_NAME)
    before = (folder / STORE_NAME).read_bytes()
    _read_only_writes(monkeypatch)
    assert main(["report", str(folder)]) == 0, capsys.readouterr().err
    assert (folder / "report.html").is_file()
    assert (folder / STORE_NAME).read_bytes() == before


def test_a_refused_archive_keeps_the_sidecars_beside_their_database(tmp_path, monkeypatch):
    _bench(tmp_path)
    held = sqlite3.connect(tmp_path / STORE_NAME)  # keeps -wal / -shm in place
    try:
        held.execute("PRAGMA journal_mode=WAL")
        held.execute("SELECT count(*) FROM results").fetchone()
        sidecars = [tmp_path / f"{STORE_NAME}{s}" for s in ("-wal", "-shm")]
        assert all(p.exists() for p in sidecars)
        real = Path.rename

        def rename(self, target):
            if self.name == STORE_NAME:
                raise OSError(errno.EACCES, "Permission denied")
            return real(self, target)

        monkeypatch.setattr(Path, "rename", rename)
        with pytest.raises(CamwallError, match="cannot move the previous store aside") as err:
            _bench(tmp_path)
        _one_line(err)
        assert all(p.exists() for p in sidecars)
        assert sorted(p.name for p in tmp_path.glob("results*")) == sorted(
            [STORE_NAME, *(p.name for p in sidecars)]
        )
    finally:
        held.close()


# -- §2: checks before work starts ---------------------------------------------------------------


def test_a_non_spatial_target_layer_is_refused_before_the_store(tmp_path):
    model = tiny_bench_model()
    model.target_layer = "4"  # the Linear head: B x 3 outputs
    with pytest.raises(CamwallError, match="'4'") as err:
        _bench(tmp_path, methods=["gradcam"], models=[model])
    _one_line(err)
    assert not (tmp_path / STORE_NAME).exists()


def test_a_long_dataset_name_still_gives_figures_and_a_report(tmp_path):
    name = "d" * 250  # a folder name may be 255 bytes; the figure name adds to it
    _bench(tmp_path, methods=["gradcam", "uniform"], data=[tiny_dataset(name, 4)])
    maps = [p.name for p in tmp_path.glob("maps-*.png")]
    assert len(maps) == 1
    assert len(maps[0]) <= 200
    assert main(["report", str(tmp_path)]) == 0
    assert f'alt="{Path(maps[0]).stem}"' in (tmp_path / "report.html").read_text()


# -- §2: --resume on a changed folder dataset ----------------------------------------------------


def _image_folder(root: Path, seed: int) -> Path:
    g = torch.Generator().manual_seed(seed)
    for k, cls in enumerate("abc"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(2):
            pixels = (torch.rand(SIZE, SIZE, generator=g) * 255).to(torch.uint8).numpy()
            Image.fromarray(pixels, mode="L").save(root / cls / f"{k}{i}.png")
    return root


def test_resume_refuses_a_folder_dataset_whose_contents_changed(tmp_path):
    folder = _image_folder(tmp_path / "images", seed=0)
    out = tmp_path / "out"
    _bench(out, data=[resolve_dataset(str(folder), 6, 0, 1)])
    _bench(out, data=[resolve_dataset(str(folder), 6, 0, 1)], resume=True)  # same: accepted
    _image_folder(folder, seed=1)  # other images under the same names
    with pytest.raises(CamwallError, match="differ from those the stored results") as err:
        _bench(out, data=[resolve_dataset(str(folder), 6, 0, 1)], resume=True)
    assert str(folder.resolve()) in _one_line(err)


# -- §5: a checkpoint's task the model does not have ---------------------------------------------


def test_a_checkpoint_task_the_model_lacks_is_refused_before_the_store(tmp_path):
    from camwall.walls import create_model, save_model

    task = {"name": "grid", "cells": [2, 2], "classes": 10}
    ckpt = save_model(create_model("fashion-vgg", walled=True), tmp_path / "net", {"task": task})
    model = resolve_model(str(ckpt))
    assert model.task == "grid"  # what the JSON says
    out = tmp_path / "out"
    with pytest.raises(CamwallError, match="task 'grid'") as err:
        run_bench([model], [resolve_dataset("fashion-grid", 4, 0)], ["uniform"], out)
    _one_line(err)
    assert not (out / STORE_NAME).exists()


# -- §4: finercam, the eigen sign, the batch size -------------------------------------------------


def _mu(out: Path) -> dict[str, list[float]]:
    with Store(out / STORE_NAME) as store:
        rows = store.results()
    return {
        m: [r["wall_leakage"] for r in rows if r["method"] == m]
        for m in {r["method"] for r in rows}
    }


def test_finercam_in_the_bench_runs_finercams_comparison(tmp_path):
    """As grad-cam's FinerCAM: the predicted class against its most similar classes, not the
    plain Grad-CAM that explicit targets used to give."""
    _bench(
        tmp_path, methods=["gradcam", "finercam", "gradcam:FinerCAM"], data=[tiny_dataset("d", 6)]
    )
    mu = _mu(tmp_path)
    assert mu["finercam"] == pytest.approx(mu["gradcam:FinerCAM"], abs=1e-5)
    assert mu["finercam"] != pytest.approx(mu["gradcam"], abs=1e-3)


def test_the_principal_component_sign_is_stated_beside_the_number(tmp_path):
    from camwall.bench._tables import SIGN_NOTE

    _bench(tmp_path, methods=["eigengradcam", "gradcam:EigenGradCAM", "uniform"])
    table = (tmp_path / "table.md").read_text()
    assert "| eigengradcam † |" in table
    assert "| gradcam:EigenGradCAM † |" in table
    assert SIGN_NOTE in table
    assert "uniform (control) †" not in table
    assert "Sign of the first principal component" in (tmp_path / "report.html").read_text()


def test_resume_with_another_batch_size_keeps_opticam_maps(tmp_path, monkeypatch):
    """opticam optimises each image on its own, so a run interrupted at --batch-size 2 and
    resumed at 4 gives the maps of one uninterrupted run (to float32 rounding)."""
    from camwall.bench import _compute

    opts = {"cam_options": {"opticam_iters": 3}, "report": False}
    _bench(tmp_path / "one", methods=["opticam"], batch_size=4, **opts)
    real, calls = _compute._cam_fn(), {"n": 0}

    def interrupted(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(_compute, "_cam_fn", lambda: interrupted)
    with pytest.raises(KeyboardInterrupt):
        _bench(tmp_path / "two", methods=["opticam"], batch_size=2, **opts)
    _bench(tmp_path / "two", methods=["opticam"], batch_size=4, resume=True, **opts)

    def leakage(out: Path) -> dict[int, float]:
        with Store(out / STORE_NAME) as store:
            return {r["image"]: r["wall_leakage"] for r in store.results()}

    a, b = leakage(tmp_path / "one"), leakage(tmp_path / "two")
    assert sorted(a) == sorted(b) == [0, 1, 2, 3]
    assert calls["n"] == 3  # batch 1 stored, batch 2 interrupted, then images 2-3 in one batch
    for i in a:
        assert b[i] == pytest.approx(a[i], rel=1e-4, abs=1e-6)


def test_resume_takes_another_batch_size_without_batch_dependent_methods(tmp_path):
    _bench(tmp_path, methods=["gradcam", "uniform"], batch_size=2)
    _bench(tmp_path, methods=["gradcam", "uniform"], batch_size=4, resume=True)
