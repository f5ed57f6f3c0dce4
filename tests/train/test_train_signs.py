"""Signs of life: one line per epoch on stderr when it is not a terminal."""

from __future__ import annotations

import re
from pathlib import Path

from train_helpers import tiny_config, tiny_data, tiny_model

from camwall.train import fit

LINE = re.compile(
    r"^train tiny walled: epoch (\d)/3 loss (\d+\.\d{3}) acc (\d+\.\d)% val (\d+\.\d)% "
    r"(\d+\.\d) s$"
)


def test_one_line_per_epoch_when_stderr_is_not_a_terminal(tmp_path: Path, capsys) -> None:
    data = tiny_data()
    res = fit(tiny_model(), data, data, tiny_config(), tmp_path, progress=False, label="walled")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3
    for epoch, (line, row) in enumerate(zip(lines, res.history, strict=True), start=1):
        m = LINE.match(line)
        assert m is not None, line
        assert int(m.group(1)) == epoch
        assert m.group(2) == f"{row['train_loss']:.3f}"
        assert m.group(3) == f"{100 * row['train_acc']:.1f}"
        assert m.group(4) == f"{100 * row['val_top1']:.1f}"


def test_partial_epoch_and_no_validation(tmp_path: Path, capsys) -> None:
    cfg = tiny_config(max_steps=2)  # 64 examples / 16 = 4 steps per epoch: stops inside epoch 1
    fit(tiny_model(), tiny_data(), None, cfg, tmp_path, progress=False)
    (line,) = capsys.readouterr().err.splitlines()
    assert re.match(r"^train tiny: epoch 1/3 \(partial\) loss \d\.\d{3} acc \d+\.\d% \d", line)


def test_silent_when_asked(tmp_path: Path, capsys) -> None:
    fit(tiny_model(), tiny_data(), None, tiny_config(epochs=1), tmp_path, log_epochs=False)
    assert capsys.readouterr().err == ""
