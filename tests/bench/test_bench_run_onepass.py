"""One pass: all CAM methods of a batch in ONE compute_cams call, equal to per-method calls."""

from __future__ import annotations

import math

import torch
from bench_tiny import ALL, tiny_bench_model, tiny_dataset, tiny_model

from camwall.bench import STORE_NAME, Store, _compute, run_bench
from camwall.cams import DEFAULT_METHODS, compute_cams
from camwall.metrics import METRICS

# The metrics read on the dead zone (target-region ones, the grid pointing game, are stored
# for grid models only).
DEAD_ZONE_METRICS = [n for n, m in METRICS.items() if m.zone == "dead"]

CAMS = list(DEFAULT_METHODS)


def test_all_methods_of_a_batch_in_one_call_equal_per_method_calls(tmp_path, monkeypatch):
    real = _compute._cam_fn()
    calls: list[list[str]] = []

    def counting(model, x, layer, methods, **kw):
        calls.append(list(methods))
        return real(model, x, layer, methods, **kw)

    monkeypatch.setattr(_compute, "_cam_fn", lambda: counting)
    data = [tiny_dataset("d", 6), tiny_dataset("e", 5, seed=1)]
    run_bench([tiny_bench_model()], data, ALL, tmp_path, batch_size=4, progress=False)
    assert calls == [CAMS] * 4  # 2 + 2 batches, every CAM method in each call

    with Store(tmp_path / STORE_NAME) as store:
        rows = {(r["dataset"], r["image"], r["method"]): r for r in store.results()}
        batches = store.batches()
        note = store.meta()["seconds_note"]
    assert len(rows) == 11 * len(ALL)  # one row per key
    assert "compute_cams" in note
    assert [(b["dataset"], b["images"]) for b in batches] == [
        ("d", [0, 1, 2, 3]),
        ("d", [4, 5]),
        ("e", [0, 1, 2, 3]),
        ("e", [4]),
    ]
    model = tiny_model()
    for b in batches:
        assert b["methods"] == CAMS
        assert b["seconds"] > 0
        ds = data[0] if b["dataset"] == "d" else data[1]
        x = ds.images[b["images"]]
        with torch.no_grad():
            targets = model(x).argmax(1).tolist()
        # the bench's own option: FinerCAM's comparison for each image's explained class
        opts = {"finercam_target_idx": targets}
        shared = compute_cams(model, x, "1", CAMS, targets=targets, **opts)
        dead = tiny_bench_model().dead_zone
        for method in CAMS:
            alone = compute_cams(model, x, "1", [method], targets=targets, **opts)[method]
            # one pass for all methods vs one for each (fullgrad's biases and input gradients
            # asked or not): float32 maps in [0, 1], reductions over the 4 x 16 x 16 layer
            tol = torch.finfo(torch.float32).eps * 4 * 16 * 16
            torch.testing.assert_close(shared[method], alone, rtol=0, atol=tol, msg=method)
            for name in DEAD_ZONE_METRICS:  # the stored rows: exactly the bench's shared call
                want = METRICS.get(name)(shared[method], dead).tolist()
                for k, i in enumerate(b["images"]):
                    got = rows[(b["dataset"], i, method)][name]
                    assert got == want[k] or (math.isnan(got) and math.isnan(want[k]))
            for i in b["images"]:  # the shared call's time, per image, recorded per method
                assert rows[(b["dataset"], i, method)]["seconds"] == b["seconds"] / len(x)


def test_resume_after_a_partial_per_method_store_gives_one_row_per_key(tmp_path):
    """A store with some methods done for some images: resume fills exactly the missing keys."""
    models, data = [tiny_bench_model()], [tiny_dataset("d", 5)]
    methods = ["gradcam", "hirescam", "uniform"]
    full = tmp_path / "full"
    run_bench(models, data, methods, full, batch_size=2, progress=False, report=False)
    # Same config as `full`, but only gradcam rows for images 0..4 and hirescam for 0, 1.
    part = tmp_path / "part"
    run_bench(models, data, methods, part, batch_size=2, progress=False, report=False)
    with Store(part / STORE_NAME) as store:
        with store.db:
            store.db.execute(
                "DELETE FROM results WHERE method='uniform' OR (method='hirescam' AND image>1)"
            )
            store.db.execute(
                "DELETE FROM metrics WHERE method='uniform' OR (method='hirescam' AND image>1)"
            )
        assert store.count() == 7
    run_bench(models, data, methods, part, batch_size=2, resume=True, progress=False)
    with Store(part / STORE_NAME) as a, Store(full / STORE_NAME) as b:
        got, want = a.results(), b.results()
        dup = a.db.execute(
            "SELECT count(*) FROM (SELECT 1 FROM metrics GROUP BY model, dataset, image, "
            "method, metric HAVING count(*) > 1)"
        ).fetchone()[0]
    assert dup == 0
    assert len(got) == len(want) == 15
    for g, w in zip(got, want):
        assert (g["image"], g["method"]) == (w["image"], w["method"])
        for name in DEAD_ZONE_METRICS:
            assert g[name] == w[name] or (math.isnan(g[name]) and math.isnan(w[name]))
