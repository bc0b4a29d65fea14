"""Gabor filters (IBSI 2, section "Gabor filters"; IBSI filter code ``Q88H``).

2D kernel in a plane with in-plane offsets ``(x, y)`` in mm, orientation ``theta``::

    x~ = x cos(theta) + y sin(theta),   y~ = -x sin(theta) + y cos(theta)
    h(x, y) = exp(-(x~^2 + gamma^2 y~^2) / (2 sigma^2)) exp(j 2 pi x~ / lambda)

(scale ``sigma_mm``, wavelength ``wavelength_mm``, spatial aspect ratio ``gamma``; not
re-normalised, as in the IBSI reference implementations). The response is the modulus of the
convolution, ``|I * h|``. The kernel is sampled within ``floor(truncate * max(sigma, sigma / gamma)
/ spacing + 0.5)`` voxels of its centre along each in-plane axis; the convolution is computed by FFT.

``angles_deg`` lists the orientations. With ``rotation_invariant`` the response maps of all
orientations are averaged, and for a 3D filter also over the three orthogonal planes (axial,
coronal, sagittal: the IBSI-2 phase-2 3D variant); without it only the first orientation in the
axial plane is used. ``dimensions="2D"`` filters each axial slice. Orientations ``theta`` and
``theta + 180`` give the same modulus for real images and are computed once.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import fft as sfft

from fedrad.errors import SettingsError
from fedrad.radiomics.settings import FilterSpec


def check(spec: FilterSpec) -> None:
    """Raise :class:`SettingsError` for invalid Gabor parameters."""
    if spec.sigma_mm is None or not spec.sigma_mm > 0:
        raise SettingsError(f"the Gabor filter needs sigma_mm > 0, got {spec.sigma_mm!r}")
    if spec.wavelength_mm is None or not spec.wavelength_mm > 0:
        raise SettingsError(f"the Gabor filter needs wavelength_mm > 0, got {spec.wavelength_mm!r}")
    if not spec.aspect_ratio > 0:
        raise SettingsError(
            f"the Gabor aspect_ratio (gamma) must be > 0, got {spec.aspect_ratio!r}"
        )
    if not spec.angles_deg:
        raise SettingsError("the Gabor filter needs at least one orientation in angles_deg")
    if not spec.truncate > 0:
        raise SettingsError(f"the Gabor truncation must be > 0 sigma, got {spec.truncate!r}")


def planes(spec: FilterSpec) -> list[tuple[int, int]]:
    """Filtered planes as (row axis, column axis) of the (z, y, x) array; x~ runs along columns."""
    if spec.dimensions == "3D" and spec.rotation_invariant:
        return [(1, 2), (0, 2), (0, 1)]
    return [(1, 2)]


def _half(spec: FilterSpec, step: float) -> int:
    extent = float(spec.sigma_mm) * max(1.0, 1.0 / float(spec.aspect_ratio))  # type: ignore[arg-type]
    return int(math.floor(spec.truncate * extent / step + 0.5))


def radius(spec: FilterSpec, spacing: tuple[float, float, float]) -> tuple[int, int, int]:
    """Voxels read on each side, (z, y, x)."""
    r = [0, 0, 0]
    for plane in planes(spec):
        for ax in plane:
            r[ax] = _half(spec, spacing[ax])
    return (r[0], r[1], r[2])


def angles(spec: FilterSpec) -> list[float]:
    """Orientations (degrees) used, with ``theta`` and ``theta + 180`` merged."""
    chosen = spec.angles_deg if spec.rotation_invariant else spec.angles_deg[:1]
    return sorted({round(float(a) % 180.0, 9) for a in chosen})


def kernel(spec: FilterSpec, theta_deg: float, steps: tuple[float, float]) -> np.ndarray:
    """The complex kernel on a (row, column) grid with voxel steps ``steps`` (mm)."""
    hr, hc = _half(spec, steps[0]), _half(spec, steps[1])
    y = np.arange(-hr, hr + 1)[:, None] * steps[0]
    x = np.arange(-hc, hc + 1)[None, :] * steps[1]
    t = math.radians(theta_deg)
    xr = x * math.cos(t) + y * math.sin(t)
    yr = -x * math.sin(t) + y * math.cos(t)
    sigma, gamma = float(spec.sigma_mm), float(spec.aspect_ratio)  # type: ignore[arg-type]
    lam = float(spec.wavelength_mm)  # type: ignore[arg-type]
    return np.exp(-(xr**2 + gamma**2 * yr**2) / (2.0 * sigma**2) + 2j * math.pi * xr / lam)


def response(
    padded: np.ndarray, spec: FilterSpec, spacing: tuple[float, float, float]
) -> np.ndarray:
    """Gabor response (modulus, pooled) of ``padded``, shrunk by :func:`radius`."""
    img = np.asarray(padded, dtype=np.float64)
    r = radius(spec, spacing)
    inner = tuple(n - 2 * ri for n, ri in zip(img.shape, r, strict=True))
    total = np.zeros(inner, dtype=np.float64)
    count = 0
    for plane in planes(spec):
        shape = tuple(img.shape[ax] for ax in plane)
        spectrum = sfft.fftn(img, s=shape, axes=plane)
        for theta in angles(spec):
            k = kernel(spec, theta, (spacing[plane[0]], spacing[plane[1]]))
            kshape = [1, 1, 1]
            kshape[plane[0]], kshape[plane[1]] = k.shape
            kf = sfft.fftn(k.reshape(kshape), s=shape, axes=plane)
            out = sfft.ifftn(spectrum * kf, axes=plane)
            # Circular convolution with the kernel at the origin: output n is centred at n - half;
            # indices >= 2 half are free of wrap-around.
            cut = [slice(r[ax], img.shape[ax] - r[ax]) for ax in range(3)]
            for ax in plane:
                h = (k.shape[plane.index(ax)] - 1) // 2
                cut[ax] = slice(2 * h, 2 * h + inner[ax])
            total += np.abs(out[tuple(cut)])
            count += 1
    return total / count
