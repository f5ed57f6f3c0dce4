from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import fashion_present, rgb_image, save
from PIL import Image
from torchvision import transforms

from camwall.cli import main
from camwall.data import PROMPT_TEMPLATE, imagenet_categories, read_image_dataset
from camwall.data.images import sample_indices

ORACLE = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224)])


def oracle(path: Path, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """torchvision's evaluation transform on the RGB image (optionally cropped first)."""
    with Image.open(path) as im:
        rgb = im.convert("RGB")
    if box is not None:
        rgb = rgb.crop(box)
    return np.asarray(ORACLE(rgb))


def png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "RGB"
        return np.asarray(im)


def run(argv: list[str | Path]) -> int:
    return main([str(a) for a in argv])


# ----------------------------------------------------------------------------- stackmix


@pytest.mark.parametrize("split_row", [112, 30])
def test_stackmix_pixels(image_tree, tmp_path, capsys, split_row):
    out = tmp_path / "mix"
    argv = ["stackmix", "--source", image_tree, "--out", out, "--n", 3]
    assert run([*argv, "--split-row", split_row, "--seed", 5]) == 0
    assert "wrote 3 images" in capsys.readouterr().out
    m = json.loads((out / "manifest.json").read_text())
    assert m["kind"] == "stackmix"
    assert m["split_row"] == split_row
    assert m["seed"] == 5
    assert m["class_names"] == ["n001_cat", "n002_dog", "n003_fox", "n004_owl"]
    assert len(m["items"]) == 3
    labels = [it["label"] for it in m["items"]]
    assert labels == sorted(set(labels))
    assert set(m["versions"]) >= {"camwall", "torch", "torchvision", "pillow"}
    for it in m["items"]:
        cls = m["class_names"][it["label"]]
        assert it["class"] == cls
        assert it["x1"] != it["x2"]
        assert it["x1"].startswith(cls + "/")
        assert it["x2"].startswith(cls + "/")
        comp = png(out / it["file"])
        assert comp.shape == (224, 224, 3)
        x1, x2 = oracle(image_tree / it["x1"]), oracle(image_tree / it["x2"])
        assert np.array_equal(comp[:split_row], x1[:split_row])
        assert np.array_equal(comp[split_row:], x2[split_row:])
        assert not np.array_equal(comp[split_row:], x1[split_row:])


def test_stackmix_same_seed_same_dataset(image_tree, tmp_path):
    for name in ("a", "b"):
        assert run(["stackmix", "--source", image_tree, "--out", tmp_path / name, "--n", 4]) == 0
    ma = json.loads((tmp_path / "a" / "manifest.json").read_text())
    mb = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert ma["items"] == mb["items"]
    for it in ma["items"]:
        assert (tmp_path / "a" / it["file"]).read_bytes() == (
            tmp_path / "b" / it["file"]
        ).read_bytes()
    assert ma["ignored"] == ["n002_dog/README.txt"]


def test_stackmix_modes_and_jpeg(tmp_path):
    """Gray, RGBA, palette and 16-bit PNGs and JPEGs are converted to RGB, as documented."""
    root = tmp_path / "src"
    base = rgb_image(1, 300, 280)
    save(base[:, :, 0], root / "a_gray" / "1.png")
    save(base[:, :, 1], root / "a_gray" / "2.png")
    rgba = np.concatenate([base, np.full((280, 300, 1), 100, np.uint8)], axis=2)
    save(rgba, root / "b_rgba" / "1.png")
    save(base[::-1].copy(), root / "b_rgba" / "2.jpg", quality=90)
    Image.fromarray(base).convert("P").save(root / "b_rgba" / "3.png")
    save((base[:, :, 2].astype(np.uint16) * 257), root / "c_16bit" / "1.png")
    save((base[:, :, 0].astype(np.uint16) * 257), root / "c_16bit" / "2.png")
    out = tmp_path / "out"
    assert run(["stackmix", "--source", root, "--out", out, "--n", 3, "--split-row", 100]) == 0
    m = json.loads((out / "manifest.json").read_text())
    for it in m["items"]:
        comp = png(out / it["file"])
        if it["class"] == "c_16bit":
            # 16-bit v * 257 scales back to v exactly, then the usual transform
            src = {"1.png": base[:, :, 2], "2.png": base[:, :, 0]}
            top = np.asarray(ORACLE(Image.fromarray(src[Path(it["x1"]).name]).convert("RGB")))
            assert np.array_equal(comp[:100], top[:100])
        else:
            assert np.array_equal(comp[:100], oracle(root / it["x1"])[:100])
            assert np.array_equal(comp[100:], oracle(root / it["x2"])[100:])


def test_stackmix_refuses_class_with_one_image(image_tree, tmp_path, capsys):
    save(rgb_image(0, 256, 256), image_tree / "n000_ant" / "only.png")
    rc = run(["stackmix", "--source", image_tree, "--out", tmp_path / "o", "--n", 5])
    assert rc == 2
    err = capsys.readouterr().err
    assert "class 'n000_ant' has 1 image file(s)" in err
    assert "Traceback" not in err


def test_stackmix_broken_files_error_or_loud_skip(image_tree, tmp_path, capsys):
    broken = image_tree / "n003_fox" / "img0_broken.png"
    broken.write_bytes(b"")
    classes = tmp_path / "classes.txt"
    classes.write_text("n003_fox\n")
    failed, skipped_runs = [], 0
    for seed in range(6):
        argv = ["stackmix", "--source", image_tree, "--classes", classes, "--seed", seed]
        rc = run([*argv, "--out", tmp_path / f"strict{seed}"])
        err = capsys.readouterr().err
        if rc == 2:
            assert "img0_broken.png: empty file (0 bytes)" in err
            assert "--skip-bad" in err
            failed.append(seed)
        assert run([*argv, "--out", tmp_path / f"skip{seed}", "--skip-bad"]) == 0
        err = capsys.readouterr().err
        m = json.loads((tmp_path / f"skip{seed}" / "manifest.json").read_text())
        used = {m["items"][0]["x1"], m["items"][0]["x2"]}
        assert "n003_fox/img0_broken.png" not in used
        if seed in failed:
            assert [Path(s["file"]).name for s in m["skipped"]] == ["img0_broken.png"]
            assert "skipped 1 broken file(s)" in err
            skipped_runs += 1
        else:
            assert m["skipped"] == []
    assert failed  # the broken file was drawn for some seed
    assert skipped_runs == len(failed)


def test_stackmix_too_few_usable_images(image_tree, tmp_path, capsys):
    (image_tree / "n001_cat" / "img1.png").write_bytes(b"garbage")
    (image_tree / "n001_cat" / "img2.png").unlink()
    classes = tmp_path / "c.txt"
    classes.write_text("n001_cat\n")
    argv = ["stackmix", "--source", image_tree, "--classes", classes, "--out", tmp_path / "o"]
    assert run([*argv, "--skip-bad"]) == 2
    err = capsys.readouterr().err
    assert "class 'n001_cat' has only 1 usable image(s) of 2 files (1 broken" in err
    assert "img1.png" in err


def test_stackmix_argument_errors(image_tree, tmp_path, capsys):
    out = tmp_path / "o"
    assert run(["stackmix", "--source", tmp_path / "nowhere", "--out", out]) == 2
    assert "no such folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert run(["stackmix", "--source", tmp_path / "empty", "--out", out]) == 2
    assert "no class subfolders" in capsys.readouterr().err
    assert run(["stackmix", "--source", image_tree, "--out", out]) == 2  # default n = 100
    assert "--n 100 classes requested but only 4 are available" in capsys.readouterr().err
    bad = tmp_path / "bad.txt"
    bad.write_text("n001_cta\n")
    assert run(["stackmix", "--source", image_tree, "--out", out, "--classes", bad]) == 2
    assert "Did you mean 'n001_cat'" in capsys.readouterr().err
    assert (
        run(["stackmix", "--source", image_tree, "--out", out, "--n", 2, "--split-row", 224]) == 2
    )
    assert "--split-row must be in 1..223" in capsys.readouterr().err
    assert run(["stackmix", "--source", image_tree, "--out", out, "--n", 2]) == 0
    capsys.readouterr()
    assert run(["stackmix", "--source", image_tree, "--out", out, "--n", 2]) == 2
    assert "already exists" in capsys.readouterr().err
    assert run(["stackmix", "--source", image_tree, "--out", out, "--n", 2, "--force"]) == 0


def test_stackmix_first_classes_pool(image_tree, tmp_path):
    out = tmp_path / "o"
    assert (
        run(["stackmix", "--source", image_tree, "--out", out, "--n", 2, "--first-classes", 2]) == 0
    )
    m = json.loads((out / "manifest.json").read_text())
    assert [it["label"] for it in m["items"]] == [0, 1]


def test_stackmix_tiny_images_upscaled_with_warning(tmp_path, capsys):
    root = tmp_path / "src"
    save(rgb_image(0, 60, 40), root / "a" / "1.png")
    save(rgb_image(1, 300, 300), root / "a" / "2.png")
    out = tmp_path / "o"
    assert run(["stackmix", "--source", root, "--out", out, "--n", 1]) == 0
    err = capsys.readouterr().err
    assert "60x40 is smaller than the 224 crop; upscaled" in err
    m = json.loads((out / "manifest.json").read_text())
    assert len(m["warnings"]) == 1
    it = m["items"][0]
    comp = png(out / it["file"])
    assert np.array_equal(comp[:112], oracle(root / it["x1"])[:112])


# ----------------------------------------------------------------------------- stackgen


def _gen_tree(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    src = tmp_path / "gen"
    arrays = {
        "portrait.png": rgb_image(1, 300, 500),
        "landscape.png": rgb_image(2, 520, 310),
        "square.png": rgb_image(3, 400, 400),
        "rgba.png": np.concatenate(
            [rgb_image(4, 300, 450), np.full((450, 300, 1), 9, np.uint8)], 2
        ),
    }
    for name, arr in arrays.items():
        save(arr, src / name)
    return src, arrays


def test_stackgen_crops_at_offsets(tmp_path, capsys):
    src, _ = _gen_tree(tmp_path)
    table = src / "stackgen.csv"
    table.write_text(
        "file,class,label,offset\n"
        "portrait.png,tabby cat,281,0\n"
        "landscape.png,red fox,277,210\n"
        "square.png,tabby cat,281,\n"
        "rgba.png,barn owl,,center\n"
    )
    out = tmp_path / "out"
    assert run(["stackgen", "--source", src, "--out", out]) == 0
    assert "wrote 4 images" in capsys.readouterr().out
    m = json.loads((out / "manifest.json").read_text())
    assert m["kind"] == "stackgen"
    assert m["prompt"] == PROMPT_TEMPLATE
    items = m["items"]
    assert [it["label"] for it in items[:3]] == [281, 277, 281]
    assert m["class_names"][281] == "tabby cat"
    assert m["class_names"][277] == "red fox"
    boxes = {
        "portrait.png": (0, 0, 300, 300),  # rows 0..299 of 500
        "landscape.png": (210, 0, 520, 310),  # columns 210..519 of 520
        "square.png": (0, 0, 400, 400),
        "rgba.png": (0, 75, 300, 375),  # centred: (450 - 300) // 2
    }
    for it in items:
        assert tuple(it["crop_box"]) == boxes[it["source"]]
        got = png(out / it["file"])
        assert np.array_equal(got, oracle(src / it["source"], boxes[it["source"]]))
    ds = read_image_dataset(out)
    assert ds.images.shape == (4, 3, 224, 224)
    assert ds.labels.tolist() == [281, 277, 281, 0]  # no label for the owl: sorted names index


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("portrait.png,cat,,201", "offset 201 is outside 0..200"),
        ("portrait.png,cat,,abc", "offset 'abc' is not an integer"),
        ("missing.png,cat,,", "missing.png: no such image file"),
        ("portrait.png,cat,x,", "label 'x' is not an integer"),
        ("portrait.png,,,", "empty file or class"),
    ],
)
def test_stackgen_csv_errors(tmp_path, capsys, row, message):
    src, _ = _gen_tree(tmp_path)
    (src / "stackgen.csv").write_text("file,class,label,offset\n" + row + "\n")
    assert run(["stackgen", "--source", src, "--out", tmp_path / "o"]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_stackgen_csv_missing_or_headerless(tmp_path, capsys):
    src, _ = _gen_tree(tmp_path)
    assert run(["stackgen", "--source", src, "--out", tmp_path / "o"]) == 2
    assert "stackgen.csv: CSV not found" in capsys.readouterr().err
    (src / "stackgen.csv").write_text("portrait.png,cat\n")
    assert run(["stackgen", "--source", src, "--out", tmp_path / "o"]) == 2
    assert "the header lacks ['file', 'class']" in capsys.readouterr().err
    (src / "stackgen.csv").write_text("file,class\n")
    assert run(["stackgen", "--source", src, "--out", tmp_path / "o"]) == 2
    assert "no rows below the header" in capsys.readouterr().err


def test_stackgen_class_list_gives_labels(tmp_path):
    src, _ = _gen_tree(tmp_path)
    (src / "list.csv").write_text("file,class\nportrait.png,owl\nsquare.png,cat\n")
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\nowl\n")
    out = tmp_path / "o"
    argv = ["stackgen", "--source", src, "--csv", src / "list.csv", "--classes", names]
    assert run([*argv, "--out", out]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert [it["label"] for it in m["items"]] == [2, 0]
    assert m["class_names"] == ["cat", "dog", "owl"]


def test_stackgen_prompts(tmp_path):
    names = tmp_path / "animals.txt"
    names.write_text("tabby cat\n# comment\n\nred fox\n")
    out = tmp_path / "p"
    assert run(["stackgen", "--prompts", "--classes", names, "--out", out]) == 0
    assert (out / "prompts.txt").read_text().splitlines() == [
        "A photo of tabby cat stacked on top of tabby cat.",
        "A photo of red fox stacked on top of red fox.",
    ]
    with (out / "stackgen.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["class"], r["label"]) for r in rows] == [("tabby cat", "0"), ("red fox", "1")]


def test_stackgen_prompts_sample_imagenet_animals(tmp_path):
    out = tmp_path / "p"
    assert run(["stackgen", "--prompts", "--out", out, "--seed", 3]) == 0
    with (out / "stackgen.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    labels = [int(r["label"]) for r in rows]
    assert len(labels) == 100
    assert labels == sample_indices(398, 100, 3)  # the same classes as stackmix --seed 3
    assert max(labels) < 398
    cats = imagenet_categories()
    assert len(cats) == 1000
    assert [r["class"] for r in rows] == [cats[i] for i in labels]
    lines = (out / "prompts.txt").read_text().splitlines()
    assert lines[0] == PROMPT_TEMPLATE.format(animal=cats[labels[0]])


# ----------------------------------------------------------------------------- reader


def test_read_stackmix_folder(image_tree, tmp_path):
    out = tmp_path / "mix"
    assert run(["stackmix", "--source", image_tree, "--out", out, "--n", 4]) == 0
    ds = read_image_dataset(out)
    m = json.loads((out / "manifest.json").read_text())
    assert ds.images.shape == (4, 3, 224, 224)
    assert ds.labels.tolist() == [0, 1, 2, 3]
    assert ds.class_names == m["class_names"]
    assert [f.name for f in ds.files] == [Path(it["file"]).name for it in m["items"]]
    first = png(out / m["items"][0]["file"]).astype(np.float32) / 255
    assert np.array_equal(ds.images[0].permute(1, 2, 0).numpy(), first)
    gray = read_image_dataset(out, channels=1, size=64)
    assert gray.images.shape == (4, 1, 64, 64)
    assert gray.meta["split_row"] == 112


def test_read_plain_image_folder(image_tree):
    with pytest.raises(Exception, match=r"different sizes .* pass size="):
        read_image_dataset(image_tree)
    ds = read_image_dataset(image_tree, size=32)
    assert ds.images.shape == (12, 3, 32, 32)
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert ds.meta["ignored"] == ["n002_dog/README.txt"]
    expect = np.asarray(
        transforms.Compose([transforms.Resize(32), transforms.CenterCrop(32)])(
            Image.open(image_tree / "n001_cat" / "img0.png").convert("RGB")
        )
    )
    assert np.array_equal((ds.images[0].permute(1, 2, 0).numpy() * 255).round(), expect)


def test_read_folder_broken_file_error_or_warned_skip(image_tree):
    from camwall.data import SkippedFilesWarning
    from camwall.errors import CamwallError

    (image_tree / "n004_owl" / "zz.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    with pytest.raises(CamwallError, match=r"zz\.jpg: cannot decode"):
        read_image_dataset(image_tree, size=16)
    with pytest.warns(
        SkippedFilesWarning, match=r"skipped 1 undecodable file\(s\) of 13: .*zz\.jpg"
    ):
        ds = read_image_dataset(image_tree, size=16, skip_bad=True)
    assert len(ds) == 12
    assert ds.meta["skipped_on_read"] == [str(image_tree / "n004_owl" / "zz.jpg")]


def test_read_folder_errors(tmp_path):
    from camwall.errors import CamwallError

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.txt").write_text("")
    with pytest.raises(CamwallError, match=r"no image files in its 1 class folder\(s\)"):
        read_image_dataset(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(CamwallError, match="cannot read the manifest"):
        read_image_dataset(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format": "other"}')
    with pytest.raises(CamwallError, match="not a camwall dataset manifest"):
        read_image_dataset(tmp_path)
    with pytest.raises(CamwallError, match="channels must be 1 or 3"):
        read_image_dataset(tmp_path / "a", channels=2)


@pytest.mark.skipif(not fashion_present(), reason="Fashion-MNIST not installed")
def test_export_then_read_back(tmp_path, capsys):
    from camwall.data import DATASETS

    out = tmp_path / "exp"
    argv = ["data", "export", "--dataset", "fashion-stackmix", "--out", out, "--n", 12]
    assert run([*argv, "--seed", 2]) == 0
    assert "wrote 12 images" in capsys.readouterr().out
    ds = read_image_dataset(out)
    comp = DATASETS.get("fashion-stackmix")(n=12, seed=2)
    assert ds.images.shape == (12, 1, 64, 64)  # grayscale kept, from the manifest
    assert torch.equal(ds.labels, comp.labels)
    assert float((ds.images - comp.images).abs().max()) <= 0.5 / 255 + 1e-6
    assert ds.meta["seed"] == 2
    assert ds.meta["split_row"] == 36
    assert ds.meta["version"] == 2
    assert ds.sources[3]["source"] == comp.sources[3]
    assert run(argv) == 2
    assert "already exists" in capsys.readouterr().err


def test_export_refuses_nan(tmp_path):
    from camwall.data import export_composites
    from camwall.errors import CamwallError

    bad = torch.zeros(2, 1, 8, 8)
    bad[1, 0, 3, 3] = float("nan")
    with pytest.raises(CamwallError, match="NaN"):
        export_composites(bad, [0, 1], ["a", "b"], tmp_path / "o", kind="test")
    assert not (tmp_path / "o" / "manifest.json").exists()


def test_stackgen_tab_labelled_class_file(tmp_path):
    src, _ = _gen_tree(tmp_path)
    (src / "stackgen.csv").write_text("file,class\nportrait.png,owl\nsquare.png,cat\n")
    names = tmp_path / "names.txt"
    names.write_text("281\tcat\n24\towl\n")
    out = tmp_path / "o"
    assert run(["stackgen", "--source", src, "--classes", names, "--out", out]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert [it["label"] for it in m["items"]] == [24, 281]
    assert m["class_names"][24] == "owl"
    assert len(m["class_names"]) == 282
    p = tmp_path / "p"
    assert run(["stackgen", "--prompts", "--classes", names, "--out", p]) == 0
    with (p / "stackgen.csv").open() as fh:
        assert [r["label"] for r in csv.DictReader(fh)] == ["281", "24"]
