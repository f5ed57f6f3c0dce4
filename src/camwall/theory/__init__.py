"""Theory of the paper's Section 2: the simple CNN, GradCAM's closed form, Theorem 3.

Public API:

- :class:`SimpleCNN`: valid conv (no bias), ReLU, max-pool 2x2, head of ``L`` Linear layers,
  optionally walled.
- :func:`gradcam_closed_form` (Proposition 2, no autograd) and :func:`gradcam_autograd`.
- :func:`expected_gradcam` (exact expectation at initialization), :func:`expected_sqrt_relu_chi2`,
  :func:`theorem3_bound` (the paper's lower bound), :func:`patch_norms`.
- :func:`monte_carlo_gradcam`: the same expectation by Monte Carlo over initializations.
- :func:`at_init_experiment`: the companion notebook's at-initialization experiment.
"""

from camwall.theory._expectation import (
    expected_gradcam,
    expected_sqrt_relu_chi2,
    patch_norms,
    theorem3_bound,
    unmasked_positions,
)
from camwall.theory._gradcam import GradCAMResult, gradcam_autograd, gradcam_closed_form
from camwall.theory._model import SimpleCNN, conv_output_size, default_wall_rows
from camwall.theory._monte_carlo import MonteCarloResult, monte_carlo_gradcam

__all__ = [
    "GradCAMResult",
    "MonteCarloResult",
    "SimpleCNN",
    "conv_output_size",
    "default_wall_rows",
    "expected_gradcam",
    "expected_sqrt_relu_chi2",
    "gradcam_autograd",
    "gradcam_closed_form",
    "monte_carlo_gradcam",
    "patch_norms",
    "theorem3_bound",
    "unmasked_positions",
]
