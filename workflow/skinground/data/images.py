"""Reading SLICE-3D's images: ``train-image.hdf5`` (key = ``isic_id``, value = JPEG bytes) or a
folder of ``<isic_id>.jpg`` files; :func:`open_images` returns the same lazy API for both, so
the whole HDF5 file is never held in memory.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from skinground.data.metadata import DataError, preview

log = logging.getLogger(__name__)


#: The most pixels an image may have to be decoded: SLICE-3D's tiles are about 240 px, a
#: phone photo 12-50 MP. A larger file is refused from its header, before decoding (a 48 kB
#: PNG can decode to gigabytes).
MAX_IMAGE_PIXELS = 64_000_000
#: Qwen2-VL's processor refuses an image whose sides differ by more than this factor
#: (transformers' ``smart_resize``): refused when the image is read, named, not in a model job.
MAX_ASPECT_RATIO = 200
# PIL's own limit (a warning at 89 MP, an error at 179 MP, raised while opening, with no name)
# is replaced by this one, checked in decode_image from the header with the image named.
Image.MAX_IMAGE_PIXELS = None
_EXIF_ORIENTATION = 0x0112


def _to_rgb(img: Image.Image) -> tuple[Image.Image, list[str]]:
    """8-bit RGB as the image means it, and what was converted: the EXIF orientation
    applied, 16-bit samples scaled to 8 bits (not clipped), float samples scaled from [0, 1]
    (the convention; a larger maximum is read as 8- or 16-bit values), transparency
    composited over white (not dropped with the colour it hid)."""
    notes = []
    if img.getexif().get(_EXIF_ORIENTATION, 1) != 1:
        img = ImageOps.exif_transpose(img)
        notes.append("EXIF orientation applied")
    if img.mode == "F":  # float samples: [0, 1] by convention, else 8- or 16-bit ranges
        samples = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0)
        top = float(samples.max(initial=0.0))
        scale = 255.0 if top <= 1.0 else (1.0 if top <= 255.0 else 255.0 / 65535.0)
        img = Image.fromarray(np.clip(np.rint(samples * scale), 0, 255).astype(np.uint8),
                              mode="L")
        notes.append(f"float samples scaled to 8 bits (x {scale:g})")
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        samples = np.asarray(img).astype(np.int64)
        img = Image.fromarray((np.clip(samples, 0, 65535) >> 8).astype(np.uint8), mode="L")
        notes.append("16-bit samples scaled to 8 bits")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
            img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        if rgba.getextrema()[3][0] < 255:
            img = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
            notes.append("transparency composited over white")
        else:
            img = rgba
    return img.convert("RGB"), notes


def decode_image(data: bytes | str | os.PathLike, name: str) -> Image.Image:
    """One image (bytes or a file) decoded to RGB (:func:`_to_rgb`, what it converted
    logged); ``DataError`` naming ``name`` when it is not an image, is damaged, or has more
    than :data:`MAX_IMAGE_PIXELS` pixels."""
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        with Image.open(source) as img:
            width, height = img.size
            if width * height > MAX_IMAGE_PIXELS:
                raise DataError(f"{name}: {width} x {height} pixels, more than the "
                                f"{MAX_IMAGE_PIXELS:,} an image may have")
            if max(width, height) > MAX_ASPECT_RATIO * max(1, min(width, height)):
                raise DataError(f"{name}: {width} x {height} pixels, an aspect ratio the "
                                f"model's processor refuses (above {MAX_ASPECT_RATIO}:1)")
            img.load()
            rgb, notes = _to_rgb(img)
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{name}: no such file") from None
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError,
            Image.DecompressionBombError) as exc:
        raise DataError(f"{name}: not a readable image ({exc})") from None
    for note in notes:
        log.info("%s: %s", name, note)
    return rgb


class ImageStore:
    """Lazy access to SLICE-3D images by ``isic_id``; use as a context manager."""

    source: Path

    def ids(self) -> set[str]:
        raise NotImplementedError

    def read_bytes(self, isic_id: str) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def read(self, isic_id: str) -> Image.Image:
        """Decode one image to RGB (:func:`decode_image`); a corrupt, truncated or oversized
        image raises DataError naming the store and the id."""
        return decode_image(self.read_bytes(isic_id), f"{self.source}: image {isic_id}")

    def __enter__(self) -> ImageStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class HDF5Images(ImageStore):
    """``train-image.hdf5``: one dataset per ``isic_id`` holding the JPEG bytes.

    The file is opened on first use (so the store can be handed to worker processes)
    and datasets are read one at a time.
    """

    def __init__(self, path: str | Path):
        self.source = Path(path)
        if not self.source.is_file():
            raise DataError(f"image file not found: {self.source}")
        self._file = None

    def _h5(self):
        if self._file is None:
            import h5py

            try:
                self._file = h5py.File(self.source, "r")
            except OSError as exc:
                raise DataError(f"{self.source}: not a readable HDF5 file: {exc}") from exc
        return self._file

    def ids(self) -> set[str]:
        return set(self._h5().keys())

    def read_bytes(self, isic_id: str) -> bytes:
        try:
            value = self._h5()[isic_id][()]
        except KeyError as exc:
            raise DataError(f"{self.source}: no image for {isic_id}") from exc
        if isinstance(value, np.ndarray):
            return value.tobytes()
        if isinstance(value, np.void):
            return value.tobytes()
        return bytes(value)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __getstate__(self):
        return {"source": self.source, "_file": None}


class JpegFolderImages(ImageStore):
    """A folder of ``<isic_id>.jpg`` files (SLICE-3D's ``train-image/image/``)."""

    def __init__(self, path: str | Path):
        self.source = Path(path)
        if not self.source.is_dir():
            raise DataError(f"image folder not found: {self.source}")

    def ids(self) -> set[str]:
        return {p.stem for p in self.source.glob("*.jpg")}

    def read_bytes(self, isic_id: str) -> bytes:
        try:
            return (self.source / f"{isic_id}.jpg").read_bytes()
        except FileNotFoundError as exc:
            raise DataError(f"{self.source}: no image for {isic_id}") from exc


def open_images(path: str | Path) -> ImageStore:
    """The image store at ``path``: an ``.hdf5``/``.h5`` file or a folder of JPEGs."""
    p = Path(path)
    if p.is_dir():
        return JpegFolderImages(p)
    if p.suffix.lower() in (".hdf5", ".h5"):
        return HDF5Images(p)
    raise DataError(f"images must be an .hdf5 file or a folder of .jpg files: {p}")


def match_images(store: ImageStore, ids: Iterable[str], metadata: Path, *,
                 max_unmatched: float) -> tuple[list[str], dict]:
    """The metadata ids that have an image, and the counts of rows without an image and of
    images without a row. Either share above ``max_unmatched`` raises DataError naming the
    first few ids (an incomplete download of either file)."""
    ids = list(ids)
    available = store.ids()
    no_image = sorted(set(ids) - available)
    no_row = sorted(available - set(ids))
    for what, found, total in (
            (f"{metadata} row(s) without an image in {store.source}", no_image, len(ids)),
            (f"image(s) in {store.source} without a row in {metadata}", no_row,
             len(available))):
        if found and len(found) > max_unmatched * total:
            raise DataError(f"{len(found)} {what} ({len(found) / total:.1%}, more than "
                            f"data.max_unmatched_images = {max_unmatched:g}): "
                            f"{preview(found)}")
        if found:
            log.warning("%d %s (within data.max_unmatched_images): %s", len(found), what,
                        preview(found))
    kept = [i for i in ids if i in available]
    return kept, {"rows_without_image": len(no_image), "images_without_row": len(no_row)}
