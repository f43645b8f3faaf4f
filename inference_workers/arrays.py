"""The ``.npz`` files the workers read and write, without the copies ``np.load`` makes of a 262 MB volume.

``np.load`` reads each member through ``zipfile``'s stream reader and copies it out: for a 500-slice
CT that cost about a second of a worker's time, as much as half the forward pass. An uncompressed
(stored) member is already an ``.npy`` lying in the downloaded bytes (any writable buffer: the worker
downloads into an anonymous mapping), so it is checked (CRC-32, header) and viewed in place.
Compressed members, and ``.npy`` header versions this reader does not know, take ``np.load``'s own path.
Object arrays are refused either way (``allow_pickle`` is never set).
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

import numpy as np

# A local file header: signature, then 26 bytes whose last four are the name and extra field lengths.
_LOCAL_HEADER = struct.Struct("<4s22xHH")
_LOCAL_SIGNATURE = b"PK\x03\x04"
# Longest .npy header read for parsing: the magic string, a 4-byte length and a 64 KiB dict at most.
_NPY_HEADER_MAX = 12 + 65536


class NpzError(ValueError):
    """The bytes are not an ``.npz`` of plain arrays; the message names the member and the problem."""


class _MemoryFile(io.RawIOBase):
    """A read-only, seekable file over a memoryview, for ``zipfile`` (``io.BytesIO`` would copy the bytes)."""

    def __init__(self, view: memoryview) -> None:
        self._view = view
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: len(self._view)}[whence]
        if base + offset < 0:
            raise OSError("negative seek position")
        self._position = base + offset
        return self._position

    def readinto(self, target) -> int:
        chunk = self._view[self._position : self._position + len(target)]
        target[: len(chunk)] = chunk
        self._position += len(chunk)
        return len(chunk)


def read_npz(buffer) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` held in ``buffer`` (writable bytes-like: ``bytearray``, ``mmap``).

    Stored members share its memory (writable, no copy): the buffer must not be written to while the
    arrays are in use.
    """
    view = memoryview(buffer).cast("B")
    try:
        archive = zipfile.ZipFile(_MemoryFile(view))
    except (zipfile.BadZipFile, OSError) as error:
        raise NpzError(f"not a zip archive ({error})") from error
    arrays = {}
    with archive:
        for info in archive.infolist():
            name = info.filename.removesuffix(".npy")
            try:
                if info.compress_type == zipfile.ZIP_STORED:
                    arrays[name] = _stored_array(view, info)
                else:
                    with archive.open(info) as member:
                        arrays[name] = np.lib.format.read_array(member, allow_pickle=False)
            except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:
                raise NpzError(f"member {info.filename}: {error}") from error
    return arrays


def _stored_array(view: memoryview, info: zipfile.ZipInfo) -> np.ndarray:
    header_end = info.header_offset + _LOCAL_HEADER.size
    signature, name_length, extra_length = _LOCAL_HEADER.unpack(view[info.header_offset : header_end])
    if signature != _LOCAL_SIGNATURE:
        raise ValueError("local file header not found")
    start = header_end + name_length + extra_length
    member = view[start : start + info.file_size]
    if len(member) != info.file_size:
        raise ValueError("truncated")
    if zlib.crc32(member) != info.CRC:
        raise ValueError("CRC-32 does not match (corrupted in transit)")
    header = io.BytesIO(member[:_NPY_HEADER_MAX])
    version = np.lib.format.read_magic(header)
    if version == (1, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(header)
    elif version == (2, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(header)
    else:
        return np.lib.format.read_array(io.BytesIO(member), allow_pickle=False)
    if dtype.hasobject:
        raise ValueError("object arrays are refused")
    count = int(np.prod(shape, dtype=np.int64))
    if header.tell() + count * dtype.itemsize != len(member):
        raise ValueError(f"holds {len(member) - header.tell()} data bytes, shape {shape} {dtype} needs more or fewer")
    array = np.frombuffer(member, dtype=dtype, count=count, offset=header.tell())
    return array.reshape(shape, order="F" if fortran_order else "C")


def npz_bytes(*, compressed: bool, **arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return buffer.getvalue()


def crop_to_content(mask: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """The smallest box of ``mask`` holding every non-zero voxel, and where it starts (all zeros: an empty box)."""
    starts, stops = [], []
    for axis in range(mask.ndim):
        others = tuple(other for other in range(mask.ndim) if other != axis)
        present = np.flatnonzero(mask.any(axis=others))
        if present.size == 0:
            return mask[tuple(slice(0, 0) for _ in range(mask.ndim))], (0,) * mask.ndim
        starts.append(int(present[0]))
        stops.append(int(present[-1]) + 1)
    box = tuple(slice(start, stop) for start, stop in zip(starts, stops, strict=True))
    return mask[box], tuple(starts)
