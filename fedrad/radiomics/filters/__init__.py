"""Convolutional filters of IBSI chapter 2: mean, Laplacian of Gaussian, Laws, separable wavelets.

A :class:`~fedrad.radiomics.settings.FilterSpec` gives one or more *response maps*
(:class:`ResponseMap`; a wavelet spec without ``response`` gives several). Each filter module
computes a response from an array that already holds the boundary extension (see
:mod:`fedrad.radiomics.filters.boundary`): it reads :func:`radius` voxels beyond every output
voxel and returns the array shrunk by that radius. :func:`filter_image` applies a filter to a
whole array (IBSI phase-1 style); :mod:`fedrad.radiomics.filtered_images` applies it to the
interpolated region around a ROI.

``FilterSpec.dimensions``: ``"3D"`` filters the volume; ``"2D"`` filters each slice (array axis 0)
in-plane. Distances (LoG sigma) are in mm; supports (mean) are in voxels.

Gabor filters (:mod:`fedrad.radiomics.filters.gabor`) are available. Not implemented:
non-separable wavelets (Simoncelli, Shannon) and Riesz transforms (IBSI-2 phase-2 configurations
8, 9): they raise ``NotImplementedError``.

Image-type names (``PreparedROI.image_type``, the column prefix of filtered features):

* ``mean-<support>``, e.g. ``mean-5``;
* ``log-sigma-<sigma>mm``, e.g. ``log-sigma-1.5mm``;
* ``laws-<kernel>[-energy<delta>][-rotinv-<pooling>]``, e.g. ``laws-L5E5E5-energy7-rotinv-max``;
* ``wavelet-<family>[-level<l>]-<response>[-rotinv]``, e.g. ``wavelet-db2-LLH``,
  ``wavelet-db3-level2-HHH-rotinv`` (the level is omitted when 1; letters x first);

each followed by ``-2D`` for slice-wise filters and ``-<boundary>`` when the boundary condition is
not the default ``mirror``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from fedrad.errors import SettingsError
from fedrad.radiomics.filters import gabor, laws, log, mean, wavelet
from fedrad.radiomics.filters.boundary import check_boundary, pad
from fedrad.radiomics.settings import FilterSpec

__all__ = [
    "ResponseMap",
    "check",
    "compute",
    "filter_image",
    "radius",
    "response_maps",
]

#: IBSI-2 filters fedrad does not implement (yet).
NOT_IMPLEMENTED = ("simoncelli", "shannon", "riesz")


@dataclass(frozen=True)
class ResponseMap:
    """One response map of a filter: ``response`` is the wavelet letter string, else ``None``."""

    spec: FilterSpec
    response: str | None = None

    @property
    def name(self) -> str:
        """Image-type name (see the module docstring)."""
        s = self.spec
        if s.kind == "mean":
            base = f"mean-{int(s.support)}"  # type: ignore[arg-type]
        elif s.kind == "log":
            base = f"log-sigma-{float(s.sigma_mm):g}mm"  # type: ignore[arg-type]
        elif s.kind == "gabor":
            base = (
                f"gabor-sigma-{float(s.sigma_mm):g}mm-lambda-{float(s.wavelength_mm):g}mm"  # type: ignore[arg-type]
                f"-gamma-{float(s.aspect_ratio):g}"
            )
            if s.rotation_invariant:
                base += "-rotinv"
            else:
                base += f"-theta-{float(s.angles_deg[0]):g}"
        elif s.kind == "laws":
            base = f"laws-{str(s.laws_kernel).upper()}"
            if s.energy_distance is not None:
                base += f"-energy{int(s.energy_distance)}"
            if s.rotation_invariant:
                base += f"-rotinv-{s.pooling}"
        else:
            level = f"-level{int(s.level)}" if int(s.level) > 1 else ""
            base = f"wavelet-{s.wavelet.lower()}{level}-{self.response}"
            if s.rotation_invariant:
                base += "-rotinv"
        if s.dimensions == "2D":
            base += "-2D"
        if s.boundary != "mirror":
            base += f"-{s.boundary}"
        return base

    @property
    def preserves_intensity_units(self) -> bool:
        """True when the response is a weighted average of intensities (mean filter)."""
        return self.spec.kind == "mean"


def check(spec: FilterSpec) -> None:
    """Validate ``spec``: :class:`SettingsError` for bad parameters, ``NotImplementedError``
    for IBSI filters fedrad does not provide."""
    kind = str(spec.kind).lower()
    if kind in NOT_IMPLEMENTED:
        raise NotImplementedError(
            f"the {kind} filter is not implemented in fedrad; available filters: "
            "mean, log, laws, gabor, wavelet"
        )
    if kind not in ("mean", "log", "wavelet", "laws", "gabor"):
        raise SettingsError(
            f"unknown filter kind {spec.kind!r}: use mean, log, laws, gabor or wavelet"
        )
    if spec.dimensions not in ("2D", "3D"):
        raise SettingsError(f"filter dimensions must be 2D or 3D, got {spec.dimensions!r}")
    check_boundary(spec.boundary)
    {
        "mean": mean.check,
        "log": log.check,
        "wavelet": wavelet.check,
        "laws": laws.check,
        "gabor": gabor.check,
    }[kind](spec)


def response_maps(spec: FilterSpec) -> list[ResponseMap]:
    """The response maps ``spec`` produces (validated)."""
    check(spec)
    if spec.kind == "wavelet":
        return [ResponseMap(spec, r) for r in wavelet.responses(spec)]
    return [ResponseMap(spec)]


def radius(rmap: ResponseMap, spacing: tuple[float, float, float]) -> tuple[int, int, int]:
    """Voxels (z, y, x) the filter reads beyond each output voxel."""
    if rmap.spec.kind == "mean":
        return mean.radius(rmap.spec)
    if rmap.spec.kind == "log":
        return log.radius(rmap.spec, spacing)
    if rmap.spec.kind == "laws":
        return laws.radius(rmap.spec)
    if rmap.spec.kind == "gabor":
        return gabor.radius(rmap.spec, spacing)
    return wavelet.radius(rmap.spec)


def compute(
    rmap: ResponseMap, padded: np.ndarray, spacing: tuple[float, float, float]
) -> np.ndarray:
    """Response of ``padded`` (already extended by :func:`radius`), shrunk by the radius."""
    if rmap.spec.kind == "mean":
        return mean.response(padded, rmap.spec)
    if rmap.spec.kind == "log":
        return log.response(padded, rmap.spec, spacing)
    if rmap.spec.kind == "laws":
        return laws.response(padded, rmap.spec)
    if rmap.spec.kind == "gabor":
        return gabor.response(padded, rmap.spec, spacing)
    return wavelet.response(padded, rmap.spec, rmap.response)  # type: ignore[arg-type]


def filter_image(
    image: np.ndarray,
    spec: FilterSpec,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    response: str | None = None,
) -> np.ndarray:
    """Filter a whole (z, y, x) array, extended at its edges by ``spec.boundary``.

    ``spacing`` is (z, y, x) in mm. For a wavelet ``response`` defaults to ``spec.response``.
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 3:
        raise SettingsError(f"filter_image needs a 3D (z, y, x) array, got {image.ndim}D")
    if spec.kind == "wavelet":
        wanted = response or spec.response
        if wanted is None:
            raise SettingsError("give the wavelet response to compute, e.g. response='LLH'")
        spec = dataclasses.replace(spec, response=wanted.upper())
    rmap = response_maps(spec)[0]
    r = radius(rmap, spacing)
    return compute(rmap, pad(image, r, spec.boundary), spacing)
