"""`write_arrays` / `read_arrays`: .npz files whose arrays a node memory-maps.

A node reads a few rows of each array per request. Mapped, those arrays cost the process only the
pages it has touched, and those pages are the page cache's: clean, shared with any other process
serving the same bundle, and dropped by the kernel under memory pressure instead of swapped. Read
into memory, the same arrays are ~75 MB of private memory on the full Complete Journey bundle.

`write_arrays` stores every array uncompressed with its data at a multiple of 64 bytes in the file,
as numpy aligns arrays in memory; `np.savez` does not, and numpy reads a misaligned array through
slow copying paths (measured: ~20% more per request). The files stay ordinary .npz files.
"""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path

import numpy as np

_LOCAL_HEADER = struct.Struct("<4s5H3I2H")  # a zip member's local file header (30 bytes)
_ALIGN = 64
_PADDING_ID = 0x4C50  # an extra-field id no zip tool assigns: readers skip fields they do not know


def write_arrays(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """An uncompressed .npz of `arrays` (name → array), each array's data 64-byte aligned in the file."""
    path = Path(path)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            npy = io.BytesIO()
            np.lib.format.write_array(npy, np.asanyarray(array), allow_pickle=False)  # header padded to 64
            member = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            pad = -(archive.fp.tell() + _LOCAL_HEADER.size + len(member.filename)) % _ALIGN
            pad += _ALIGN if 0 < pad < 4 else 0  # an extra field is at least its 4-byte header
            if pad:
                member.extra = struct.pack("<HH", _PADDING_ID, pad - 4) + bytes(pad - 4)
            archive.writestr(member, npy.getbuffer())
    return path


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """name → array for every member of the .npz at `path`. Members stored uncompressed
    (`np.savez`) are read-only views of the file; compressed ones (`np.savez_compressed`, e.g. an
    older bundle) are read into memory. Object arrays are refused (they would need pickle)."""
    path = Path(path)
    arrays = {}
    with zipfile.ZipFile(path) as archive, path.open("rb") as raw:
        for member in archive.infolist():
            name = member.filename.removesuffix(".npy")
            if member.compress_type != zipfile.ZIP_STORED:
                with archive.open(member) as stream:
                    arrays[name] = np.lib.format.read_array(stream, allow_pickle=False)
                continue
            raw.seek(member.header_offset)
            header = _LOCAL_HEADER.unpack(raw.read(_LOCAL_HEADER.size))
            raw.seek(member.header_offset + _LOCAL_HEADER.size + header[-2] + header[-1])  # name, extra field
            arrays[name] = _mapped(path, raw)
    return arrays


def _mapped(path: Path, raw) -> np.ndarray:
    """The .npy array that starts at `raw`'s position, mapped read-only from `path`."""
    version = np.lib.format.read_magic(raw)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran_order, dtype = read_header(raw)
    if dtype.hasobject:
        raise ValueError(f"{path}: an array of Python objects cannot be loaded without pickle")
    if int(np.prod(shape)) == 0:  # nothing to map (mmap refuses an empty range)
        return np.zeros(shape, dtype)
    mapped = np.asarray(np.memmap(path, dtype, "r", raw.tell(), shape, "F" if fortran_order else "C"))
    # a plain ndarray view (arithmetic on it gives ordinary arrays); misaligned (`np.savez`): a copy
    return mapped if mapped.flags.aligned else np.array(mapped)
