"""Image bytes for upload tests: a small JPEG, and a PNG header that claims a huge image."""

from __future__ import annotations


def png_header(width: int, height: int) -> bytes:
    """A PNG header claiming ``width`` x ``height`` pixels, with no image data (a decompression bomb's shape)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IEND", b""))


def jpeg_bytes(size: int = 40) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((size, size, 3)) * 255).astype(np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()
