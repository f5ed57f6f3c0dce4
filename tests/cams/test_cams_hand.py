"""Maps computed by hand on a one-conv model (1x1 conv, 2 channels, 2x2 input, linear head).

x = [[1, 2], [3, 4]]; conv weights (1, 0.5) so A_0 = x, A_1 = x / 2; the class-0 row of the
linear layer gives G_0 = [[1, 0], [0, 1]] and G_1 = [[0, 0], [1, -1]]; y_0 = 4.5, y_1 = 0.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from camwall.cams import compute_cams

THIRDS = [[0.0, 1 / 3], [2 / 3, 1.0]]  # N(alpha * x) for any alpha > 0

EXPECTED = {
    # w = mean G = (0.5, 0): C = 0.5 x
    "gradcam": THIRDS,
    # G_0 A_0 + G_1 A_1 = [[1, 0], [1.5, 2]]
    "hirescam": [[0.5, 0.0], [0.75, 1.0]],
    # max(G, 0) A summed: [[1, 0], [1.5, 4]]
    "layercam": [[0.25, 0.0], [0.375, 1.0]],
    # w = (5 / 10, -0.5 / 5): C = 0.45 x
    "xgradcam": THIRDS,
    # alpha = 1/12 on G_0's ones, 1/7 on G_1's +1: w = (1/6, 1/7), C = (1/6 + 1/14) x
    "gradcampp": THIRDS,
    # both masks are (x - 1) / 3, equal scores 3 -> w = (1/2, 1/2), C = 0.75 x
    "scorecam": THIRDS,
    # s0 = 4.5; ablating A_0 gives -0.5, A_1 gives 5: w = (10/9, -1/9), C = (19/18) x
    "ablationcam": THIRDS,
    # first principal component ~ +(x - 2.5) (sign fixed by the channel mean): ReLU, N
    "eigencam": [[0.0, 0.0], [1 / 3, 1.0]],
}


@pytest.fixture
def one_conv() -> tuple[nn.Module, torch.Tensor]:
    conv = nn.Conv2d(1, 2, 1, bias=False)
    fc = nn.Linear(8, 2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, 0.5]).view(2, 1, 1, 1))
        fc.weight.zero_()
        fc.weight[0] = torch.tensor([1.0, 0, 0, 1, 0, 0, 1, -1])
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    return nn.Sequential(conv, nn.Flatten(), fc), x


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_hand_computed_map(name, one_conv):
    model, x = one_conv
    got = compute_cams(model, x, "0", name)[name]
    torch.testing.assert_close(got, torch.tensor([EXPECTED[name]]), rtol=0, atol=1e-6)


def test_hand_computed_scores_and_gradients(one_conv):
    """The premises of the table above: y_0 = 4.5 and the class-0 gradient."""
    model, x = one_conv
    assert model(x)[0].tolist() == [4.5, 0.0]
