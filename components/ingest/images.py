"""One source file -> the stored image (a 3-channel baseline RGB JPEG), or the reason why not.

Detection is by content, never by file name: ImageNet's CMYK JPEGs and its PNG named `.JPEG` are
found the same way as crawled grayscale, palette, RGBA, 16-bit, BMP, GIF, WebP or progressive files.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile

from components.ingest.similarity import MIN_SIDE, image_hashes
from components.ingest.similarity import SIZE as HASH_SIDE

# Decode what is really there; a file that ends early is broken, not "mostly fine".
ImageFile.LOAD_TRUNCATED_IMAGES = False
# The decode budget below is checked from the header of every file before any pixel is decoded,
# against a setting; Pillow's own global pixel limit would only duplicate it with another number.
Image.MAX_IMAGE_PIXELS = None
# 512 MiB at the peak of a conversion: a 64 MP RGB photo (8 bytes a pixel, see below). ImageNet's
# largest images are ~32 MP; a conversion thread per core may each hold this much at once.
MAX_DECODED_BYTES = 512 * 2**20
ROWS_AT_ONCE = 256  # 16-bit and float images are scaled to 8 bits this many rows at a time

CHECK_MODE = "L"  # a kept JPEG is checked by a decode in gray (the hash is of the gray image)


def decoded_bytes_per_pixel(mode: str) -> int:
    """What Pillow holds per pixel of a decoded image in `mode` (RGB is stored in 4 bytes)."""
    if mode in ("1", "L", "P"):
        return 1
    if mode.startswith("I;16"):
        return 2
    return 4  # RGB, RGBA, CMYK, YCbCr, LAB, HSV, LA, PA, I, F


def peak_bytes_per_pixel(mode: str, transparency: bool) -> int:
    """Bytes a pixel costs at the peak of converting an image of `mode` to an RGB JPEG: the
    decoded image, the 8-bit gray copy of a 16-bit or float one, the RGB copy (4 bytes held),
    and for transparency the RGBA copy, the white background and their composite."""
    peak = decoded_bytes_per_pixel(mode) + 4
    if mode.startswith("I") or mode == "F":
        peak += 1
    if transparency or mode in ("P", "RGBA", "LA", "PA"):
        peak += 12
    return peak


JPEG_QUALITY = 95


class BadImage(ValueError):
    """A source file that cannot become a training example; the message is the quarantine reason."""


@dataclass(frozen=True)
class StoredImage:
    jpeg: bytes  # baseline RGB JPEG
    height: int
    width: int
    source_format: str  # what the file really was, e.g. "JPEG", "PNG", "JPEG/CMYK"
    reencoded: bool
    resized: bool
    source_size: tuple[int, int]  # (width, height) of the file as decoded: boxes refer to it
    hashes: tuple[int, ...] | None = None  # perceptual (components/ingest/similarity.py)


def _sniff_reason(data: bytes) -> str:
    head = data[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body")):
        return "not an image: an HTML/XML page saved with an image name"
    if head[:1] in (b"{", b"["):
        return "not an image: JSON text saved with an image name"
    return "not an image: unrecognized file format"


def _is_baseline_jpeg(data: bytes) -> bool:
    """True if the first frame marker is SOF0 (baseline DCT), the only kind kept byte-for-byte."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return False
        marker = data[i + 1]
        if marker == 0xC0:
            return True
        if marker in (0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            return False
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return False


def _to_gray8(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer or float gray scaled over its full range to 8 bits, never clipped.

    Done a band of rows at a time, so that the float copy costs a band, not a second image.
    """
    pixels = np.asarray(image)  # (H, W) in the decoded dtype
    peak = max((float(pixels[r : r + ROWS_AT_ONCE].max()) for r in range(0, len(pixels),
               ROWS_AT_ONCE)), default=0.0)  # fmt: skip
    if image.mode.startswith("I;16") or 255 < peak <= 65535:
        top = 65535.0
    elif image.mode == "F" and peak <= 1.0:
        top = 1.0
    else:
        top = max(peak, 1.0)
    gray = np.empty(pixels.shape, np.uint8)
    for r in range(0, len(pixels), ROWS_AT_ONCE):
        band = pixels[r : r + ROWS_AT_ONCE].astype(np.float32) * np.float32(255.0 / top) + 0.5
        gray[r : r + ROWS_AT_ONCE] = np.clip(band, 0, 255)
    return Image.fromarray(gray, mode="L")


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any decoded PIL image as 8-bit RGB; transparency is composited onto white."""
    if image.mode.startswith("I") or image.mode == "F":
        image = _to_gray8(image)
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def to_stored_image(
    data: bytes, max_side: int | None = None, max_bytes: int = MAX_DECODED_BYTES
) -> StoredImage:
    """Checks and converts one file's bytes; raises BadImage with the quarantine reason.

    Baseline 3-channel JPEGs that decode completely are kept byte-for-byte (no generation loss,
    no encode cost); everything else decodable is converted to RGB and encoded as baseline JPEG.
    Images whose longer side exceeds `max_side` are downscaled to it. An image whose decoded
    pixels (width x height x bytes per pixel, read from the header) exceed `max_bytes` is
    refused before any decoding: a 200 KB PNG can declare 10,000 x 10,000 16-bit pixels. The
    bytes counted are those held at the peak of a conversion (`peak_bytes_per_pixel`).
    A MemoryError is this machine's limit, not the file's fault: it propagates (the shard fails
    and is retried), it never quarantines the file.
    """
    if not data:
        raise BadImage("empty file")
    keep = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            source_format = image.format or "unknown"
            if getattr(image, "n_frames", 1) > 1:
                image.seek(0)  # animated GIF/WebP, multi-page TIFF, MPO: the first frame
            width, height = image.size
            per_pixel = peak_bytes_per_pixel(image.mode, "transparency" in image.info)
            if width * height * per_pixel > max_bytes:
                raise BadImage(
                    f"too large: {width}x{height}x{per_pixel} bytes > budget {max_bytes:,} bytes "
                    "(max_image_bytes)"
                )
            too_big = max_side is not None and max(width, height) > max_side
            keep = (
                source_format == "JPEG"
                and image.mode == "RGB"
                and not too_big
                and _is_baseline_jpeg(data)
                # libjpeg (Pillow) accepts a stream whose end-of-image marker is missing when no
                # block is; TensorFlow's decoder rejects it. Such files are re-encoded instead.
                and data.rstrip(b"\x00\r\n\t ").endswith(b"\xff\xd9")
            )
            if keep:
                # Kept as they are, so only checked: decoding at 1/8 scale, in gray, still runs
                # libjpeg's entropy decoder over every coefficient of every block of every
                # component (they are interleaved in the scan: a truncated or corrupt stream
                # fails the same way); only the inverse DCT shrinks and the chroma's is skipped,
                # with upsampling and color conversion. That is 2-3x faster than a full decode,
                # which is most of ingestion's work. The smallest scale that keeps HASH_SIDE
                # pixels a side (1/8 for a photo; a small image decodes larger): the perceptual
                # hash, which is of the gray image, is taken from this decode.
                image.draft(CHECK_MODE, (HASH_SIDE, HASH_SIDE))
            image.load()
    except BadImage:
        raise
    except Image.DecompressionBombError as err:  # Pillow's own limits (e.g. PNG text chunks)
        raise BadImage(f"image too large to decode safely: {err}") from err
    except Image.UnidentifiedImageError as err:
        raise BadImage(_sniff_reason(data)) from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        if "out of memory" in str(err):
            # Pillow's decoders report a failed allocation as OSError("out of memory
            # when reading image file"): the machine's limit, like a MemoryError.
            raise MemoryError(f"decoding a {source_format_of(data)}: {err}") from err
        raise BadImage(f"corrupt or truncated {source_format_of(data)}: {err}") from err
    except MemoryError:  # this machine's limit, not the file's fault: fail, never quarantine
        raise
    except Exception as err:  # a decoder bug on hostile input is still a bad file, not a crash
        raise BadImage(f"undecodable image: {type(err).__name__}: {err}") from err
    if width < 1 or height < 1:
        raise BadImage(f"image has no pixels ({width}x{height})")
    if keep:  # hashed from the check's small decode
        return StoredImage(data, height, width, source_format, False, False, (width, height),
                           _hashes(image, width, height))  # fmt: skip
    if image.mode not in ("RGB",):
        source_format = f"{source_format}/{image.mode}"
    try:
        rgb = _to_rgb(image)
        if too_big:
            scale = max_side / max(width, height)
            rgb = rgb.resize(
                (max(1, round(width * scale)), max(1, round(height * scale))), Image.BICUBIC
            )
        out = io.BytesIO()
        rgb.save(out, format="JPEG", quality=JPEG_QUALITY, progressive=False, optimize=False)
    except MemoryError:
        raise
    except Exception as err:  # an exotic mode Pillow decodes but cannot convert
        raise BadImage(f"cannot convert {source_format} to RGB JPEG: {err}") from err
    return StoredImage(
        out.getvalue(), rgb.height, rgb.width, source_format, True, too_big, (width, height),
        _hashes(rgb, width, height),
    )  # fmt: skip


def _hashes(image: Image.Image, width: int, height: int) -> tuple[int, ...] | None:
    """Perceptual hashes of images big enough for them to mean something (MIN_SIDE), from a
    decode of at least HASH_SIDE pixels a side."""
    if min(width, height) < MIN_SIDE or min(image.size) < HASH_SIDE:
        return None
    return image_hashes(image)


def source_format_of(data: bytes) -> str:
    """A best guess of the format from magic bytes, only for error messages."""
    for magic, name in (
        (b"\xff\xd8", "JPEG"),
        (b"\x89PNG", "PNG"),
        (b"GIF8", "GIF"),
        (b"BM", "BMP"),
        (b"RIFF", "WebP"),
    ):
        if data.startswith(magic):
            return name
    return "image"
