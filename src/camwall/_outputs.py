"""The logits of a model's output: a tensor, a HuggingFace-style output or a tuple.

One rule, used wherever camwall reads a model's output without a user ``output_fn`` (the CAM
engine, the explainers, the bench, the dead-zone analysis and the wall check):

* a tensor is the logits;
* an object with a tensor attribute ``logits`` (``transformers``' ``ImageClassifierOutput``,
  any ``ModelOutput``, a dataclass) gives ``output.logits``;
* a mapping with a tensor ``"logits"`` entry gives that entry;
* a tuple or list whose first item is a tensor gives that item (``return_dict=False``).

Anything else is returned unchanged, for the caller's own error message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

__all__ = ["logits_of"]


def logits_of(output: Any) -> Any:
    """The logits tensor of ``output`` by the rule above, else ``output`` itself."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, Mapping):
        found = output.get("logits")
        return found if isinstance(found, Tensor) else output
    found = getattr(output, "logits", None)
    if isinstance(found, Tensor):
        return found
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    return output
