import math

import pytest
import torch

from camwall.errors import CamwallError
from camwall.metrics import (
    CONTROLS,
    METRICS,
    any_leak,
    grid_pointing,
    l1_leakage,
    peak_ratio,
    random_control,
    relative_leakage,
    summarize,
    uniform_control,
    wall_leakage,
)

# A 4 x 4 image whose dead zone is the bottom row (4 of 16 pixels).
DEAD = torch.zeros(4, 4, dtype=torch.bool)
DEAD[3] = True


def _maps() -> torch.Tensor:
    respects = torch.zeros(4, 4)
    respects[0, 0] = 1.0  # all mass above the wall
    leaks = torch.zeros(4, 4)
    leaks[0, 0] = 1.0
    leaks[3, 1] = 0.5  # one dead pixel at 0.5
    behind = torch.zeros(4, 4)
    behind[3, 3] = 1.0  # everything behind the wall
    empty = torch.zeros(4, 4)
    return torch.stack([respects, leaks, behind, empty])


def test_wall_leakage_hand_computed():
    mu = wall_leakage(_maps(), DEAD)
    # leaks: ||dead|| = 0.5, ||all|| = sqrt(1 + 0.25)
    assert mu[:3].tolist() == pytest.approx([0.0, 0.5 / math.sqrt(1.25), 1.0], abs=1e-7)
    assert math.isnan(mu[3].item())


def test_l1_any_peak_hand_computed():
    maps = _maps()
    assert l1_leakage(maps, DEAD)[:3].tolist() == pytest.approx([0.0, 0.5 / 1.5, 1.0])
    assert any_leak(maps, DEAD)[:3].tolist() == [0.0, 1.0, 1.0]
    assert peak_ratio(maps, DEAD)[:3].tolist() == pytest.approx([0.0, 0.5, 1.0])
    for fn in (l1_leakage, any_leak, peak_ratio, relative_leakage):
        assert math.isnan(fn(maps, DEAD)[3].item())


def test_uniform_control_gives_sqrt_dead_fraction():
    x = torch.rand(3, 1, 4, 4)
    maps = uniform_control(x)
    assert maps.shape == (3, 4, 4)
    assert wall_leakage(maps, DEAD).tolist() == pytest.approx([0.5] * 3)  # sqrt(4/16)
    assert relative_leakage(maps, DEAD).tolist() == pytest.approx([1.0] * 3)
    # The paper's walled VGG16: bottom 54 of 224 rows -> 49.1%.
    dead = torch.zeros(224, 224, dtype=torch.bool)
    dead[170:] = True
    mu = wall_leakage(uniform_control(torch.zeros(1, 3, 224, 224)), dead)
    assert mu.item() == pytest.approx(math.sqrt(54 / 224))
    assert round(100 * mu.item(), 1) == 49.1


def test_relative_leakage_is_mu_over_uniform():
    maps = _maps()
    rel = relative_leakage(maps, DEAD)
    assert rel[1].item() == pytest.approx((0.5 / math.sqrt(1.25)) / 0.5)


def test_random_control_depends_on_image_id_not_batch():
    x = torch.zeros(3, 1, 8, 8)
    whole = random_control(x, [10, 11, 12], seed=7)
    alone = random_control(x[1:2], [11], seed=7)
    assert torch.equal(whole[1], alone[0])
    assert not torch.equal(whole[0], whole[1])
    assert not torch.equal(random_control(x[:1], [10], seed=8)[0], whole[0])
    assert float(whole.min()) >= 0.0
    assert float(whole.max()) < 1.0
    with pytest.raises(CamwallError, match="one image id per image"):
        random_control(x, [1], seed=0)


def test_random_control_leakage_near_sqrt_dead_fraction():
    # E||U_D||^2 / E||U||^2 = |D| / HW for i.i.d. noise: mu concentrates at sqrt(1/4) = 0.5.
    dead = torch.zeros(64, 64, dtype=torch.bool)
    dead[48:] = True
    maps = random_control(torch.zeros(4, 1, 64, 64), [0, 1, 2, 3], seed=0)
    assert wall_leakage(maps, dead).tolist() == pytest.approx([0.5] * 4, abs=0.02)


def test_registry_metadata():
    assert METRICS.names() == [
        "wall_leakage",
        "l1_leakage",
        "any_leak",
        "peak_ratio",
        "relative_leakage",
        "grid_pointing",
    ]
    for name, metric in METRICS.items():
        assert metric.name == name
        assert metric.lower_is_better is (name != "grid_pointing")
        assert metric.category in {"leakage", "detection", "reference", "localization"}
        assert metric.zone == ("target" if name == "grid_pointing" else "dead")
    assert METRICS.get("relative_leakage").percent is False
    assert CONTROLS.names() == ["uniform", "random"]


