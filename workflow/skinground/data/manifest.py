"""The data stage: the metadata matched with the images, as the manifest and its report."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import polars as pl

from skinground.core.progress import iter_progress
from skinground.data.attributes import ID_COLUMN
from skinground.data.images import match_images, open_images
from skinground.data.metadata import read_metadata

log = logging.getLogger(__name__)


def build_manifest(
    metadata: str | Path, images: str | Path, attributes: list[str], *,
    zero_is_missing: Iterable[str], verify_decode: bool, max_unmatched: float = 0.0,
) -> tuple[pl.DataFrame, dict]:
    """The data stage: read and check the metadata, match its rows with the images (rows
    without an image are dropped, within ``max_unmatched``), and, with ``verify_decode``,
    decode every image once. Returns the manifest and the data report."""
    metadata = Path(metadata)
    frame, report = read_metadata(metadata, attributes, zero_is_missing)
    with open_images(images) as store:
        kept, unmatched = match_images(store, frame[ID_COLUMN].to_list(), metadata,
                                       max_unmatched=max_unmatched)
        if len(kept) < frame.height:
            frame = frame.filter(pl.col(ID_COLUMN).is_in(kept))
        if verify_decode:
            for isic_id in iter_progress(kept, "decoding images", log=log):
                store.read(isic_id)
        report["image_source"] = str(store.source)
    report.update(unmatched, images=frame.height)
    report["verified_decode"] = verify_decode
    return frame, report
