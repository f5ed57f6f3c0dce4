"""``camwall theory``: files written, values consistent with the library, clear errors."""

import json
import math

import pytest

from camwall.cli import main
from camwall.theory import expected_sqrt_relu_chi2


def test_theory_command_writes_table_and_figures(tmp_path, capsys):
    out = tmp_path / "theory"
    argv = ["theory", "--filters", "64", "512", "--samples", "60", "--out", str(out)]
    rc = main([*argv, "--at-init-items", "4", "--no-progress", "--seed", "1"])
    assert rc == 0
    names = {p.name for p in out.iterdir()}
    assert names == {
        "theory.json",
        "theory.md",
        "figure3_V64.png",
        "figure3_V512.png",
        "at_init.png",
    }
    for png in ("figure3_V64.png", "figure3_V512.png", "at_init.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((out / "theory.json").read_text())
    assert data["config"]["seed"] == 1
    assert data["config"]["wall_rows"] == [7, 13]
    small, big = data["rows"]
    assert (small["filters"], big["filters"]) == (64, 512)
    assert small["exact_over_bound_min"] is None  # no bound for V <= 400
    # 29x29 item 0 (ankle boot): positions with a non-zero 2x2 patch
    assert small["positions"] == big["positions"] > 0
    slack = 2 * expected_sqrt_relu_chi2(512) / math.sqrt(512 - 20 * math.sqrt(512))
    assert big["exact_over_bound_min"] == pytest.approx(slack, rel=1e-12)
    assert big["exact_over_bound_median"] == pytest.approx(slack, rel=1e-12)
    assert big["bound_below_exact"] is True
    assert 0 < big["max_rel_gap"] < 1  # 60 samples: a loose estimate, but an estimate
    a = data["at_init"]
    assert a["dead_rows"] == list(range(15, 29))
    assert a["outputs_identical"] is True
    assert a["items"] == 4
    md = (out / "theory.md").read_text()
    assert "| 512 | 60 |" in md
    assert "bit-identical: True" in md
    assert "V=512" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--filters", "0"], "--filters: must be at least 1, got 0"),
        (["--samples", "1"], "--samples: must be at least 2, got 1"),
        (["--index", "10000"], "outside 0..9999"),
        (["--data", "/nonexistent/fashion"], "/nonexistent/fashion"),
    ],
)
def test_theory_command_errors(tmp_path, capsys, args, message):
    rc = main(["theory", "--out", str(tmp_path), "--no-progress", *args])
    assert rc == 2
    err = capsys.readouterr().err
    assert "camwall: error:" in err
    assert message in err
    assert "Traceback" not in err
