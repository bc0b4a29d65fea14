"""PyRadiomics' derived images: Laplacian of Gaussian and the stationary wavelet transform.

* ``LoG``: SimpleITK's ``LaplacianRecursiveGaussianImageFilter`` (normalised across scale) with
  ``sigma`` in mm on the whole image; named ``log-sigma-<sigma>-mm-3D`` (``.`` -> ``-``). A sigma
  is skipped where the image has fewer than ``ceil(sigma / spacing) + 1`` voxels along an axis.
* ``Wavelet``: one level of the undecimated (stationary) wavelet transform along x, y and z, with
  periodic extension: along an axis of length ``N`` (odd lengths are first extended by one
  wrapped voxel, then cropped back) ``a[n] = sum_k h[k] x[(n + L/2 - k) mod N]`` for the
  decomposition low-pass ``h`` (high-pass ``g`` for ``H``), filter length ``L``. Levels above 1
  decompose the previous approximation with the filters unchanged (PyRadiomics' scheme). Names:
  ``wavelet-<x><y><z>`` with ``L``/``H`` per axis (``wavelet2-...`` from level 2).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from fedrad.errors import SettingsError
from fedrad.radiomics.filters.wavelet import decomposition_filters


def log_images(image: sitk.Image, sigmas: list[float]) -> Iterator[tuple[str, sitk.Image]]:
    """``(name, LoG image)`` per sigma (mm) that fits the image."""
    size = np.array(image.GetSize())
    spacing = np.array(image.GetSpacing())
    if size.min() < 4:
        return
    for sigma in sigmas:
        sigma = float(sigma)
        if sigma <= 0 or not np.all(size >= np.ceil(sigma / spacing) + 1):
            continue
        log = sitk.LaplacianRecursiveGaussianImageFilter()
        log.SetNormalizeAcrossScale(True)
        log.SetSigma(sigma)
        yield f"log-sigma-{str(sigma).replace('.', '-')}-mm-3D", log.Execute(image)


def _periodic_filter(data: np.ndarray, kernel: np.ndarray, axis: int) -> np.ndarray:
    """``out[n] = sum_k kernel[k] data[(n + L/2 - k) mod N]`` along ``axis``."""
    return ndimage.convolve1d(data, kernel, axis=axis, mode="wrap")


def _swt_level(data: np.ndarray, low: np.ndarray, high: np.ndarray) -> dict[str, np.ndarray]:
    """One stationary level: ``{"LLH": ..., ...}`` with letters for the x, y, z axes."""
    out = {"": data}
    for axis in (2, 1, 0):  # x, y, z of a (z, y, x) array
        out = {
            key + letter: _periodic_filter(arr, kernel, axis)
            for key, arr in out.items()
            for letter, kernel in (("L", low), ("H", high))
        }
    return out


def wavelet_images(
    image: sitk.Image, wavelet: str = "coif1", level: int = 1, start_level: int = 0
) -> Iterator[tuple[str, sitk.Image]]:
    """``(name, image)`` for every detail response of each level, then the last approximation."""
    try:
        low, high = (np.asarray(f, dtype=np.float64) for f in decomposition_filters(wavelet))
    except SettingsError as exc:
        raise SettingsError(f"imageType Wavelet: {exc}") from None
    matrix = sitk.GetArrayFromImage(image)
    shape = matrix.shape
    crop = tuple(slice(None, -1 if n % 2 else None) for n in shape)
    data = np.pad(matrix, [(0, n % 2) for n in shape], mode="wrap").astype(np.float64)
    for _ in range(start_level):
        data = _swt_level(data, low, high)["LLL"]
    for idx in range(1, level + 1):
        responses = _swt_level(data, low, high)
        data = responses.pop("LLL")
        prefix = "wavelet" if idx == 1 else f"wavelet{idx}"
        for name in sorted(responses):
            yield f"{prefix}-{name}", _like(responses[name][crop], image)
    prefix = "wavelet" if level == 1 else f"wavelet{level}"
    yield f"{prefix}-LLL", _like(data[crop], image)


def _like(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(reference)
    return out
