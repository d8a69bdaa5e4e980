"""What made a model, a space or an index: a small record carried with it, for its readers.

The adapter carries the fingerprint of its training (``checkpoints.run_fingerprint``: code
hash, tracked train config, pixel budget, DeepSpeed config, input contents, process count). A
Qwen2-VL embedding shard carries what its embeddings depend on (the pixel budget, where h_im,a
was read, and the adapter's record for the tuned model); the merged space carries its shards'
record (they must agree), and an index its space's. A reader that depends on how its input was
made (``skinground query``) compares the records and refuses, naming the keys that differ
(:func:`differing`).

A folder (the adapter) holds its record as ``made_by.json``; a file ``x.faiss`` has
``x.faiss.made_by.json`` beside it; an ``.npz`` space or shard holds it as its member
``made_by.npy`` (a JSON string).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from skinground.core.errors import InputError
from skinground.core.io import write_json
from skinground.core.sections import pixel_record

RECORD = "made_by.json"
#: The ``.npz`` member holding a space's or shard's record.
NPZ_MEMBER = "made_by"


class ProvenanceError(InputError):
    """A reader's inputs were not made together: the message names the files and keys."""


def record_path(output: str | os.PathLike) -> Path:
    """Where the record of ``output`` lives: inside a folder, beside a file."""
    p = Path(output)
    return p / RECORD if p.is_dir() else p.with_name(f"{p.name}.{RECORD}")


def write_record(output: str | os.PathLike, record: Mapping[str, Any]) -> None:
    write_json(record_path(output), dict(record))


def read_record(output: str | os.PathLike) -> dict | None:
    """The record of ``output``, or None where it has none (made before records existed)."""
    path = record_path(output)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not a readable record ({err}); delete {output} and rerun "
                         "the workflow to rebuild it") from None


def encode(record: Mapping[str, Any] | None) -> str:
    """A record as the JSON text an ``.npz`` member holds ("null": none)."""
    return json.dumps(None if record is None else dict(record), sort_keys=True)


def decode(text: str) -> dict | None:
    return json.loads(text)


def differing(old: Mapping | None, new: Mapping | None, prefix: str = "") -> list[str]:
    """The dotted keys where two records differ (a record that is None differs everywhere:
    named as the prefix, or "record")."""
    if old is None or new is None:
        return [] if old == new else [prefix.rstrip(".") or "record"]
    keys = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            keys += differing(a, b, f"{prefix}{k}.")
        elif a != b:
            keys.append(f"{prefix}{k}")
    return keys


def embedding_record(pixels: Mapping[str, Any], h_ima_token: str | None,
                     adapter: str | os.PathLike | None) -> dict:
    """What a Qwen2-VL embedding shard depends on: the pixel budget, where h_im,a is read,
    and, for the tuned model, its adapter's record."""
    return {"pixels": pixel_record(pixels), "h_ima_token": h_ima_token,
            "adapter": read_record(adapter) if adapter else None}
