"""Delta Distillation (Habibian, Ben Yahia, Abati, Gavves, Porikli; ECCV 2022, arXiv 2203.09594).

The first frame of a clip (the keyframe) runs the full network; every later frame runs, in each
chosen convolution, a cheap student on the change of that layer's input since the keyframe and
adds it to the keyframe's output.

Modules: ``delta`` (the delta layer, its students and gate, model conversion, clip and streaming
execution).
"""

__version__ = "0.1.0"
