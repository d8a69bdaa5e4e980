"""Merged embedding spaces on disk, read a block or a set of rows at a time, never whole.

A merged space (``embed/{model}/{split}/{space}.npz``) is an uncompressed ``.npz`` holding
``ids`` (the split's sorted isic_ids) and ``vectors`` (float16 [N, d], row i = ``ids[i]``).
At paper scale one space is 282,564 x 3,584 float16 = 2.0 GB (4.05 GB as float32), and a
retrieval method reads up to 17 of them: so nothing here loads a space whole.

- :func:`merge_space` writes a space from its embedding shards (``skinground.data.shards``)
  streaming, one shard's member in memory at a time. Peak: ``(N / shards) * d * 2`` bytes
  plus the ids.
- :class:`Space` opens one: the ids in memory (N short strings), the vectors as a byte range of
  the file. :meth:`Space.rows` reads a contiguous block with one ``read`` (no mapping is left
  behind); :meth:`Space.take` gathers sorted rows through a memory map that is dropped again
  at once, so the pages it touched leave the process's resident set with it.
- :class:`ArrayRows` gives an in-memory array the same interface, for tests and callers that
  hold small arrays.
"""

from __future__ import annotations

import os
import struct
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from numpy.lib import format as npy

from skinground.core import provenance
from skinground.core.io import atomic_path
from skinground.data.shards import ShardError

#: The float type of every stored embedding.
STORED = np.dtype("<f2")
#: A zip local file header: signature, versions, flags, method, time, date, crc, sizes,
#: then the lengths of the name and of the extra field.
_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")


def _member_data_offset(path: Path, info: zipfile.ZipInfo) -> int:
    """Byte offset of a stored (uncompressed) zip member's data in the file."""
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        header = _LOCAL_HEADER.unpack(f.read(_LOCAL_HEADER.size))
    if header[0] != b"PK\x03\x04":
        raise ShardError(f"{path}: member {info.filename} has no valid zip header")
    return info.header_offset + _LOCAL_HEADER.size + header[9] + header[10]


def _read_npy_header(f) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = npy.read_magic(f)
    if version == (1, 0):
        return npy.read_array_header_1_0(f)
    return npy.read_array_header_2_0(f)


def _npy_header(shape: tuple[int, ...], dtype: np.dtype) -> dict:
    return {"descr": npy.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
            "shape": tuple(int(s) for s in shape)}


#: What to do about a damaged space or shard.
REBUILD = "delete it and rerun the workflow to rebuild it"
#: The members of a shard or space that are not embedding spaces.
_NOT_SPACES = ("ids.npy", f"{provenance.NPZ_MEMBER}.npy")


def read_record(path: str | os.PathLike) -> dict | None:
    """The record of what made a shard or merged space (``skinground.core.provenance``); None
    where it holds none."""
    try:
        with np.load(path) as f:
            if provenance.NPZ_MEMBER not in f.files:
                return None
            return provenance.decode(str(f[provenance.NPZ_MEMBER]))
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise ShardError(f"{path}: not a readable embedding file ({err}); {REBUILD}") from err


def _members(path: Path) -> dict[str, zipfile.ZipInfo]:
    try:
        with zipfile.ZipFile(path) as zf:
            return {info.filename: info for info in zf.infolist()}
    except (OSError, zipfile.BadZipFile) as err:
        raise ShardError(f"{path}: not a readable embedding file ({err}); {REBUILD}") from err


def member_shape(path: str | os.PathLike, name: str) -> tuple[tuple[int, ...], np.dtype]:
    """``(shape, dtype)`` of the array ``name`` in an ``.npz`` file, from its header alone."""
    path = Path(path)
    members = _members(path)
    if f"{name}.npy" not in members:
        raise ShardError(f"{path} has no embedding space {name!r} (it has "
                         f"{', '.join(m[:-4] for m in members if m not in _NOT_SPACES)})")
    with zipfile.ZipFile(path) as zf, zf.open(f"{name}.npy") as f:
        shape, _, dtype = _read_npy_header(f)
    return shape, dtype


class _Rows:
    """What both readers share: ``shape`` = (rows, width)."""

    shape: tuple[int, int]

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def dim(self) -> int:
        return self.shape[1]


