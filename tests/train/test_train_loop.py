"""The generic loop on tiny models: resume bit-for-bit, NaN handling, metrics files, accuracy."""

from __future__ import annotations

import csv
import dataclasses
import json
import math

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import TensorDataset
from train_helpers import tiny_config, tiny_data, tiny_model

from camwall.errors import CamwallError
from camwall.train import evaluate_model, fit


class _Killed(Exception):
    pass


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, list]:
    """3 epochs uninterrupted (dropout on, so the RNG state matters)."""
    model = tiny_model()
    res = fit(
        model, tiny_data(), tiny_data(32, seed=1), tiny_config(), tmp_path_factory.mktemp("ref")
    )
    assert res.completed
    assert res.steps == 3 * 4
    return _weights(model), res.history


def test_training_learns(reference: tuple[dict, list]) -> None:
    _, history = reference
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert [r["step"] for r in history] == [4, 8, 12]


def test_resume_after_kill_at_epoch_end_is_bit_exact(tmp_path, reference) -> None:
    def kill(epoch: int, row: dict) -> None:
        if epoch == 1:
            raise _Killed

    with pytest.raises(_Killed):
        fit(
            tiny_model(),
            tiny_data(),
            tiny_data(32, seed=1),
            tiny_config(),
            tmp_path,
            on_epoch_end=kill,
        )
    # a fresh process would build a fresh model; a different init must not matter
    model = tiny_model(seed=123)
    res = fit(model, tiny_data(), tiny_data(32, seed=1), tiny_config(), tmp_path, resume=True)
    _assert_equal(_weights(model), reference[0])
    strip = [
        {k: v for k, v in r.items() if k not in ("seconds", "images_per_second")}
        for r in res.history
    ]
    ref = [
        {k: v for k, v in r.items() if k not in ("seconds", "images_per_second")}
        for r in reference[1]
    ]
    assert strip == ref


def test_resume_mid_epoch_after_max_steps_is_bit_exact(tmp_path, reference) -> None:
    stopped = fit(
        tiny_model(), tiny_data(), tiny_data(32, seed=1), tiny_config(max_steps=6), tmp_path
    )
    assert not stopped.completed
    assert stopped.steps == 6
    assert json.loads((tmp_path / "checkpoints" / "latest.json").read_text()) == {
        "checkpoint": "step-00000006"
    }
    model = tiny_model(seed=7)
    res = fit(model, tiny_data(), tiny_data(32, seed=1), tiny_config(), tmp_path, resume=True)
    assert res.completed
    _assert_equal(_weights(model), reference[0])
    assert [r["train_loss"] for r in res.history] == [r["train_loss"] for r in reference[1]]


def test_resume_without_checkpoint_starts_fresh(tmp_path, reference) -> None:
    model = tiny_model()
    fit(model, tiny_data(), tiny_data(32, seed=1), tiny_config(), tmp_path, resume=True)
    _assert_equal(_weights(model), reference[0])


def test_checkpoint_holds_no_pickle_and_matches_model(tmp_path) -> None:
    model = tiny_model()
    res = fit(model, tiny_data(), None, tiny_config(epochs=1), tmp_path)
    assert res.checkpoint is not None
    files = sorted(p.name for p in res.checkpoint.iterdir())
    assert files == ["model.safetensors", "state.json", "state.safetensors"]
    _assert_equal(load_file(str(res.checkpoint / "model.safetensors")), _weights(model))
    state = load_file(str(res.checkpoint / "state.safetensors"))
    assert state["rng.torch"].dtype == torch.uint8
    momentum = [k for k in state if k.endswith("momentum_buffer")]
    assert len(momentum) == len(list(model.parameters()))
    meta = json.loads((res.checkpoint / "state.json").read_text())
    assert meta["epoch"] == 1
    assert meta["step"] == 4
    assert meta["step_in_epoch"] == 0
    assert meta["scheduler"]["total_steps"] == 4


