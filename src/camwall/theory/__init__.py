"""Theory of the paper's Section 2: the simple CNN, GradCAM's closed form, Theorem 3.

Public API:

- :class:`SimpleCNN`: valid conv (no bias), ReLU, max-pool 2x2, head of ``L`` Linear layers,
  optionally walled (a :class:`camwall.walls.WalledLinear` first layer; dead rows from
  :func:`camwall.walls.dead_zone`). The checks compare its GradCAM with
  :func:`camwall.cams.compute_cams` as well as with autograd.
- :func:`gradcam_closed_form` (Proposition 2, no autograd) and :func:`gradcam_autograd`.
- :func:`expected_gradcam` (exact expectation at initialization), :func:`expected_sqrt_relu_chi2`,
  :func:`theorem3_bound` (the paper's lower bound), :func:`patch_norms`.
- :func:`monte_carlo_gradcam`: the same expectation by Monte Carlo over initializations.
- :func:`at_init_experiment`, :func:`pad_to_29`: the companion notebook's at-initialization
  experiment on Fashion-MNIST.

The ``camwall theory`` command (:mod:`camwall.theory.cli`) writes the table and the figures.
"""

from camwall.theory._at_init import AtInitResult, at_init_experiment, pad_to_29
from camwall.theory._expectation import (
    expected_gradcam,
    expected_sqrt_relu_chi2,
    patch_norms,
    theorem3_bound,
    unmasked_positions,
)
from camwall.theory._gradcam import GradCAMResult, gradcam_autograd, gradcam_closed_form
from camwall.theory._model import SimpleCNN, conv_output_size, default_wall_rows
from camwall.theory._monte_carlo import HeadSampling, MonteCarloResult, monte_carlo_gradcam

__all__ = [
    "AtInitResult",
    "GradCAMResult",
    "HeadSampling",
    "MonteCarloResult",
    "SimpleCNN",
    "at_init_experiment",
    "conv_output_size",
    "default_wall_rows",
    "expected_gradcam",
    "expected_sqrt_relu_chi2",
    "gradcam_autograd",
    "gradcam_closed_form",
    "monte_carlo_gradcam",
    "pad_to_29",
    "patch_norms",
    "theorem3_bound",
    "unmasked_positions",
]
