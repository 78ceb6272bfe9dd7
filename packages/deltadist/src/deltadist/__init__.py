"""Delta Distillation (Habibian, Ben Yahia, Abati, Gavves, Porikli; ECCV 2022, arXiv 2203.09594).

The first frame of a clip (the keyframe) runs the full network; every later frame runs, in each
chosen convolution, a cheap student on the change of that layer's input since the keyframe and
adds it to the keyframe's output.

Modules: ``delta`` (the delta layer, model conversion, clip and streaming execution, deploy),
``students`` (rank rules, SVD initialisation, the gate), ``models`` (DDRNet, HRNet, a tiny CNN),
``conversion`` (the authors' checkpoints), ``cost`` (per-layer costs, MACs of what runs),
``losses`` (the training objective), ``data`` (the synthetic-segmentation format, training pairs),
``config`` / ``build`` (command schemas, the model from its config), ``training`` (on the core's
engine), ``evaluation`` (the pair protocol and streaming), ``cli`` / ``demo`` (the commands).
"""

from deltadist.delta import DeltaConv, DeltaStream, convert_to_delta, deploy, forward_clip, revert_to_teacher

__all__ = ["DeltaConv", "DeltaStream", "convert_to_delta", "deploy", "forward_clip", "revert_to_teacher"]
__version__ = "0.1.0"
