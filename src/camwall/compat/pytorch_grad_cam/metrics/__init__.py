"""grad-cam's CAM metrics (``cam_mult_image``, ``perturbation_confidence``, ``road``,
``arcc``), written for camwall. They run the model under ``torch.no_grad()`` and leave its
modes alone."""
