"""`read_image`: every pixel format becomes correct 8-bit RGB, and every kind of bad file raises a clear ImageError."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from torchspine.data.image_io import ImageError, read_image


def _hwc(t: torch.Tensor) -> np.ndarray:
    assert t.dtype == torch.uint8 and t.ndim == 3 and t.shape[0] == 3
    return t.permute(1, 2, 0).numpy()


def _quadrants(h: int = 16, w: int = 32) -> np.ndarray:
    """Four flat 8x8-aligned colour blocks (JPEG reproduces them almost exactly)."""
    a = np.zeros((h, w, 3), dtype=np.uint8)
    a[: h // 2, : w // 2] = (255, 0, 0)
    a[: h // 2, w // 2 :] = (0, 255, 0)
    a[h // 2 :, : w // 2] = (0, 0, 255)
    a[h // 2 :, w // 2 :] = (255, 255, 255)
    return a


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def test_rgb_png_exact(tmp_path: Path):
    a = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "a.png")
    assert np.array_equal(_hwc(read_image(tmp_path / "a.png")), a)
    assert read_image(str(tmp_path / "a.png")).shape == (3, 7, 5)  # str paths work too


def test_grayscale_becomes_three_equal_channels(tmp_path: Path):
    g = np.arange(0, 240, 10, dtype=np.uint8).reshape(4, 6)
    Image.fromarray(g).save(tmp_path / "g.png")
    out = _hwc(read_image(tmp_path / "g.png"))
    assert all(np.array_equal(out[:, :, c], g) for c in range(3))


def test_bilevel_image(tmp_path: Path):
    Image.fromarray(np.eye(4, dtype=bool)).save(tmp_path / "b.png")
    out = _hwc(read_image(tmp_path / "b.png"))
    assert out[0, 0].tolist() == [255, 255, 255] and out[0, 1].tolist() == [0, 0, 0]


def test_palette_image(tmp_path: Path):
    img = Image.new("P", (3, 2))
    img.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    img.putdata([0, 1, 0, 1, 1, 0])
    img.save(tmp_path / "p.png")
    out = _hwc(read_image(tmp_path / "p.png"))
    assert out[0, 0].tolist() == [10, 20, 30] and out[0, 1].tolist() == [200, 100, 50]


def test_palette_with_transparency_drops_alpha(tmp_path: Path):
    img = Image.new("P", (2, 1))
    img.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    img.putdata([0, 1])
    img.save(tmp_path / "pt.png", transparency=0)
    out = _hwc(read_image(tmp_path / "pt.png"))
    assert out[0, 0].tolist() == [10, 20, 30]  # the transparent entry keeps its colour (alpha dropped, as TF does)


def test_rgba_drops_alpha(tmp_path: Path):
    a = np.zeros((2, 2, 4), dtype=np.uint8)
    a[..., 0], a[..., 1], a[..., 2] = 200, 50, 25
    a[0, 0, 3], a[1, 1, 3] = 0, 255
    Image.fromarray(a).save(tmp_path / "rgba.png")
    out = _hwc(read_image(tmp_path / "rgba.png"))
    assert (out == np.array([200, 50, 25], dtype=np.uint8)).all()


def test_gray_alpha_drops_alpha(tmp_path: Path):
    Image.new("LA", (3, 3), (77, 0)).save(tmp_path / "la.png")
    assert (_hwc(read_image(tmp_path / "la.png")) == 77).all()


def test_cmyk_jpeg(tmp_path: Path):
    a = _quadrants()
    Image.fromarray(a).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    out = _hwc(read_image(tmp_path / "cmyk.jpg"))
    assert np.abs(out.astype(int) - a).max() <= 12


def test_16bit_png_scaled_by_bit_depth(tmp_path: Path):
    v = np.array([[0, 257, 1000, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(v).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    out = _hwc(read_image(tmp_path / "g16.png"))
    # Rescaled, not clipped: 1000 is dark grey (4), not saturated white.
    assert out[0, :, 0].tolist() == [0, 1, 4, 128, 255]
    assert (out[..., 0] == out[..., 2]).all()


def test_32bit_integer_tiff(tmp_path: Path):
    v = np.array([[0, 2**30, 2**31 - 1]], dtype=np.int32)
    Image.fromarray(v, mode="I").save(tmp_path / "i32.tif")
    assert _hwc(read_image(tmp_path / "i32.tif"))[0, :, 0].tolist() == [0, 128, 255]


def test_float_tiff_in_unit_range(tmp_path: Path):
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32)).save(tmp_path / "f.tif")
    assert _hwc(read_image(tmp_path / "f.tif"))[0, :, 0].tolist() == [0, 128, 255]


def test_exif_orientation_6_rotates(tmp_path: Path):
    a = _quadrants(16, 32)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(a).save(tmp_path / "rot.jpg", quality=100, subsampling=0, exif=exif)
    out = _hwc(read_image(tmp_path / "rot.jpg"))
    assert out.shape == (32, 16, 3)  # height and width swapped
    expected = np.rot90(a, k=-1)  # clockwise
    assert np.abs(out.astype(int) - expected).max() <= 8
    # Top-left of the stored image (red) ends up at the top right once upright.
    assert out[0, -1, 0] > 200 and out[0, -1, 2] < 50
    raw = _hwc(read_image(tmp_path / "rot.jpg", exif_transpose=False))
    assert raw.shape == (16, 32, 3)


def test_truncated_file(tmp_path: Path):
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "t.jpg")
    data = (tmp_path / "t.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=r"t\.jpg: corrupt or truncated"):
        read_image(tmp_path / "t.jpg")


def test_zero_byte_file(tmp_path: Path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty\.jpg: image file is empty"):
        read_image(tmp_path / "empty.jpg")


def test_non_image_with_jpg_name(tmp_path: Path):
    (tmp_path / "notes.jpg").write_text("these are not pixels\n")
    with pytest.raises(ImageError, match=r"notes\.jpg: not an image file"):
        read_image(tmp_path / "notes.jpg")


def test_missing_file_and_directory(tmp_path: Path):
    with pytest.raises(ImageError, match=r"nope\.png: image file does not exist"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="is a directory"):
        read_image(tmp_path)


def test_corrupt_png_data(tmp_path: Path):
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(tmp_path / "c.png")
    data = bytearray((tmp_path / "c.png").read_bytes())
    data[60:70] = b"\xff" * 10  # inside the IDAT stream
    (tmp_path / "c.png").write_bytes(bytes(data))
    with pytest.raises(ImageError, match=r"c\.png"):
        read_image(tmp_path / "c.png")


def test_decompression_bomb_header(tmp_path: Path):
    # A valid PNG header claiming 100000 x 100000 pixels: PIL refuses it at open, before allocating anything.
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    data = (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b""))
        + _png_chunk(b"IEND", b"")
    )
    (tmp_path / "bomb.png").write_bytes(data)
    with pytest.raises(ImageError, match=r"bomb\.png: image is too large to decode safely"):
        read_image(tmp_path / "bomb.png")


@pytest.mark.parametrize("limit", [60, 20], ids=["warning-zone", "error-zone"])
def test_decompression_bomb_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: int):
    # 80 pixels: between 1x and 2x the limit PIL only warns; read_image still refuses.
    Image.new("RGB", (10, 8)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    with pytest.raises(ImageError, match="too large"):
        read_image(tmp_path / "big.png")
