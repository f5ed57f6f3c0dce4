"""camwall's own explainers: every CAM of :data:`camwall.cams.METHODS` and the controls.

Whether a CAM is stochastic (takes ``seed``) is the method's class fact
(:attr:`camwall.cams.CamMethod.stochastic`)."""

from __future__ import annotations

from torch import Tensor

from camwall.cams import METHODS, compute_cams
from camwall.errors import CamwallError
from camwall.explainers._protocol import Call, ExplainerSpec, ExplainFn
from camwall.explainers._registry import EXPLAINERS
from camwall.metrics import CONTROLS

__all__: list[str] = []


def _cam(method: str) -> ExplainFn:
    def fn(call: Call) -> Tensor:
        return compute_cams(
            call.model,
            call.x.detach(),
            call.layer_name,
            [method],
            call.targets,
            output_fn=call.output_fn,
            **call.options,
        )[method]

    return fn


def _control(name: str) -> ExplainFn:
    def fn(call: Call) -> Tensor:
        opts = dict(call.options)
        ids = opts.pop("image_ids", range(call.x.shape[0]))
        seed = opts.pop("seed", 0)
        if opts:
            raise CamwallError(
                f"control {name!r} takes only the options image_ids and seed, got "
                f"{', '.join(opts)}."
            )
        return CONTROLS.get(name)(call.x.detach(), list(ids), int(seed))

    return fn


for _name, _method in METHODS.items():
    EXPLAINERS.add(
        ExplainerSpec(
            _name,
            "cam",
            "camwall",
            _cam(_name),
            "final",
            needs_layer=True,
            stochastic=_method.stochastic,
            description=f"camwall.cams {_name}",
        ),
    )

for _name, _control_entry in CONTROLS.items():
    EXPLAINERS.add(
        ExplainerSpec(
            _name,
            "control",
            "camwall",
            _control(_name),
            "final",
            stochastic=_name == "random",
            description=_control_entry.description,
        ),
    )
