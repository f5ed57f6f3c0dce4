"""Bad arguments, for every sub-command: exit status 2, one line on stderr, no traceback.

One table drives every sub-command through bad values (checked in-process with
``camwall.cli.main``); a hypothesis fuzz then throws random ints, floats and strings at every
typed option of every sub-command (parse only) and requires exit 0 or 2, never an exception.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from camwall.cli import build_parser, main

NON_UTF8 = os.fsdecode(b"\xff")  # what sys.argv holds for a name that is not UTF-8
LONG = "x" * 256  # one byte over the longest file name (255 bytes)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A regular file, a walled checkpoint, an image and three broken copies of the checkpoint."""
    from camwall.walls import create_model, save_model

    root = tmp_path_factory.mktemp("cli-errors")
    (root / "file").write_text("not a folder")
    torch.manual_seed(0)
    save_model(create_model("fashion-vgg", width=2), root / "ck" / "net")
    Image.fromarray(np.zeros((64, 64), dtype=np.uint8), mode="L").save(root / "img.png")
    meta = json.loads((root / "ck" / "net.json").read_text())
    for name, patch in (
        ("shape", {"input_shape": [1, 32, 32]}),
        ("abc", {"input_shape": "abc"}),
        ("width", {"arch_kwargs": {**meta["arch_kwargs"], "width": -3}}),
    ):
        shutil.copy(root / "ck" / "net.safetensors", root / "ck" / f"{name}.safetensors")
        (root / "ck" / f"{name}.json").write_text(json.dumps({**meta, **patch}))
    (root / f"{NON_UTF8}.png").write_bytes((root / "img.png").read_bytes())
    os.mkfifo(root / "fifo.png")
    return root


