"""VideoIQ (Sun et al., ICCV 2021): a light policy network picks, for every frame, the bit width
(or a skip) at which an any-precision backbone processes it.

Modules: ``quant`` (DoReFa weights with LSB truncation, PACT activations, switchable BN),
``model`` (any-precision ResNet, float teacher, the combined model), ``policy`` (the precision/skip
policy and its stage-3 classifier), ``inference`` (each frame run only at its chosen precision),
``int8`` (the <= 8-bit branches on PyTorch's int8 CPU kernels), ``cost`` (paper formula, measured
MACs, BitOPs), ``losses`` and ``steps`` (one step module per stage), ``config`` / ``build`` /
``training`` (the four stages on the effvid engine, each stage's model file checked at every
hand-off), ``evaluation``, ``cli`` (videoiq-train, -test, -convert, -demo), ``demo`` (the
synthetic benchmark end to end) and ``conversion`` (the authors' state dicts).
"""

from videoiq.model import AnyPrecisionResNet, FullPrecisionTeacher, VideoIQ
from videoiq.policy import PolicyBackboneClassifier, PrecisionPolicy
from videoiq.quant import PACT, QConv2d, SwitchableBatchNorm2d, dorefa_weight, pact, set_bit_width

__all__ = [
    "PACT",
    "AnyPrecisionResNet",
    "FullPrecisionTeacher",
    "PolicyBackboneClassifier",
    "PrecisionPolicy",
    "QConv2d",
    "SwitchableBatchNorm2d",
    "VideoIQ",
    "dorefa_weight",
    "pact",
    "set_bit_width",
]
__version__ = "0.1.0"
