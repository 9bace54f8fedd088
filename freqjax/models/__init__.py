"""Model zoo: ``create_model(name, **kw)``, ``list_models()``, ``model_info(name)``.

Every inverted-residual network (EfficientNet, eFUN, LeFUN, MobileNetV2/V3) is a stage table fed
to one builder (:mod:`freqjax.models.builder`). Models take NHWC input and are called as
``model.init(rng, x, train=False)`` / ``model.apply(variables, x, train=..., rngs=...)``.
"""

from freqjax.models import cifar, densenet, efficientnet, mobilenet, mobilenetv1, msnet, resnet, rexnet  # noqa: F401  (registers the models)
from freqjax.models.registry import INPUT_KINDS, ModelInfo, create_model, list_models, model_info

__all__ = ["INPUT_KINDS", "ModelInfo", "create_model", "list_models", "model_info"]
