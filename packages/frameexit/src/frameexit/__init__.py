"""FrameExit (Ghodrati et al., CVPR 2021): frames arrive one by one; after each, a gate decides
whether the video can be classified now.

Modules: ``model`` (the network and its exit gate), ``losses`` (per-step cross-entropy, gate
pseudo-labels), ``inference`` (batched early exit with measured MACs), ``training`` (the two
stages on the effvid engine), ``conversion`` (the authors' checkpoints), ``config``/``cli``.
"""

from frameexit.model import ExitGate, FrameExitModel

__all__ = ["ExitGate", "FrameExitModel"]
__version__ = "0.1.0"
