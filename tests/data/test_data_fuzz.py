"""Fuzz the two readers of untrusted files (issue 15): random or corrupted IDX files and
manifests raise :class:`CamwallError` and nothing else.

Inputs are at most a few kB, so no example can run long (a deflate stream expands at most about
1000-fold); ``deadline=None`` because the machine may be loaded, not because examples are slow.
Examples per test: ``EXAMPLES`` (300); 5 tests, 1500 examples in all.
"""

from __future__ import annotations

import gzip
import json
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from camwall.data import ImageDataset, export_composites, load_fashion_mnist, read_image_dataset
from camwall.data.fashion import _read_idx
from camwall.errors import CamwallError

EXAMPLES = 300
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
MAGICS = (0x00000801, 0x00000803)


@pytest.fixture(scope="module")
def work() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


# ----------------------------------------------------------------------------- IDX


def _idx(magic: int, dims: list[int], payload: bytes) -> bytes:
    return struct.pack(f">I{len(dims)}I", magic, *dims) + payload


idx_headers = st.builds(
    _idx,
    st.one_of(st.sampled_from(MAGICS), st.integers(0, 2**32 - 1)),
    st.lists(st.one_of(st.integers(0, 40), st.integers(0, 2**32 - 1)), max_size=4),
    st.binary(max_size=600),
)
gz_files = st.one_of(
    st.binary(max_size=2000),  # not gzip at all (mostly)
    st.binary(max_size=2000).map(gzip.compress),  # gzip of random bytes
    idx_headers.map(gzip.compress),  # gzip of an IDX-looking header with random dimensions
    st.tuples(idx_headers.map(gzip.compress), st.integers(0, 4000), st.integers(1, 255)).map(
        lambda t: bytes(b ^ t[2] if i == t[1] % len(t[0]) else b for i, b in enumerate(t[0]))
    ),  # one corrupted byte in a valid gzip stream
    idx_headers.map(gzip.compress).flatmap(
        lambda b: st.integers(0, len(b) - 1).map(lambda k: b[:k])
    ),  # a truncated gzip stream
)


@FUZZ
@given(data=gz_files, magic=st.sampled_from(MAGICS))
def test_idx_reader_raises_only_camwall_errors(work, data, magic):
    path = work / "fuzz-idx3-ubyte.gz"
    path.write_bytes(data)
    try:
        dims, payload = _read_idx(path, magic, 3 if magic == MAGICS[1] else 1)
    except CamwallError as err:
        event(f"refused: {str(err).split(': ', 1)[-1][:20]}")
        return
    event("read")
    n = 1
    for d in dims:
        n *= d
    assert len(payload) == n


@FUZZ
@given(images=gz_files, labels=gz_files)
def test_load_fashion_mnist_on_fuzzed_files_raises_only_camwall_errors(work, images, labels):
    folder = work / "fashion"
    folder.mkdir(exist_ok=True)
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(images)
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(labels)
    with pytest.raises(CamwallError):  # never 10,000 valid items in a few kB
        load_fashion_mnist("test", root=folder)


# ----------------------------------------------------------------------------- manifests


@pytest.fixture(scope="module")
def dataset(work: Path) -> Path:
    """A valid 2-image dataset; each example overwrites its manifest."""
    images = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    export_composites(images, [0, 1], ["a", "b"], work / "ds", kind="fuzz")
    return work / "ds"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)


def _mostly(value: object, other: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    """``value`` three times in four, else a draw from ``other``."""
    return st.sampled_from([True, True, True, False]).flatmap(
        lambda keep: st.just(value) if keep else other
    )


entries = st.one_of(
    st.sampled_from(
        [
            "images/0000_a.png",
            "images/0001_b.png",
            "images/../images/0000_a.png",
            "../ds/images/0000_a.png",
            "../../../etc/passwd",
            "/etc/passwd",
            ".",
            "",
            "images",
            "manifest.json",
        ]
    ),
    st.text(max_size=30),
    json_values,
)
item = st.fixed_dictionaries(
    {"file": entries, "label": st.one_of(st.integers(-2, 3), json_values)},
    optional={"class": json_values, "source": json_values},
)
items = st.sampled_from([True, True, True, False]).flatmap(
    lambda keep: st.lists(item | json_values, min_size=1, max_size=4) if keep else json_values
)
manifests = st.fixed_dictionaries(
    {
        "format": st.just("camwall-image-dataset/1"),
        "items": items,
        "class_names": _mostly(["a", "b"], json_values),
    },
    optional={"channels": st.one_of(st.sampled_from([1, 3, 1.0, 2]), json_values)},
)


def _read(dataset: Path, text: bytes) -> None:
    (dataset / "manifest.json").write_bytes(text)
    try:
        ds = read_image_dataset(dataset)
    except CamwallError as err:
        event(f"refused: {str(err).split(': ', 2)[-1][:30]}")
        return
    event("read")
    assert isinstance(ds, ImageDataset)
    assert ds.images.shape[1:] in ((1, 8, 8), (3, 8, 8))
    assert all(f.resolve().parent == (dataset / "images").resolve() for f in ds.files)


@FUZZ
@given(text=st.one_of(st.binary(max_size=500), json_values.map(lambda v: json.dumps(v).encode())))
def test_manifest_reader_on_random_bytes_and_json(dataset, text):
    _read(dataset, text)


@FUZZ
@given(manifest=manifests)
def test_manifest_reader_on_near_valid_manifests(dataset, manifest):
    _read(dataset, json.dumps(manifest).encode())


@FUZZ
@given(data=st.data())
def test_manifest_reader_on_corrupted_valid_manifest(dataset, data):
    valid = json.dumps(
        {
            "format": "camwall-image-dataset/1",
            "class_names": ["a", "b"],
            "channels": 1,
            "items": [
                {"file": "images/0000_a.png", "label": 0},
                {"file": "images/0001_b.png", "label": 1},
            ],
        }
    ).encode()
    byte = st.one_of(st.sampled_from(b'{}[]",:0123456789./- abn'), st.integers(0, 255))
    edits = data.draw(st.lists(st.tuples(st.integers(0, len(valid) - 1), byte), max_size=6))
    text = bytearray(valid)
    for pos, byte in edits:
        text[pos] = byte
    cut = data.draw(st.integers(0, len(text)))
    _read(dataset, bytes(text[:cut]) if data.draw(st.booleans()) else bytes(text))