# (argv with {T} = a fresh folder, {F} = a regular file, {R} = the fixture folder, substring)
BAD = [
    # cam
    ("cam {R}/ck/net {R}/img.png --target -1 --out {T}/o", "--target: expected an integer >= 0"),
    ("cam {R}/ck/net {R}/img.png --target 10 --out {T}/o", "the model has 10 classes"),
    ("cam {R}/ck/net {R}/img.png --device tpu --out {T}/o", "unknown device 'tpu'"),
    ("cam {R}/ck/net {R}/img.png --normalize imagenet --out {T}/o", "needs 3-channel input"),
    ("cam {R}/ck/net {R}/img.png --out {F}/sub", "is a file, not a folder"),
    ("cam {R}/ck/shape {R}/img.png --out {T}/o", "input_shape [1, 32, 32] is not the input shape"),
    ("cam {R}/ck/abc {R}/img.png --out {T}/o", "input_shape must be [C, H, W]"),
    ("cam {R}/ck/width {R}/img.png --out {T}/o", "ck/width"),
    ("cam {R}/ck/net {R}/" + NON_UTF8 + ".png --out {T}/o", "is not valid UTF-8"),
    ("cam {R}/ck/net {R}/img.png --methods gradcan --out {T}/o", "Did you mean 'gradcam'"),
    ("cam {R}/ck/net {R}/img.png --methods opticam --eigen-smooth --out {T}/o", "not apply to"),
    ("cam {R}/ck/net {R}/img.png --out {T}/" + LONG, "is 256 bytes long"),
    # bench and report
    ("methods nothing*", "no method matches 'nothing*'"),
    ("bench --images 1000000000000 --out {T}/o", "--images: must be at most 1000000"),
    ("bench --images 0 --out {T}/o", "--images: must be at least 1"),
    ("bench --seed 1180591620717411303424 --out {T}/o", "a seed must be an integer in [0, 2**63"),
    ("bench --seed -1 --out {T}/o", "a seed must be an integer in"),
    ("bench --out {T}/" + NON_UTF8, "is not valid UTF-8"),
    ("bench --out=", "the path is empty"),
    ("bench --out {F}/o", "is a file, not a folder"),
    ("bench --out /proc/camwall", "kernel file system"),
    ("bench --batch-size 0 --out {T}/o", "--batch-size: expected a positive integer"),
    ("bench --device cuda:x --out {T}/o", "unknown device"),
    ("bench --weights w.safetensors --out {T}/o", "--weights needs a registry --model"),
    ("bench --out {T}/" + LONG + "/o", "is 256 bytes long; file systems take at most 255"),
    ("bench --methods py:../../etc:passwd --out {T}/o", "'../../etc' is not a dotted name"),
    ("bench --methods py:.relmod:fn --out {T}/o", "module '.relmod' is not a dotted name"),
    ("bench --methods py:os:path/../sep --out {T}/o", "function 'path/../sep' is not a dotted"),
    ("report {T}/missing", "no such folder"),
    # deadzone
    ("deadzone --model fashion-vgg --input-size 100000 100000", "must be at most 4096"),
    ("deadzone --model fashion-vgg --input-size 0 64", "must be at least 1"),
    ("deadzone --model fashion-vgg --out {F}/z.png", "is a file, not a folder"),
    ("deadzone --model fashion-vgg --out /proc/camwall.png", "kernel file system"),
    ("deadzone --model fashion-vgg --out /dev/full", "kernel file system"),
    ("deadzone --model fashion-vgg --out {T}", "exists and is not a regular file"),
    ("deadzone --model fashion-vgg --out {R}/fifo.png", "exists and is not a regular file"),
    ("deadzone --model fashion-vgg --out {T}/z.v2", "unknown figure format '.v2'"),
    ("deadzone --model fashion-vgg --trials 0", "--trials: expected a positive integer"),
    ("deadzone --model fashion-vgg --out {T}/" + LONG[:252], "is 256 bytes long"),  # + .png
    ("deadzone --model fashion-vgx", "Did you mean 'fashion-vgg'"),
    # data
    ("stackmix --source {T} --out {F}/s", "is a file, not a folder"),
    ("stackmix --source {T}/nonexistent --out {T}/s", "nonexistent: no such folder"),
    ("stackmix --source {T} --out {T}/s --n 0", "--n: must be at least 1"),
    ("stackmix --source {T} --out {T}/s --split-row -1", "--split-row: expected an integer >= 0"),
    ("stackgen --out {F}/g --prompts", "is a file, not a folder"),
    ("stackgen --out {T}/g --first-classes 0 --prompts", "expected a positive integer"),
    ("data preview --out {F}/p.png", "is a file, not a folder"),
    ("data preview --out {T}/p.png --n -3", "--n: must be at least 1"),
    ("data export --dataset fashion-stackmix --out {F}/e", "is a file, not a folder"),
    ("data export --dataset fashion-stackmix --out {T}/e --seed x", "expected an integer"),
    # train, train-plot, evaluate
    ("train --preset fashion-vgg --out {F}/t", "is a file, not a folder"),
    ("train --preset fashion-vgg --out {T}/t --arch-kwarg width=-1", "width=-1: a model size"),
    ("train --preset fashion-vgg --out {T}/t --arch-kwarg width", "expected KEY=VALUE"),
    ("train --preset fashion-vgg --out {T}/t --label-smoothing 2", "fraction in [0, 1], got 2"),
    ("train --preset fashion-vgg --out {T}/t --lr nan", "expected a finite number"),
    ("train --preset fashion-vgg --out {T}/t --optimizer adam", "invalid choice: 'adam'"),
    ("train --preset fashion-vgg --out {T}/t --device tpu", "unknown device 'tpu'"),
    ("train --preset fashion-vgx", "invalid choice: 'fashion-vgx'"),
    ("train-plot {T}/missing --out {F}/c.png", "is a file, not a folder"),
    ("evaluate --model {R}/ck/net --dataset fashion-stackmix --batch-size 0", "positive integer"),
    ("evaluate --model {R}/ck/net --dataset fashion-stackmix --n 0", "--n: must be at least 1"),
    # theory
    ("theory --out {F}/th", "is a file, not a folder"),
    ("theory --out {T}/th --samples 1", "--samples: must be at least 2"),
    ("theory --out {T}/th --tau 0", "--tau: expected a number > 0"),
    ("theory --out {T}/th --filters 4 -1", "--filters: must be at least 1"),
]


@pytest.mark.parametrize(("line", "message"), BAD, ids=[line for line, _ in BAD])
def test_bad_argument_one_line_exit_2(files, tmp_path, monkeypatch, capsys, line, message):
    monkeypatch.chdir(tmp_path)
    subs = {"{T}": str(tmp_path), "{F}": str(files / "file"), "{R}": str(files)}
    argv = []
    for word in line.split(" "):
        for key, value in subs.items():
            word = word.replace(key, value)
        argv.append(word)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("camwall: error: ")
    assert message in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_commands_without_a_bad_case_in_the_table():
    covered = {line.split(" ")[0] for line, _ in BAD} | {"data"}
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) - covered == set()


