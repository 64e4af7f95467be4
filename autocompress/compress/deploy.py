"""The deployable float view of a materialized model.

Training-only machinery goes: sparsity masks and fake-quantized weights are
baked into plain weights, and the input fake-quant hooks are removed. What is
left is an ordinary Conv2d/Linear model that counts, exports to ONNX and runs
on integer kernels after real quantization.
"""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils import parametrize

from autocompress.compress.quantization import ActFakeQuant, _quantize_input


def deploy_copy(model: nn.Module) -> nn.Module:
    """A copy without training-only machinery: parametrizations baked, input fake-quant removed."""
    view = copy.deepcopy(model)
    for module in list(view.modules()):
        if parametrize.is_parametrized(module):
            # A deepcopy shares the injected ``Parametrized<Layer>`` class with the original, and
            # remove_parametrizations deletes the property from that class: give the copy its own.
            cls = type(module)
            namespace = {k: v for k, v in vars(cls).items() if k not in ("__dict__", "__weakref__")}
            module.__class__ = type(cls.__name__, cls.__bases__, namespace)
            for tensor_name in list(module.parametrizations.keys()):
                parametrize.remove_parametrizations(module, tensor_name, leave_parametrized=True)
        for hook_id, hook in list(module._forward_pre_hooks.items()):
            if hook is _quantize_input:
                del module._forward_pre_hooks[hook_id]
        if isinstance(getattr(module, "input_quant", None), ActFakeQuant):
            del module.input_quant
    return view.eval()
