"""effvid: the shared core of four adaptive video-inference methods.

Sub-packages: ``config``/``cli`` (typed YAML config and Fire entry points), ``data`` (storage,
decoding, sampling, datasets, synthetic benchmark), ``models`` (backbone registry), ``flops``
(MAC accounting), ``metrics``, ``engine`` (ignite), ``plots``. Import them explicitly; this
module imports nothing heavy.
"""

__version__ = "0.1.0"
