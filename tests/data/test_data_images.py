from __future__ import annotations

import io

import numpy as np
import pytest
from data_helpers import rgb_image, save
from PIL import Image

from camwall.data import load_image, preprocess
from camwall.data.images import list_image_folder
from camwall.errors import CamwallError


def _rgb(img: Image.Image) -> np.ndarray:
    assert img.mode == "RGB"
    return np.asarray(img)


def test_rgb_png_unchanged(tmp_path):
    arr = rgb_image(0, 40, 30)
    got = _rgb(load_image(save(arr, tmp_path / "a.png")))
    assert np.array_equal(got, arr)


def test_grayscale_repeated_over_channels(tmp_path):
    gray = rgb_image(1, 40, 30)[:, :, 0]
    got = _rgb(load_image(save(gray, tmp_path / "g.png")))
    assert np.array_equal(got, np.repeat(gray[:, :, None], 3, axis=2))
    # and mode="L" gives the gray values back
    assert np.array_equal(np.asarray(load_image(tmp_path / "g.png", mode="L")), gray)


def test_rgba_alpha_dropped(tmp_path):
    rgb = rgb_image(2, 20, 10)
    alpha = np.full((10, 20, 1), 7, dtype=np.uint8)
    got = _rgb(load_image(save(np.concatenate([rgb, alpha], axis=2), tmp_path / "a.png")))
    assert np.array_equal(got, rgb)


def test_gray_alpha(tmp_path):
    la = np.stack([np.arange(50, dtype=np.uint8).reshape(5, 10)] * 2, axis=2)
    p = tmp_path / "la.png"
    Image.fromarray(la, mode="LA").save(p)
    got = _rgb(load_image(p))
    assert np.array_equal(got[:, :, 1], la[:, :, 0])


def test_palette_looked_up(tmp_path):
    idx = (np.arange(60).reshape(6, 10) % 4).astype(np.uint8)
    pal = [255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30]
    img = Image.fromarray(idx, mode="P")
    img.putpalette(pal + [0] * (768 - len(pal)))
    p = tmp_path / "p.png"
    img.save(p)
    got = _rgb(load_image(p))
    lut = np.array(pal, dtype=np.uint8).reshape(4, 3)
    assert np.array_equal(got, lut[idx])


def test_palette_with_transparency(tmp_path):
    idx = (np.arange(60).reshape(6, 10) % 2).astype(np.uint8)
    img = Image.fromarray(idx, mode="P")
    img.putpalette([9, 8, 7, 1, 2, 3] + [0] * 762)
    img.info["transparency"] = 0
    p = tmp_path / "pt.png"
    img.save(p, transparency=0)
    got = _rgb(load_image(p))
    assert np.array_equal(got[0, 0], [9, 8, 7])
    assert np.array_equal(got[0, 1], [1, 2, 3])


def test_sixteen_bit_scaled_not_clipped(tmp_path):
    arr = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    p = tmp_path / "16.png"
    Image.fromarray(arr).save(p)
    with Image.open(p) as im:
        assert im.mode.startswith("I")
    got = _rgb(load_image(p))
    assert got[0, :, 0].tolist() == [0, 1, 128, 255]  # round(v * 255 / 65535)
    assert np.array_equal(got[:, :, 0], got[:, :, 2])


def test_one_bit(tmp_path):
    bits = np.array([[0, 1, 1, 0]], dtype=bool)
    p = tmp_path / "b.png"
    Image.fromarray(bits).save(p)
    assert _rgb(load_image(p))[0, :, 0].tolist() == [0, 255, 255, 0]


def test_cmyk_and_gray_jpeg(tmp_path):
    rgb = rgb_image(3, 32, 32)
    p = tmp_path / "c.jpg"
    Image.fromarray(rgb).convert("CMYK").save(p)
    got = load_image(p)
    assert got.size == (32, 32)
    with Image.open(p) as im:
        assert np.array_equal(_rgb(got), np.asarray(im.convert("RGB")))
    q = save(rgb[:, :, 0], tmp_path / "g.jpg")
    assert load_image(q).mode == "RGB"


@pytest.mark.parametrize("kind", ["empty", "truncated-png", "truncated-jpeg", "text", "garbage"])
def test_broken_files_name_the_file(tmp_path, kind):
    buf = io.BytesIO()
    p = tmp_path / f"broken_{kind}.png"
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "truncated-png":
        Image.fromarray(rgb_image(4, 64, 64)).save(buf, format="PNG")
        p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    elif kind == "truncated-jpeg":
        p = tmp_path / "broken.jpg"
        Image.fromarray(rgb_image(4, 64, 64)).save(buf, format="JPEG")
        p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    elif kind == "text":
        p.write_text("hello, I am not a picture")
    else:
        p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    with pytest.raises(CamwallError, match=str(p.name)):
        load_image(p)


def test_missing_file(tmp_path):
    with pytest.raises(CamwallError, match="no such image file"):
        load_image(tmp_path / "nope.png")


def test_float_mode_refused(tmp_path):
    p = tmp_path / "f.tif"
    Image.fromarray(np.zeros((4, 4), dtype=np.float32)).save(p)
    with pytest.raises(CamwallError, match="mode F"):
        load_image(p)


def test_preprocess_upscales_tiny_images():
    img = Image.fromarray(rgb_image(5, 30, 20))
    out = preprocess(img, 256, 224)
    assert out.size == (224, 224)


def test_preprocess_shorter_side_then_center():
    # 512 x 256 -> 512 x 256 (unchanged scale), centre crop keeps columns 144..367
    arr = np.zeros((256, 512, 3), dtype=np.uint8)
    arr[:, :, 0] = np.arange(512)[None, :] // 2
    out = np.asarray(preprocess(Image.fromarray(arr), 256, 224))
    assert out.shape == (224, 224, 3)
    assert np.array_equal(out[0, :, 0], arr[16, 144:368, 0])


def test_list_image_folder(tmp_path):
    save(rgb_image(0, 8, 8), tmp_path / "b" / "x.PNG")
    save(rgb_image(1, 8, 8), tmp_path / "a" / "deep" / "y.jpeg")
    (tmp_path / "a" / "notes.txt").write_text("x")
    (tmp_path / "stray.png").write_bytes(b"")  # files at the root are not in any class
    classes, files, ignored = list_image_folder(tmp_path)
    assert classes == ["a", "b"]
    assert [f.name for f in files[0]] == ["y.jpeg"]
    assert [f.name for f in files[1]] == ["x.PNG"]
    assert [p.name for p in ignored] == ["notes.txt"]


def test_list_image_folder_errors(tmp_path):
    with pytest.raises(CamwallError, match="no class subfolders"):
        list_image_folder(tmp_path)
    with pytest.raises(CamwallError, match="no such folder"):
        list_image_folder(tmp_path / "missing")