class Space(_Rows):
    """One merged space on disk: ``ids`` in memory, vectors read on demand (float16 rows)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        members = _members(self.path)
        for need in ("ids.npy", "vectors.npy"):
            if need not in members:
                raise ShardError(f"{self.path}: not a merged embedding space (no {need[:-4]})")
        info = members["vectors.npy"]
        if info.compress_type != zipfile.ZIP_STORED:
            raise ShardError(f"{self.path}: vectors are compressed; merged spaces are written "
                             "uncompressed (rerun merge_embeddings)")
        with np.load(self.path) as f:
            self.ids: list[str] = f["ids"].tolist()
        with open(self.path, "rb") as f:
            f.seek(_member_data_offset(self.path, info))
            shape, fortran, dtype = _read_npy_header(f)
            self._offset = f.tell()
        if len(shape) != 2 or fortran or np.dtype(dtype) != STORED:
            raise ShardError(f"{self.path}: vectors must be C-ordered float16 [N, d], found "
                             f"{dtype} {shape}")
        if shape[0] != len(self.ids):
            raise ShardError(f"{self.path}: {shape[0]} vectors for {len(self.ids)} ids")
        self.shape = (int(shape[0]), int(shape[1]))

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` (float16, a fresh array), read with one call."""
        start, stop = max(0, int(start)), min(int(stop), len(self))
        if stop <= start:
            return np.empty((0, self.dim), STORED)
        count = (stop - start) * self.dim
        out = np.fromfile(self.path, dtype=STORED, count=count,
                          offset=self._offset + start * self.dim * STORED.itemsize)
        if out.size != count:
            raise ShardError(f"{self.path}: file is cut short (rows {start}:{stop})")
        return out.reshape(stop - start, self.dim)

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The given rows (float16 [len(rows), d], a fresh array); the memory map used is
        closed before returning."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"{self.path}: row out of range 0..{len(self) - 1}")
        mapped = np.memmap(self.path, dtype=STORED, mode="r", offset=self._offset,
                           shape=self.shape)
        out = np.array(mapped[rows])
        del mapped  # the last reference: the mapping is closed here, not when collected
        return out


class ArrayRows(_Rows):
    """An in-memory [N, d] array behind :class:`Space`'s reading interface."""

    def __init__(self, array: np.ndarray, ids: Sequence[str] | None = None):
        self.array = np.asarray(array)
        if self.array.ndim != 2:
            raise ValueError(f"expected a 2-D array [n, d], got shape {self.array.shape}")
        self.ids = list(ids) if ids is not None else None
        self.shape = self.array.shape

    def rows(self, start: int, stop: int) -> np.ndarray:
        return self.array[start:stop]

    def take(self, rows: np.ndarray) -> np.ndarray:
        return self.array[np.asarray(rows, dtype=np.int64)]


Rows = Space | ArrayRows


def as_rows(x) -> Rows:
    """A :class:`Space` or :class:`ArrayRows` as it is; an array wrapped."""
    return x if isinstance(x, Space | ArrayRows) else ArrayRows(x)


def blocks(x: Rows, size: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, rows)`` over ``x`` in blocks of ``size`` rows."""
    size = max(1, int(size))
    for start in range(0, len(x), size):
        yield start, x.rows(start, start + size)


def block_rows(dim: int, budget_bytes: int, itemsize: int = 4) -> int:
    """Rows of width ``dim`` that fit ``budget_bytes`` (at least 1)."""
    return max(1, int(budget_bytes) // (int(dim) * itemsize))


# ---------------------------------------------------------------- writing


def merge_space(paths: Sequence[str | os.PathLike], space: str,
                out: str | os.PathLike) -> tuple[int, int]:
    """Write the merged ``space`` of the embedding shards ``paths`` (in order) to ``out``,
    one shard's member in memory at a time; returns the shape ``(N, d)``.

    Peak memory: the largest shard's member (``N / shards x d x 2`` bytes) and the ids.
    Raises ``ShardError`` naming a shard without the space, with another width, or whose ids
    repeat an earlier shard's.
    """
    ids: list[str] = []
    shapes = []
    records = [read_record(p) for p in paths]
    for p, record in zip(paths, records, strict=True):
        if record != records[0]:
            raise ShardError(f"{p} was made otherwise than {paths[0]} "
                             f"({', '.join(provenance.differing(records[0], record))}): rerun "
                             "its embedding jobs")
    for p in paths:
        shape, _ = member_shape(p, space)
        with np.load(p) as shard:
            part = shard["ids"].tolist()
        if len(shape) != 2 or shape[0] != len(part):
            raise ShardError(f"{p}: space {space!r} has shape {shape} for {len(part)} ids")
        if shapes and shape[1] != shapes[0][1]:
            raise ShardError(f"{p}: space {space!r} is {shape[1]} wide, the first shard's is "
                             f"{shapes[0][1]}")
        ids.extend(part)
        shapes.append(shape)
    if len(set(ids)) != len(ids):
        raise ShardError(f"shards {[str(p) for p in paths]} share ids")
    shape = (len(ids), shapes[0][1] if shapes else 0)
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED,
                                                  allowZip64=True) as zf:
        with zf.open("ids.npy", "w", force_zip64=True) as f:
            npy.write_array(f, np.array(ids, dtype=str))
        with zf.open(f"{provenance.NPZ_MEMBER}.npy", "w") as f:
            npy.write_array(f, np.array(provenance.encode(records[0] if records else None)))
        with zf.open("vectors.npy", "w", force_zip64=True) as f:
            npy.write_array_header_2_0(f, _npy_header(shape, STORED))
            for p in paths:
                with np.load(p) as shard:
                    part = np.ascontiguousarray(shard[space], dtype=STORED)
                f.write(memoryview(part).cast("B"))
                del part
    return shape




def read_ids(path: str | os.PathLike) -> list[str]:
    """The ids of a merged space (or shard), without reading its vectors."""
    try:
        with np.load(path) as f:
            return f["ids"].tolist()
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        raise ShardError(f"{path}: not a readable embedding file ({err}); {REBUILD}") from err
