"""The core's command-line tools (console scripts): ``extract-frames``, ``build-lmdb``,
``build-lists``, ``effvid-synth`` and ``effvid-flops``. The libraries (``effvid.data``,
``effvid.flops``) import nothing from here."""
