"""Images as the run decodes them (``images.decode_image``: the store and ``skinground query``):
a decompression bomb or an oversized image is refused from its header, naming it; EXIF
orientation, 16-bit samples and transparency are converted as the image means them."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
from PIL import Image

from skinground.data.images import MAX_IMAGE_PIXELS, decode_image, open_images
from skinground.data.metadata import DataError
from skinground.retrieval.query import read_image


def png(img: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kwargs)
    return buf.getvalue()


def test_a_decompression_bomb_is_refused_from_its_header(tmp_path):
    bomb = png(Image.new("L", (20_000, 20_000)), optimize=True)  # tens of kB, 400 MP
    assert len(bomb) < 1_000_000
    with pytest.raises(DataError, match=r"bomb: 20000 x 20000 pixels, more than the "
                                        r"64,000,000 an image may have"):
        decode_image(bomb, "bomb")
    (tmp_path / "bomb.png").write_bytes(bomb)
    with pytest.raises(DataError, match="bomb.png: 20000 x 20000 pixels"):
        read_image(tmp_path / "bomb.png")  # skinground query's reader: the same rule


def test_an_image_just_over_the_limit_is_refused_and_one_under_is_not():
    side = int(MAX_IMAGE_PIXELS ** 0.5)
    with pytest.raises(DataError, match="pixels, more than"):
        decode_image(png(Image.new("L", (side + 1, side + 1))), "big")
    assert decode_image(png(Image.new("L", (64, 64))), "small").size == (64, 64)


def test_an_aspect_ratio_the_processor_refuses_is_named(tmp_path):
    """A 250 x 1 image passed the manifest and failed in embed_shard, naming no image: it is
    refused where it is read, named (Qwen2-VL's processor refuses above 200:1)."""
    with pytest.raises(DataError, match=r"ISIC_1: 250 x 1 pixels, an aspect ratio the model's "
                                        r"processor refuses \(above 200:1\)"):
        decode_image(png(Image.new("RGB", (250, 1))), "ISIC_1")
    assert decode_image(png(Image.new("RGB", (1, 200))), "ok").size == (1, 200)


def test_exif_orientation_is_applied(caplog):
    img = Image.new("RGB", (40, 20), "black")
    img.paste((255, 0, 0), (0, 0, 20, 20))  # red on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display turned 90 degrees clockwise
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif, quality=95)
    with caplog.at_level(logging.INFO, logger="skinground.data.images"):
        out = decode_image(buf.getvalue(), "phone.jpg")
    assert out.size == (20, 40)
    top, bottom = np.asarray(out)[5, 10], np.asarray(out)[35, 10]
    assert top[0] > 200 and bottom[0] < 60  # the red half is on top after the rotation
    assert "phone.jpg: EXIF orientation applied" in caplog.text


def test_16_bit_samples_are_scaled_not_clipped(caplog):
    ramp = (np.arange(256, dtype=np.uint16).reshape(16, 16) * 257)  # 0 .. 65535
    data = png(Image.fromarray(ramp))  # mode I;16
    with caplog.at_level(logging.INFO, logger="skinground.data.images"):
        out = np.asarray(decode_image(data, "scan.png"))
    assert out.shape == (16, 16, 3)
    np.testing.assert_array_equal(out[..., 0].reshape(-1), np.arange(256))  # not all 255
    assert "16-bit samples scaled to 8 bits" in caplog.text


def test_transparency_is_composited_over_white(caplog):
    img = Image.new("RGBA", (8, 8), (255, 0, 0, 0))  # transparent red: should not show
    img.paste((0, 0, 255, 255), (0, 0, 4, 8))  # opaque blue on the left
    with caplog.at_level(logging.INFO, logger="skinground.data.images"):
        out = np.asarray(decode_image(png(img), "cutout.png"))
    assert out[4, 1].tolist() == [0, 0, 255] and out[4, 6].tolist() == [255, 255, 255]
    assert "transparency composited over white" in caplog.text


def test_the_store_refuses_a_bomb_naming_the_id(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "ISIC_0000001.jpg").write_bytes(png(Image.new("L", (20_000, 20_000)),
                                                  optimize=True))
    with open_images(folder) as store, pytest.raises(DataError,
                                                     match="image ISIC_0000001: 20000 x 20000"):
        store.read("ISIC_0000001")


def test_a_float_image_in_0_1_is_scaled_not_black(tmp_path):
    """A float TIFF with values in [0, 1] decoded as all black; it is scaled to 8 bits."""
    import numpy as np

    ramp = np.linspace(0.0, 1.0, 64 * 64, dtype=np.float32).reshape(64, 64)
    path = tmp_path / "float.tif"
    Image.fromarray(ramp, mode="F").save(path)
    rgb = np.asarray(decode_image(path, "float.tif"))
    assert rgb.min() == 0 and rgb.max() == 255
    assert abs(int(rgb[32, 0, 0]) - round(255 * ramp[32, 0])) <= 1


def test_a_fifo_is_refused_before_it_is_read(tmp_path):
    """A FIFO given as the query image hung forever (open waits for a writer)."""
    import os

    from skinground.core.errors import InputError

    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="pipe.jpg: not a regular file"):
        read_image(fifo)
    with pytest.raises(InputError, match=f"{tmp_path}: not a regular file"):
        read_image(tmp_path)
