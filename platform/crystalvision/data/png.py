"""Fast, deterministic PNG encoding of rendered RGB images.

Pillow's PNG writer tries every row filter and costs about 1.4 ms for a 224 px render (level 1), more than the
render itself. Rendered images are smooth and mostly background, so one fixed filter ("Up": each row minus the
row above) and zlib's run-length strategy compress them almost as well (about +5% size) 2-3x faster. The output is a
plain 8-bit RGB PNG that any reader decodes.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
FILTER_UP = 2


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def encode_png(image: np.ndarray, compress_level: int = 1) -> bytes:
    """PNG bytes of an (H, W, 3) uint8 image; identical pixels give identical bytes."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    h, w, _ = image.shape
    flat = np.ascontiguousarray(image).reshape(h, w * 3)
    rows = np.empty((h, w * 3 + 1), np.uint8)
    rows[:, 0] = FILTER_UP
    rows[0, 1:] = flat[0]
    np.subtract(flat[1:], flat[:-1], out=rows[1:, 1:])  # uint8 arithmetic wraps modulo 256, as PNG's filter does
    packer = zlib.compressobj(compress_level, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    data = packer.compress(rows.data) + packer.flush()
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit RGB, deflate, adaptive filtering, no interlace
    return SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")
