"""``camwall theory``: check Proposition 2 / Theorem 3 numerically and draw the figures."""

from __future__ import annotations

import argparse
from typing import Any

from camwall._cliargs import (
    add_no_progress,
    add_out,
    add_seed,
    int_in,
    name_or_path,
    non_negative_int,
    positive_float,
    positive_int,
)

__all__ = ["register", "run_theory"]

ORDER = 60  # place in `camwall --help`


def register(subparsers: Any) -> None:
    """Add the ``theory`` sub-command."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "theory",
        help="expected GradCAM at initialization: Monte Carlo vs exact vs Theorem 3, figures",
        description=(
            "Average GradCAM over fresh Gaussian initializations of the walled simple CNN and "
            "compare it with the exact expectation and the paper's lower bound (Theorem 3); "
            "run the at-initialization experiment on Fashion-MNIST. Writes theory.md, "
            "theory.json, figure3_V*.png and at_init.png into --out."
        ),
    )
    p.add_argument(
        "--filters", type=int_in(1, 1_000_000), nargs="+", default=[512, 1024], metavar="V",
        help="numbers of filters V (the bound needs V > 400; default: 512 1024)",
    )  # fmt: skip
    p.add_argument(
        "--samples",
        type=int_in(2, 10_000_000),
        default=2000,
        help="Monte Carlo initializations per V (at least 2)",
    )
    add_out(p, "results/theory")
    add_seed(p)
    p.add_argument(
        "--index", type=non_negative_int, default=0, help="Fashion-MNIST test item for the maps"
    )
    p.add_argument("--kernel-size", type=int_in(1, 28), default=2, help="filter size k")
    p.add_argument("--tau", type=positive_float, default=1.0, help="weight standard deviation")
    p.add_argument(
        "--head-sampling", choices=["weights", "alpha"], default="weights",
        help="draw every head weight, or each filter's alpha from its exact law (faster)",
    )  # fmt: skip
    p.add_argument(
        "--at-init-items", type=positive_int, default=200,
        help="first test items scored in the at-initialization experiment",
    )  # fmt: skip
    p.add_argument(
        "--data", type=name_or_path, default=None, help="Fashion-MNIST folder (IDX .gz files)"
    )
    add_no_progress(p)
    p.set_defaults(func=run_theory)


def run_theory(args: argparse.Namespace) -> int:
    from camwall.theory._report import theory_report

    result = theory_report(
        args.out,
        filters=args.filters,
        samples=args.samples,
        seed=args.seed,
        index=args.index,
        kernel_size=args.kernel_size,
        tau=args.tau,
        head_sampling=args.head_sampling,
        at_init_items=args.at_init_items,
        at_init_shown=min(6, args.at_init_items),
        root=args.data,
        progress=not args.no_progress,
    )
    for row in result["rows"]:
        bound = row["exact_over_bound_min"]
        slack = "n/a (V <= 400)" if bound is None else f"{bound:.3f}"
        print(
            f"V={row['filters']}: max rel. gap {row['max_rel_gap']:.2%}, "
            f"max |gap|/stderr {row['max_abs_z']:.2f}, exact/bound {slack}, "
            f"{row['samples_per_s']:.0f} samples/s"
        )
    a = result["at_init"]
    print(
        f"at init: outputs bit-identical with dead rows zeroed: {a['outputs_identical']}; "
        f"positive GradCAM below the wall for {a['positive_below_wall']}/{a['items']} items"
    )
    print(f"wrote {args.out}/theory.md, theory.json, figure3_V*.png, at_init.png")
    return 0
