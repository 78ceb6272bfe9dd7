"""MAC accounting on ``torch.utils.flop_counter.FlopCounterMode``.

Unit: the multiply-accumulate (MAC). FlopCounterMode counts 2 FLOPs per multiply-accumulate of the
matrix ops (convolutions, ``mm``/``addmm``/``bmm``/``matmul``, attention); it does not count
BatchNorm, activations, pooling or element-wise ops. Every figure here is its FLOP count / 2,
which is exactly the convention of torchvision's published ``_ops`` (e.g. ResNet-50: 4.089 G).

* :func:`count_macs` - one forward, one number;
* :func:`mac_table` - per-module table (innermost module that ran each op), summing to the total,
  computable on the ``meta`` device;
* :class:`UnitCosts` / :func:`per_sample_macs` / :func:`crosscheck` - dynamic accounting for
  models whose cost depends on the input (frames processed, crop sizes, bit widths); counts and
  costs are floats, so fractional units (part of a frame, part of a layer) are exact;
* :func:`bitops_table` - the MAC table's rows x each layer's weight and activation bits;
* :func:`latency_table` - per-layer time measured on a device, with the MAC table's row names.
"""

from effvid.flops.bitops import FLOAT_BITS, BitopsRow, BitopsTable, bitops, bitops_table
from effvid.flops.counter import MacRow, MacTable, count_macs, mac_table
from effvid.flops.dynamic import UnitCosts, crosscheck, per_sample_macs
from effvid.flops.latency import LatencyRow, LatencyTable, latency_table

__all__ = [
    "FLOAT_BITS",
    "BitopsRow",
    "BitopsTable",
    "LatencyRow",
    "LatencyTable",
    "MacRow",
    "MacTable",
    "UnitCosts",
    "bitops",
    "bitops_table",
    "count_macs",
    "crosscheck",
    "latency_table",
    "mac_table",
    "per_sample_macs",
]
