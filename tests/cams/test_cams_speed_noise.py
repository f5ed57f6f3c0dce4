"""The speed changes of the noise methods leave the masks and the maps unchanged."""

from __future__ import annotations

import pytest
import torch

from camwall.cams._noise import _MaskRows, normalized_masks


@pytest.mark.parametrize(("h", "w", "size"), [(7, 7, (224, 224)), (3, 5, (9, 11)), (8, 8, (4, 4))])
def test_mask_rows_equal_the_batched_masks_exactly(h, w, size):
    """Each streamed row is bit for bit the row of the batched B x K x H x W masks (bilinear
    upsampling is per channel), for up-, odd- and down-sampling."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(2, 5, h, w, generator=gen).relu()
    a[1, 3] = 0.7  # a constant channel: the zero mask
    batched = normalized_masks(a, size)
    rows = _MaskRows(a, size)
    for i in range(2):
        for k in range(5):
            assert torch.equal(rows.row(i, k), batched[i, k][None])
    expected_zero = ~(batched.flatten(2) != 0).any(dim=2)
    assert torch.equal(rows.all_zero(), expected_zero)
    assert rows.all_zero().sum() == 1
