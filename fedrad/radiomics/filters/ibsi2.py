"""IBSI chapter 2, phase 2: the filter configurations applied to the IBSI CT phantom.

Configuration ids are ``"<filter>.<A|B>"``. Processing (IBSI 2 reference manual, phase 2):

* ``A`` (2D): no interpolation; re-segmentation range [-1000, 400] HU; filters act on each slice.
* ``B`` (3D): interpolation to 1 mm isotropic voxels (tricubic spline for the image, trilinear for
  the mask with partial-volume threshold 0.5), intensities rounded to integers, re-segmentation
  range [-1000, 400] HU; 3D filters.

Both use mirror padding and compute the intensity statistics of the response map inside the
intensity mask of the *unfiltered* image.

Filters:

====  ==================================================================  ===============
id    filter                                                              fedrad
====  ==================================================================  ===============
1     none                                                                original image
2     mean, support 5 voxels                                              ``mean``
3     Laplacian of Gaussian, sigma 1.5 mm, truncated at 4 sigma          ``log``
4     Laws L5E5E5 (2D: L5E5), rotation invariant (max), energy map 7     ``laws``
5     Gabor, sigma 5 mm, lambda 2 mm, gamma 3/2, pi/8 steps, invariant    ``gabor``
6     Daubechies 3, LLH (2D: LH), level 1, rotation invariant (average)  ``wavelet``
7     Daubechies 3, HHH (2D: HH), level 2, rotation invariant (average)  ``wavelet``
8     Simoncelli (non-separable wavelet), level 1                         not implemented
9     Simoncelli (non-separable wavelet), level 2                         not implemented
====  ==================================================================  ===============
"""

from __future__ import annotations

from typing import Literal

from fedrad.errors import SettingsError
from fedrad.radiomics.settings import FilterSpec, Settings

#: Phase-2 filter ids fedrad implements, and those it does not (with the filter's name).
IMPLEMENTED = ("1", "2", "3", "4", "5", "6", "7")
NOT_IMPLEMENTED = {"8": "Simoncelli", "9": "Simoncelli"}


def _filter(filter_id: str, dims: Literal["2D", "3D"]) -> FilterSpec | None:
    two_d = dims == "2D"
    if filter_id == "1":
        return None
    if filter_id == "2":
        return FilterSpec("mean", support=5, boundary="mirror", dimensions=dims)
    if filter_id == "3":
        return FilterSpec("log", sigma_mm=1.5, truncate=4.0, boundary="mirror", dimensions=dims)
    if filter_id == "4":
        return FilterSpec(
            "laws",
            laws_kernel="L5E5" if two_d else "L5E5E5",
            energy_distance=7,
            rotation_invariant=True,
            pooling="max",
            boundary="mirror",
            dimensions=dims,
        )
    if filter_id == "5":
        return FilterSpec(
            "gabor",
            sigma_mm=5.0,
            wavelength_mm=2.0,
            aspect_ratio=1.5,
            angles_deg=tuple(22.5 * k for k in range(16)),
            truncate=4.0,
            rotation_invariant=True,
            boundary="mirror",
            dimensions=dims,
        )
    if filter_id in ("6", "7"):
        response = ("LH" if two_d else "LLH") if filter_id == "6" else ("HH" if two_d else "HHH")
        return FilterSpec(
            "wavelet",
            wavelet="db3",
            level=1 if filter_id == "6" else 2,
            response=response,
            rotation_invariant=True,
            boundary="mirror",
            dimensions=dims,
        )
    raise NotImplementedError(
        f"IBSI-2 phase-2 filter {filter_id} ({NOT_IMPLEMENTED[filter_id]}) is not implemented"
    )


def phase2_settings(config_id: str) -> Settings:
    """Settings reproducing IBSI-2 phase-2 configuration ``config_id`` (e.g. ``"3.B"``).

    Only the intensity statistics are asked for (``families`` and ``filter_families``).

    Raises:
        SettingsError: unknown id.
        NotImplementedError: Simoncelli configurations.
    """
    filter_id, _, variant = config_id.partition(".")
    if variant not in ("A", "B") or filter_id not in (*IMPLEMENTED, *NOT_IMPLEMENTED):
        raise SettingsError(f"unknown IBSI-2 phase-2 configuration {config_id!r}: use 1.A .. 9.B")
    spec = _filter(filter_id, "2D" if variant == "A" else "3D")
    interpolate = variant == "B"
    return Settings(
        name=f"ibsi2-phase2-{config_id}",
        resampled_spacing=(1.0, 1.0, 1.0) if interpolate else None,
        interpolation="cubic",
        roi_interpolation="linear",
        roi_partial_volume=0.5,
        intensity_rounding=True,
        reseg_range=(-1000.0, 400.0),
        families=("stat",),
        filter_families=("stat",),
        filters=() if spec is None else (spec,),
    )
