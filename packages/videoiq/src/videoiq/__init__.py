"""VideoIQ (Sun et al., ICCV 2021): a light policy network picks, for every frame, the bit width
(or a skip) at which an any-precision backbone processes it.

Modules: ``quant`` (DoReFa weights with LSB truncation, PACT activations, switchable BN).
"""

from videoiq.quant import PACT, QConv2d, SwitchableBatchNorm2d, dorefa_weight, pact, set_bit_width

__all__ = ["PACT", "QConv2d", "SwitchableBatchNorm2d", "dorefa_weight", "pact", "set_bit_width"]
__version__ = "0.1.0"
