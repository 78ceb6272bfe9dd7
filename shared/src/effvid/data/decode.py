"""Image decoding/encoding with OpenCV (RGB uint8 arrays)."""

from __future__ import annotations

import cv2
import numpy as np

from effvid.data.errors import DataError

__all__ = ["decode_image", "encode_jpeg", "encode_png", "worker_init_fn"]


def decode_image(data: bytes, *, where: str) -> np.ndarray:
    """Encoded JPEG/PNG bytes -> (H, W, 3) RGB uint8. ``where`` names the frame in errors."""
    if not data:
        raise DataError(f"{where}: empty image data (expected JPEG or PNG bytes)")
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(f"{where}: corrupt image data ({len(data)} bytes could not be decoded as JPEG/PNG)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def encode_jpeg(rgb: np.ndarray, *, quality: int = 95) -> bytes:
    """(H, W, 3) RGB uint8 -> JPEG bytes (deterministic for a given input and quality)."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise DataError("JPEG encoding failed")
    return buf.tobytes()


def encode_png(image: np.ndarray) -> bytes:
    """(H, W) label map or (H, W, 3) RGB -> lossless PNG bytes."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise DataError("PNG encoding failed")
    return buf.tobytes()


def worker_init_fn(_: int) -> None:
    """DataLoader worker setup: OpenCV's own thread pool would oversubscribe the cores."""
    cv2.setNumThreads(0)
