"""Bundle arrays: written aligned, read back memory-mapped, equal to what numpy itself reads."""

import mmap

import numpy as np
import pytest

from models.npz import read_arrays, write_arrays


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "f32": rng.random(1001, dtype=np.float32),
        "i64": rng.integers(0, 10**12, 77),
        "flags": rng.integers(0, 2, 13).astype(np.uint8),  # odd sizes push the next member off alignment
        "ids": np.array(["a", "bcd", "é"]),
        "utf8": np.array([b"x", b"yz"]),
        "matrix": rng.random((5, 3)),
        "fortran": np.asfortranarray(rng.random((4, 6))),
        "empty": np.zeros((0, 33), np.float32),
        "scalar": np.array(3.5),
    }


def _is_mapped(array: np.ndarray) -> bool:
    base = array
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None) if not isinstance(base, np.memmap) else base._mmap
    return isinstance(base, mmap.mmap)


def test_written_arrays_read_back_mapped_aligned_and_equal_to_numpys_own_reading(tmp_path):
    path = write_arrays(tmp_path / "state.npz", _arrays())
    mapped = read_arrays(path)
    with np.load(path) as by_numpy:
        assert sorted(by_numpy.files) == sorted(_arrays())
        for name, expected in _arrays().items():
            assert mapped[name].dtype == expected.dtype and mapped[name].shape == expected.shape
            np.testing.assert_array_equal(mapped[name], expected)
            np.testing.assert_array_equal(by_numpy[name], expected)
    for name in ("f32", "i64", "flags", "ids", "matrix", "fortran"):
        assert _is_mapped(mapped[name]), name
        assert mapped[name].flags.aligned and mapped[name].ctypes.data % 64 == 0, name
        assert not mapped[name].flags.writeable  # a node can never change its bundle through an array
    assert type(mapped["f32"]) is np.ndarray  # not np.memmap: results of arithmetic are plain arrays
    assert type(mapped["f32"] * 2) is np.ndarray


def test_compressed_and_misaligned_members_are_read_into_memory(tmp_path):
    np.savez_compressed(tmp_path / "old.npz", **_arrays())
    np.savez(tmp_path / "plain.npz", **_arrays())  # np.savez does not align members
    for path in (tmp_path / "old.npz", tmp_path / "plain.npz"):
        read = read_arrays(path)
        for name, expected in _arrays().items():
            np.testing.assert_array_equal(read[name], expected)
            assert read[name].flags.aligned
    assert not any(_is_mapped(a) for a in read_arrays(tmp_path / "old.npz").values())


def test_an_object_array_is_refused_without_unpickling(tmp_path):
    np.savez(tmp_path / "objects.npz", bad=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(ValueError, match="objects.npz.*pickle"):
        read_arrays(tmp_path / "objects.npz")