@pytest.mark.parametrize("name", METRICS.names())
def test_metric_zero_for_map_above_wall(name):
    maps = torch.zeros(2, 4, 4)
    maps[:, :3] = torch.rand(2, 3, 4) + 0.1
    assert METRICS.get(name)(maps, DEAD).tolist() == [0.0, 0.0]


def test_summarize_counts_empty_separately():
    s = summarize([0.1, 0.3, math.nan])
    assert (s.mean, s.n, s.empty) == (pytest.approx(0.2), 2, 1)
    assert s.std == pytest.approx(0.1)
    s = summarize([math.nan])
    assert (s.n, s.empty) == (0, 1)
    assert math.isnan(s.mean)


def test_bad_inputs():
    with pytest.raises(CamwallError, match="B x H x W"):
        wall_leakage(torch.zeros(4, 4), DEAD)
    with pytest.raises(CamwallError, match="dead_zone"):
        wall_leakage(torch.zeros(1, 5, 5), DEAD)
    with pytest.raises(CamwallError, match="NaN"):
        wall_leakage(torch.full((1, 4, 4), math.nan), DEAD)
    with pytest.raises(CamwallError, match="non-negative"):
        wall_leakage(-torch.ones(1, 4, 4), DEAD)
    with pytest.raises(CamwallError, match="dead zone is empty"):
        relative_leakage(torch.ones(1, 4, 4), torch.zeros(4, 4, dtype=torch.bool))


def test_verdict_thresholds_in_the_registry():
    # Exactly one metric says when a method respects the wall, one when it is no better than
    # the uniform control; the bench report's verdict reads them from here.
    respects = [n for n, m in METRICS.items() if m.respects_at is not None]
    uniform = [n for n, m in METRICS.items() if m.uniform_at is not None]
    assert respects == ["any_leak"]
    assert uniform == ["relative_leakage"]
    # A map above the wall meets the respect threshold; the uniform control sits exactly on
    # the uniform threshold (mu / mu(uniform) = 1), and a map entirely behind the wall beyond it.
    above = torch.zeros(1, 4, 4)
    above[:, :3] = 1.0
    assert METRICS.get("any_leak")(above, DEAD).item() <= METRICS.get("any_leak").respects_at
    ones = uniform_control(torch.zeros(1, 1, 4, 4))
    uniform_at = METRICS.get("relative_leakage").uniform_at
    assert relative_leakage(ones, DEAD).item() == pytest.approx(uniform_at)
    behind = torch.zeros(1, 4, 4)
    behind[:, 3:] = 1.0
    assert relative_leakage(behind, DEAD).item() == pytest.approx(2.0)  # 1 / sqrt(1/4)


def test_grid_pointing_hand_computed():
    """Share of the map's mass in the explained cell: 2x2 map, cell = top-left pixel."""
    maps = torch.tensor(
        [[[3.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]]
    )
    cells = torch.zeros(3, 2, 2, dtype=torch.bool)
    cells[:, 0, 0] = True
    cells[2] = torch.tensor([[False, False], [False, True]])  # per-image cells (B x H x W)
    out = grid_pointing(maps, cells)
    assert out[0].item() == pytest.approx(0.75)
    assert math.isnan(out[1].item())  # an empty map
    assert out[2].item() == pytest.approx(0.25)  # uniform: 1/4 on a 2 x 2 grid


def test_leakage_metrics_take_one_dead_zone_per_map():
    """A B x H x W stack of dead zones gives each map its own zone: equal to one call per map."""
    gen = torch.Generator().manual_seed(0)
    maps = torch.rand(3, 8, 8, generator=gen)
    zones = torch.zeros(3, 8, 8, dtype=torch.bool)
    zones[0, :4] = True
    zones[1, :, 5:] = True
    zones[2, 2:6, 2:6] = True
    for name in ("wall_leakage", "l1_leakage", "any_leak", "peak_ratio", "relative_leakage"):
        metric = METRICS.get(name)
        together = metric(maps, zones)
        one_by_one = torch.cat([metric(maps[i : i + 1], zones[i]) for i in range(3)])
        torch.testing.assert_close(together, one_by_one)
    with pytest.raises(CamwallError, match="B x H x W"):
        wall_leakage(maps, zones[:2])


def test_an_inf_map_is_refused_as_inf():
    maps = torch.rand(2, 4, 4)
    maps[1, 2, 3] = math.inf
    with pytest.raises(CamwallError, match="maps contain Inf"):
        wall_leakage(maps, torch.zeros(4, 4, dtype=torch.bool))
