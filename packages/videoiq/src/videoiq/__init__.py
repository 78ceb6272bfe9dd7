"""VideoIQ (Sun et al., ICCV 2021): a light policy network picks, for every frame, the bit width
(or a skip) at which an any-precision backbone processes it.

Modules: ``quant`` (DoReFa weights with LSB truncation, PACT activations, switchable BN),
``model`` (any-precision ResNet, float teacher, the combined model), ``policy`` (the precision/skip
policy), ``inference`` (each frame run only at its chosen precision), ``cost`` (paper formula,
measured MACs, BitOPs), ``losses`` and ``training`` (one step module per stage), ``conversion``
(the authors' state dicts).
"""

from videoiq.model import AnyPrecisionResNet, FullPrecisionTeacher, VideoIQ
from videoiq.policy import PrecisionPolicy
from videoiq.quant import PACT, QConv2d, SwitchableBatchNorm2d, dorefa_weight, pact, set_bit_width

__all__ = [
    "PACT",
    "AnyPrecisionResNet",
    "FullPrecisionTeacher",
    "PrecisionPolicy",
    "QConv2d",
    "SwitchableBatchNorm2d",
    "VideoIQ",
    "dorefa_weight",
    "pact",
    "set_bit_width",
]
__version__ = "0.1.0"