def test_metrics_csv_and_jsonl(tmp_path, reference) -> None:
    res = fit(tiny_model(), tiny_data(), tiny_data(32, seed=1), tiny_config(), tmp_path)
    with (tmp_path / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == len(lines) == 3
    assert lines == res.history
    for row, line in zip(rows, lines):
        assert float(row["train_loss"]) == pytest.approx(line["train_loss"], rel=1e-12)
        assert float(row["val_top1"]) == pytest.approx(line["val_top1"])
        assert 0.0 <= line["val_top1"] <= line["val_top5"] <= 1.0
        assert line["images_per_second"] > 0


class _Blowup(TensorDataset):
    """Finite inputs; from epoch ``at`` on they are scaled by 1e30, so the loss overflows."""

    def __init__(self, at: int) -> None:
        super().__init__(*tiny_data().tensors)
        self.at, self.scale = at, 1.0

    def set_epoch(self, epoch: int) -> None:
        self.scale = 1e30 if epoch >= self.at else 1.0

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = super().__getitem__(i)
        return x * self.scale, y


def test_huge_lr_gives_nan_loss_error(tmp_path) -> None:
    cfg = tiny_config(lr=1e6, scheduler="constant")
    with pytest.raises(CamwallError, match=r"loss is NaN/inf at epoch 1.*No checkpoint yet.*--lr"):
        fit(tiny_model(), tiny_data(), None, cfg, tmp_path)


def test_nan_loss_stops_with_clear_error_and_keeps_last_good_checkpoint(tmp_path) -> None:
    cfg = tiny_config(epochs=3, scheduler="constant")
    with pytest.raises(
        CamwallError,
        match=r"loss is NaN/inf at epoch 2, step [56].*last good checkpoint is kept.*step-00000004",
    ):
        fit(tiny_model(), _Blowup(at=1), None, cfg, tmp_path)
    good = load_file(str(tmp_path / "checkpoints" / "step-00000004" / "model.safetensors"))
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "latest.json",
        "step-00000004",
    ]
    clean = tiny_model()
    fit(clean, tiny_data(), None, dataclasses.replace(cfg, epochs=1), tmp_path / "clean")
    _assert_equal(good, _weights(clean))  # the kept checkpoint is the real end of epoch 1
    assert all(torch.isfinite(v).all() for v in good.values())
    with pytest.raises(CamwallError, match=r"cannot resume.*lr=0.1 \(now 1e-05\)"):
        fit(
            tiny_model(),
            tiny_data(),
            None,
            dataclasses.replace(cfg, lr=1e-5),
            tmp_path,
            resume=True,
        )
    assert (
        json.loads((tmp_path / "checkpoints" / "latest.json").read_text())["checkpoint"]
        == "step-00000004"
    )


def test_nan_input_is_reported(tmp_path) -> None:
    data = tiny_data()
    x, y = data.tensors
    x = x.clone()
    x[5, 0, 0, 0] = math.nan
    with pytest.raises(CamwallError, match=r"input batch contains NaN/inf.*No checkpoint yet"):
        fit(tiny_model(), TensorDataset(x, y), None, tiny_config(epochs=1), tmp_path)


def test_evaluate_model_matches_hand_count() -> None:
    # a linear "model" whose logits are the input itself: accuracy is countable by hand
    logits = torch.tensor(
        [
            [3.0, 2.0, 1.0, 0.0, -1.0, -2.0],
            [0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
            [5.0, 4.0, 3.0, 2.0, 1.0, 0.0],
        ]
    )
    labels = torch.tensor([0, 4, 5])  # top-1 hit; top-5 hit (rank 2); miss (rank 6)
    model = nn.Sequential(nn.Identity())
    model.register_parameter("dummy", nn.Parameter(torch.zeros(1)))
    res = evaluate_model(model, TensorDataset(logits, labels), batch_size=2)
    assert res.n == 3
    assert res.top1 == pytest.approx(1 / 3)
    assert res.top5 == pytest.approx(2 / 3)
    expected = torch.nn.functional.cross_entropy(logits, labels).item()
    # float32 sums in another order: a log-softmax over 6 logits per row, 3 rows (2 batches)
    assert res.loss == pytest.approx(expected, rel=(6 + 3) * torch.finfo(torch.float32).eps)
    assert model.training  # mode restored


class _EpochData(TensorDataset):
    def __init__(self, *tensors: torch.Tensor) -> None:
        super().__init__(*tensors)
        self.epochs: list[int] = []

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)


def test_set_epoch_reaches_a_limited_dataset(tmp_path) -> None:
    data = _EpochData(*tiny_data().tensors)
    res = fit(tiny_model(), data, None, tiny_config(train_limit=32), tmp_path)
    assert data.epochs == [0, 1, 2]  # augmentation re-drawn each epoch, also through a Subset
    assert res.steps == 3 * 2  # 32 examples / batch 16


def _untimed(history: list[dict]) -> list[dict]:
    """Metric rows without the wall-clock fields."""
    return [
        {k: v for k, v in r.items() if k not in ("seconds", "images_per_second")} for r in history
    ]


def test_options_object_and_keywords_are_one_call(tmp_path, reference) -> None:
    """``fit(..., FitOptions(...))`` and ``fit(..., **fields)`` train the same weights; the
    keywords replace the object's fields; a keyword that is no field is refused."""
    from camwall.train import FitOptions

    seen: list[int] = []
    options = FitOptions(progress=False, on_epoch_end=lambda epoch, row: seen.append(epoch))
    model = tiny_model()
    res = fit(model, tiny_data(), tiny_data(32, seed=1), tiny_config(), tmp_path / "a", options)
    _assert_equal(_weights(model), reference[0])
    assert seen == [1, 2, 3]
    again = tiny_model()
    fit(
        again,
        tiny_data(),
        tiny_data(32, seed=1),
        tiny_config(),
        tmp_path / "a",
        options,
        resume=True,
    )
    assert seen == [1, 2, 3]  # resumed at the end: no epoch left to run
    _assert_equal(_weights(again), _weights(model))
    assert _untimed(res.history) == _untimed(reference[1])
    with pytest.raises(TypeError, match="resumee"):
        fit(tiny_model(), tiny_data(), None, tiny_config(), tmp_path / "b", resumee=True)
