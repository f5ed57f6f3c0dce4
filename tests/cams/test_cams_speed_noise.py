"""The speed changes of the noise methods leave the masks and the maps unchanged."""

from __future__ import annotations

import pytest
import torch

from camwall.cams._noise import _MaskRows, normalized_masks

TOL = {"rtol": 0.0, "atol": 4 * torch.finfo(torch.float32).eps}


@pytest.mark.parametrize(("h", "w", "size"), [(7, 7, (224, 224)), (3, 5, (9, 11)), (8, 8, (4, 4))])
def test_mask_rows_equal_the_batched_masks_exactly(h, w, size):
    """Streamed rows (one channel or a few) are the rows of the batched B x K x H x W masks to
    float32 rounding (bilinear upsampling is per channel; the CPU kernel vectorizes over
    channels, so the last bit depends on how many are upsampled together): values in [0, 1],
    a few products and sums, so within 4 ulp of 1."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(2, 5, h, w, generator=gen).relu()
    a[1, 3] = 0.7  # a constant channel: the zero mask
    batched = normalized_masks(a, size)
    rows = _MaskRows(a, size)
    for i in range(2):
        for k in range(5):
            torch.testing.assert_close(rows.rows(i, [k]), batched[i, k][None], **TOL)
        torch.testing.assert_close(rows.rows(i, [1, 2, 4]), batched[i, [1, 2, 4]], **TOL)
    expected_zero = ~(batched.flatten(2) != 0).any(dim=2)
    assert torch.equal(rows.all_zero(), expected_zero)
    assert rows.all_zero().sum() == 1
