"""Laws kernels and texture energy (IBSI 2, section "Laws kernels"; IBSI filter code ``JTXT``).

1D kernels, each normalised to unit L2 norm (IBSI 2): ``L3 = [1 2 1] / sqrt 6``,
``E3 = [-1 0 1] / sqrt 2``, ``S3 = [-1 2 -1] / sqrt 6``, ``L5 = [1 4 6 4 1] / sqrt 70``,
``E5 = [-1 -2 0 2 1] / sqrt 10``, ``S5 = [-1 0 2 0 -1] / sqrt 6``, ``W5 = [-1 2 0 -2 1] / sqrt 10``,
``R5 = [1 -4 6 -4 1] / sqrt 70``. A kernel name lists one 1D kernel per filtered axis, **x first**:
``"L5E5E5"`` is ``L5`` along x, ``E5`` along y and z; 2D names have two (``"L5E5"``, per slice).
The response is the convolution with the separable product ``h(x, y, z) = k_x(x) k_y(y) k_z(z)``.

Rotation invariance (IBSI "pseudo-rotational invariance"): the response is pooled over the kernel
rotated by every right-angle rotation that keeps the handedness (24 in 3D, 4 in 2D); a rotation
permutes the axes the 1D kernels act on and reverses some of them. Pooling is ``"max"`` (voxel-wise
maximum, IBSI phase-2 configuration 4) or ``"average"``.

Energy map (optional, ``energy_distance`` = ``delta``): after pooling,
``E(k) = 1 / (2 delta + 1)^D sum_{|j - k|_inf <= delta} |R(j)|``, the mean absolute response in the
cube (square, in 2D) of Chebyshev radius ``delta`` voxels.

Boundary: the image is extended by the kernel radius plus ``delta`` once (see
:mod:`fedrad.radiomics.filters.boundary`), so near the image edge the energy neighbourhood reads
responses of the extended image. For mirror and periodic padding of rotation-invariant kernels this
equals padding the response map itself; for other cases it is a documented deviation that only
affects voxels within ``delta`` of the image edge.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from fedrad.errors import SettingsError
from fedrad.radiomics.filters.wavelet import _rotations
from fedrad.radiomics.settings import FilterSpec

_RAW: dict[str, tuple[float, ...]] = {
    "L3": (1, 2, 1),
    "E3": (-1, 0, 1),
    "S3": (-1, 2, -1),
    "L5": (1, 4, 6, 4, 1),
    "E5": (-1, -2, 0, 2, 1),
    "S5": (-1, 0, 2, 0, -1),
    "W5": (-1, 2, 0, -2, 1),
    "R5": (1, -4, 6, -4, 1),
}


def kernel_1d(name: str) -> np.ndarray:
    """The unit-norm 1D Laws kernel ``name`` (e.g. ``"E5"``)."""
    k = np.asarray(_RAW[name.upper()], dtype=np.float64)
    return k / math.sqrt(float(np.sum(k * k)))


def parts(spec: FilterSpec) -> list[str]:
    """The 1D kernel names of ``spec.laws_kernel``, x first."""
    name = str(spec.laws_kernel or "").upper()
    return [name[i : i + 2] for i in range(0, len(name), 2)]


def check(spec: FilterSpec) -> None:
    """Raise :class:`SettingsError` for an invalid kernel name, energy distance or pooling."""
    n = 2 if spec.dimensions == "2D" else 3
    names = parts(spec)
    if len(names) != n or any(p not in _RAW for p in names) or len("".join(names)) != 2 * n:
        raise SettingsError(
            f"Laws kernel {spec.laws_kernel!r} must name {n} 1D kernels (x first) from "
            + ", ".join(_RAW)
            + f" for a {spec.dimensions} filter, e.g. "
            + ("'L5E5'" if n == 2 else "'L5E5E5'")
        )
    d = spec.energy_distance
    if d is not None and (int(d) != d or d < 0):
        raise SettingsError(f"Laws energy_distance must be an integer >= 0 voxels, got {d!r}")
    if spec.pooling not in ("max", "average"):
        raise SettingsError(f"Laws pooling must be max or average, got {spec.pooling!r}")


def radius(spec: FilterSpec) -> tuple[int, int, int]:
    """Voxels read on each side, (z, y, x): kernel half-length plus the energy distance."""
    half = max(len(_RAW[p]) for p in parts(spec)) // 2
    r = half + int(spec.energy_distance or 0)
    return (0 if spec.dimensions == "2D" else r, r, r)


def _axes(spec: FilterSpec) -> tuple[int, ...]:
    """Array axis of the i-th kernel (x first): x -> 2, y -> 1, z -> 0."""
    return (2, 1) if spec.dimensions == "2D" else (2, 1, 0)


def _oriented(spec: FilterSpec) -> list[tuple[np.ndarray, ...]]:
    """Distinct kernel sets (one 1D kernel per letter axis) over the rotations used."""
    ks = [kernel_1d(p) for p in parts(spec)]
    n = len(ks)
    rots = _rotations(n) if spec.rotation_invariant else [tuple((b, 1) for b in range(n))]
    seen: dict[bytes, tuple[np.ndarray, ...]] = {}
    for rot in rots:
        combo = tuple(ks[a] if s > 0 else ks[a][::-1].copy() for a, s in rot)
        seen.setdefault(b"".join(k.tobytes() for k in combo), combo)
    return list(seen.values())


def response(padded: np.ndarray, spec: FilterSpec) -> np.ndarray:
    """Laws response (pooled, energy map if asked) of ``padded``, shrunk by :func:`radius`."""
    img = np.asarray(padded, dtype=np.float64)
    axes = _axes(spec)
    pooled: np.ndarray | None = None
    for combo in _oriented(spec):
        out = img
        for ax, k in zip(axes, combo, strict=True):
            out = ndimage.convolve1d(out, k, axis=ax, mode="nearest")
        if pooled is None:
            pooled = out
        elif spec.pooling == "max":
            np.maximum(pooled, out, out=pooled)
        else:
            pooled = pooled + out
    assert pooled is not None
    if spec.pooling == "average" and spec.rotation_invariant:
        pooled = pooled / len(_oriented(spec))
    delta = spec.energy_distance
    if delta is not None:
        pooled = np.abs(pooled)
        for ax in axes:
            pooled = ndimage.uniform_filter1d(pooled, 2 * int(delta) + 1, axis=ax, mode="nearest")
    rz, ry, rx = radius(spec)
    return pooled[rz : pooled.shape[0] - rz, ry : pooled.shape[1] - ry, rx : pooled.shape[2] - rx]
