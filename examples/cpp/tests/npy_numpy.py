"""numpy's side of the npy.hpp interoperability test (ctest example_npy_numpy_write / example_npy_numpy_read).

    python3 npy_numpy.py write DIR   numpy writes np_*.npy files that test_npy reads
    python3 npy_numpy.py check DIR   numpy reads the cpp_*.npy files that test_npy wrote

Every array holds arange(n) cast to its dtype (bool: odd elements True), in the shape its name gives.
"""
import io
import sys
from pathlib import Path

import numpy as np

DTYPES = ["<f4", "<f2", "<f8", "<i4", "<i8", "<u2", "|u1", "|i1", "|b1"]
SHAPES = {"scalar": (), "empty": (0, 3), "vec": (5,), "mat": (2, 3), "nd": (2, 1, 3, 2)}


def pattern(dtype: str, shape: tuple) -> np.ndarray:
    n = int(np.prod(shape, dtype=np.int64))
    values = np.arange(n) % 2 == 1 if dtype == "|b1" else np.arange(n)
    return values.astype(dtype).reshape(shape)


def name(dtype: str, shape_name: str) -> str:
    return f"{dtype[1:]}_{shape_name}"


def write(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.npy"):  # so that `check` never sees files from an earlier run
        stale.unlink()
    for dtype in DTYPES:
        for shape_name, shape in SHAPES.items():
            np.save(folder / f"np_{name(dtype, shape_name)}.npy", pattern(dtype, shape))
    for version in [(2, 0), (3, 0)]:
        with open(folder / f"np_v{version[0]}.npy", "wb") as f:
            np.lib.format.write_array(f, pattern("<f4", (2, 3)), version=version)
    np.save(folder / "np_fortran.npy", np.asfortranarray(pattern("<f4", (2, 3))))
    np.save(folder / "np_bigendian.npy", pattern(">i4", (4,)))
    np.save(folder / "np_structured.npy", np.zeros(2, dtype=[("a", "<f4"), ("b", "<i4")]))
    np.save(folder / "np_unicode.npy", np.array(["ab", "c"]))
    print(f"numpy {np.__version__} wrote {len(list(folder.glob('np_*.npy')))} files to {folder}")


def check(folder: Path) -> None:
    failures = 0
    files = sorted(folder.glob("cpp_*.npy"))
    for path in files:
        stem = path.stem[len("cpp_"):]
        code, shape_name = stem.rsplit("_", 1)
        dtype = next(d for d in DTYPES if d[1:] == code)
        expected = pattern(dtype, SHAPES[shape_name])
        data = path.read_bytes()
        got = np.load(io.BytesIO(data))
        ok = got.dtype == expected.dtype and got.shape == expected.shape and np.array_equal(got, expected)
        ok = ok and data[6:8] == b"\x01\x00" and (len(data) - got.nbytes) % 64 == 0  # format 1.0, aligned data
        if not ok:
            failures += 1
            print(f"FAIL {path.name}: {got.dtype} {got.shape} {got!r}")
    if not files:
        sys.exit(f"no cpp_*.npy files in {folder}: test_npy did not run")
    print(f"numpy {np.__version__} read {len(files)} files written by npy.hpp, {failures} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    {"write": write, "check": check}[sys.argv[1]](Path(sys.argv[2]))
