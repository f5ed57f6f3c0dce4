"""Drop-in replacements for other saliency libraries, running on camwall's engine.

* :mod:`camwall.compat.pytorch_grad_cam`: pytorch-grad-cam 1.5.7's module paths and names
  (``from camwall.compat.pytorch_grad_cam import GradCAM``), see ``docs/compat.md``.
"""
