"""MAC accounting on ``torch.utils.flop_counter.FlopCounterMode``.

Unit: the multiply-accumulate (MAC). FlopCounterMode counts 2 FLOPs per multiply-accumulate of the
matrix ops (convolutions, ``mm``/``addmm``/``bmm``/``matmul``, attention); it does not count
BatchNorm, activations, pooling or element-wise ops. Every figure here is its FLOP count / 2,
which is exactly the convention of torchvision's published ``_ops`` (e.g. ResNet-50: 4.089 G).

* :func:`count_macs` - one forward, one number;
* :func:`mac_table` - per-module table (innermost module that ran each op), summing to the total,
  computable on the ``meta`` device;
* :class:`UnitCosts` / :func:`per_sample_macs` / :func:`crosscheck` - dynamic accounting for
  models whose cost depends on the input (frames processed, crop sizes, bit widths);
* :func:`bitops` - MACs x weight bits x activation bits for quantized layers.
"""

from effvid.flops.counter import MacRow, MacTable, count_macs, mac_table
from effvid.flops.dynamic import UnitCosts, bitops, crosscheck, per_sample_macs

__all__ = [
    "MacRow",
    "MacTable",
    "UnitCosts",
    "bitops",
    "count_macs",
    "crosscheck",
    "mac_table",
    "per_sample_macs",
]
