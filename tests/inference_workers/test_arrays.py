"""The workers' .npz reader and the mask crop: in-place views, integrity checks, refusals by name."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from inference_workers.arrays import NpzError, crop_to_content, npz_bytes, read_npz


def _buffer(data: bytes) -> bytearray:
    return bytearray(data)


def test_stored_members_are_read_in_place_and_writable():
    voxels = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    buffer = _buffer(npz_bytes(compressed=False, voxels=voxels, spacing=np.array([1.0, 0.5, 0.5])))

    arrays = read_npz(buffer)

    assert np.array_equal(arrays["voxels"], voxels) and arrays["voxels"].dtype == np.int16
    assert arrays["spacing"].tolist() == [1.0, 0.5, 0.5]
    # a view of the downloaded bytes, not a copy, and usable by torch.from_numpy without a warning
    assert np.shares_memory(arrays["voxels"], np.frombuffer(buffer, dtype=np.uint8))
    assert arrays["voxels"].flags.writeable


def test_fortran_order_and_compressed_members_read_the_same():
    grid = np.asfortranarray(np.arange(24, dtype=np.float32).reshape(2, 3, 4))

    stored = read_npz(_buffer(npz_bytes(compressed=False, grid=grid)))["grid"]
    compressed = read_npz(_buffer(npz_bytes(compressed=True, grid=grid)))["grid"]

    assert np.array_equal(stored, grid) and np.array_equal(compressed, grid)


def test_a_corrupted_member_is_refused_by_name():
    data = bytearray(npz_bytes(compressed=False, voxels=np.zeros((8, 8, 8), np.int16)))
    data[len(data) // 3] ^= 0xFF

    with pytest.raises(NpzError, match=r"member voxels.npy: CRC-32 does not match"):
        read_npz(_buffer(bytes(data)))


def test_object_arrays_and_non_zip_bytes_are_refused():
    objects = io.BytesIO()
    np.savez(objects, names=np.array(["Doe^John", None], dtype=object))
    with pytest.raises(NpzError, match=r"member names.npy: .*(object|pickle)"):
        read_npz(_buffer(objects.getvalue()))
    with pytest.raises(NpzError, match="not a zip archive"):
        read_npz(_buffer(b"\x93NUMPY not a zip"))


def test_a_member_whose_header_does_not_match_its_bytes_is_refused():
    body = io.BytesIO()
    np.lib.format.write_array(body, np.zeros(10, np.int16))
    # the header says 10 int16 values; only 5 travel
    truncated = body.getvalue()[:-10]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zipped:
        zipped.writestr("voxels.npy", truncated)

    with pytest.raises(NpzError, match="member voxels.npy: holds 10 data bytes"):
        read_npz(_buffer(archive.getvalue()))


def test_crop_to_content_keeps_every_voxel_and_says_where_the_box_starts():
    mask = np.zeros((20, 30, 40), np.uint8)
    mask[5:8, 10:12, 30:33] = 1
    mask[9, 11, 35] = 1

    box, offset = crop_to_content(mask)

    assert offset == (5, 10, 30) and box.shape == (5, 2, 6)
    restored = np.zeros_like(mask)
    restored[5:10, 10:12, 30:36] = box
    assert np.array_equal(restored, mask)
    empty, empty_offset = crop_to_content(np.zeros((4, 4, 4), np.uint8))
    assert empty.shape == (0, 0, 0) and empty_offset == (0, 0, 0)
