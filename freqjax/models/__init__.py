"""Model zoo: ``create_model(name, **kw)``, ``list_models()``, ``model_info(name)``, counts.

Every inverted-residual network (EfficientNet, eFUN, LeFUN, MobileNetV2/V3, ReXNet, XSepConv
variants) is a stage table fed to one builder (:mod:`freqjax.models.builder`). Models take NHWC
input and are called as ``model.init(rng, x, train=False)`` / ``model.apply(variables, x,
train=...)``. Which convolution implementation they trace to is :mod:`freqjax.ops.backend`'s one
switch (``with freqjax.ops.conv_impl('xla'): ...``).

A family module registers its models where they are defined (:func:`registry.register`); this
package imports every one of its modules, so a new family needs no list updated anywhere.
"""

import importlib as _importlib
import pkgutil as _pkgutil

from freqjax.models.counting import count_macs, count_params
from freqjax.models.registry import INPUT_KINDS, ModelInfo, create_model, list_models, model_info
from freqjax.models.variables import abstract_variables, random_variables

for _module in _pkgutil.iter_modules(__path__):
    _importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "INPUT_KINDS",
    "ModelInfo",
    "abstract_variables",
    "count_macs",
    "count_params",
    "create_model",
    "list_models",
    "model_info",
    "random_variables",
]