def test_deadzone_prints_the_file_it_really_writes(tmp_path, capsys):
    out = tmp_path / "zone"  # no extension: matplotlib writes zone.png
    assert main(["deadzone", "--model", "simple-cnn", "--trials", "1", "--out", str(out)]) == 0
    assert (tmp_path / "zone.png").is_file()
    assert not out.exists()
    assert f"wrote {tmp_path / 'zone.png'} " in capsys.readouterr().out


def test_cam_writes_nothing_when_an_input_fails(files, tmp_path, capsys):
    """The second image is broken: no overlay of the first one may be left behind."""
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    out = tmp_path / "o"
    argv = ["cam", str(files / "ck" / "net"), str(files / "img.png"), str(broken)]
    assert main([*argv, "--out", str(out)]) == 2
    assert "broken.png" in capsys.readouterr().err
    assert not out.exists()


def test_oserror_from_a_handler_is_one_line(monkeypatch, capsys):
    import camwall.theory._report as report

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device", "/data/out/theory.json")

    monkeypatch.setattr(report, "theory_report", full)
    assert main(["theory", "--out", "/tmp", "--filters", "4", "--samples", "2"]) == 2
    err = capsys.readouterr().err
    assert err == "camwall: error: No space left on device: /data/out/theory.json\n"


# --- fuzz -------------------------------------------------------------------------------------

# The smallest valid command line of each sub-command; the fuzzed option is appended to it.
PREFIX = {
    "bench": ["bench"],
    "report": ["report", "."],
    "cam": ["cam", "ck", "a.png"],
    "deadzone": ["deadzone", "--model", "fashion-vgg"],
    "stackmix": ["stackmix", "--source", ".", "--out", "o"],
    "stackgen": ["stackgen", "--out", "o"],
    "data preview": ["data", "preview", "--out", "p.png"],
    "data export": ["data", "export", "--dataset", "fashion-stackmix", "--out", "o"],
    "train": ["train", "--preset", "fashion-vgg"],
    "train-plot": ["train-plot", "run"],
    "evaluate": ["evaluate", "--model", "ck", "--dataset", "fashion-stackmix"],
    "theory": ["theory"],
}


def _typed_options() -> list[tuple[str, str, int | str | tuple[str, str] | None]]:
    """``(command, flag, nargs)`` for every option that takes a value, of every sub-command."""
    found = []
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    stack = list(sub.choices.items())
    while stack:
        command, parser = stack.pop()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                stack.extend((f"{command} {k}", v) for k, v in action.choices.items())
            elif action.option_strings and action.nargs != 0 and action.help != "==SUPPRESS==":
                found.append((command, action.option_strings[-1], action.nargs))
    return sorted(found, key=lambda t: (t[0], t[1]))


OPTIONS = _typed_options()

values = st.one_of(
    st.integers(-(2**80), 2**80).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=12),
    st.binary(max_size=8).map(os.fsdecode),
    st.sampled_from(["", "-1", "0", "1", "2**63", "1e309", "cuda:99", "/proc/x", "/dev/full"]),
)


def test_every_command_has_a_fuzz_prefix():
    assert {c for c, _, _ in OPTIONS} <= set(PREFIX)
    assert len(OPTIONS) >= 60  # the table really covers the CLI


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(option=st.sampled_from(OPTIONS), value=values, data=st.data())
def test_fuzz_parse_exit_0_or_2_never_an_exception(option, value, data, tmp_path, capsys):
    command, flag, nargs = option
    count = nargs if isinstance(nargs, int) else 1
    extra = [data.draw(values) for _ in range(count - 1)]
    argv = [*PREFIX[command], f"{flag}={value}" if count == 1 else flag]
    if count != 1:
        argv += [value, *extra]
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        build_parser().parse_args(argv)
        code = 0
    except SystemExit as stop:
        code = stop.code  # type: ignore[assignment]
    finally:
        os.chdir(old)
    err = capsys.readouterr().err
    assert code in (0, 2)
    assert "Traceback" not in err
    if code == 2:
        assert len(err.strip().splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []  # parsing never creates anything
