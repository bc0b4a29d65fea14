"""Feature-extraction settings (IBSI chapter 1 and 2 processing parameters) and built-in presets.

Spacings given by users are in millimetres in (x, y, z) order, as in DICOM/NIfTI/PyRadiomics.
Arrays inside fedrad are (z, y, x), as SimpleITK's ``GetArrayFromImage`` returns them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fedrad.errors import SettingsError

InterpolationOrder = Literal["nearest", "linear", "cubic"]
TextureDimension = Literal["2D", "2.5D", "3D"]
ALL_TEXTURE_DIMENSIONS: tuple[TextureDimension, ...] = ("2D", "2.5D", "3D")
ALL_FAMILIES: tuple[str, ...] = (
    "morph",
    "loc",
    "stat",
    "ih",
    "ivh",
    "glcm",
    "glrlm",
    "glszm",
    "gldzm",
    "ngtdm",
    "ngldm",
)


@dataclass(frozen=True)
class Discretisation:
    """Intensity discretisation (IBSI 2.7).

    ``method``:
      * ``"none"``: intensities are used as they are (they must be integers); texture matrices
        index grey level ``X - min + 1`` (identical to fixed bin size 1 from the ROI minimum).
      * ``"fbs"``: fixed bin size ``value`` (bin width, intensity units), bins counted from
        ``lower_bound`` (IBSI: the lower bound of the re-segmentation range; else the ROI minimum):
        ``X_d = floor((X - lower_bound) / value) + 1``.
      * ``"fbn"``: fixed bin number ``value`` between the ROI minimum and maximum:
        ``X_d = floor(N (X - X_min) / (X_max - X_min)) + 1``, with ``X_max`` mapped to ``N``.
    """

    method: Literal["none", "fbs", "fbn"] = "none"
    value: float | None = None
    lower_bound: float | None = None

    def __post_init__(self) -> None:
        if self.method not in ("none", "fbs", "fbn"):
            raise SettingsError(
                f"unknown discretisation method {self.method!r}: use none, fbs or fbn"
            )
        if self.method != "none" and (self.value is None or self.value <= 0):
            raise SettingsError(
                f"discretisation {self.method} needs a positive value, got {self.value!r}"
            )
        if self.method == "fbn" and self.value is not None and int(self.value) != self.value:
            raise SettingsError(f"fixed bin number must be an integer, got {self.value!r}")


@dataclass(frozen=True)
class FilterSpec:
    """A convolutional filter (IBSI chapter 2) producing a filtered image for feature extraction.

    ``kind``: ``"mean"`` (support ``support`` voxels), ``"log"`` (Laplacian of Gaussian, scale
    ``sigma_mm``, kernel truncated at ``truncate`` sigma) or ``"wavelet"`` (``wavelet`` family,
    decomposition ``level``, ``response`` such as ``"LLH"``; ``None`` gives every response).
    ``"laws"``: Laws kernel ``laws_kernel`` (e.g. ``"L5E5E5"``, x first), rotation invariance pooled
    by ``pooling`` (``"max"`` or ``"average"``), energy map over ``energy_distance`` voxels
    (``None``: no energy map).
    ``"gabor"``: scale ``sigma_mm``, ``wavelength_mm``, ``aspect_ratio`` (gamma), orientations
    ``angles_deg``, truncated at ``truncate`` sigma; rotation invariance averages orientations
    (and, in 3D, the three orthogonal planes).
    ``boundary`` is the padding: ``"mirror"``, ``"nearest"``, ``"wrap"`` or ``"constant"``.
    """

    kind: Literal["mean", "log", "wavelet", "laws", "gabor"]
    support: int | None = None
    sigma_mm: float | None = None
    truncate: float = 4.0
    wavelet: str = "haar"
    level: int = 1
    response: str | None = None
    rotation_invariant: bool = False
    boundary: Literal["mirror", "nearest", "wrap", "constant"] = "mirror"
    dimensions: Literal["2D", "3D"] = "3D"
    laws_kernel: str | None = None
    energy_distance: int | None = None
    pooling: Literal["max", "average"] = "average"
    wavelength_mm: float | None = None
    aspect_ratio: float = 1.0
    angles_deg: tuple[float, ...] = (0.0,)


@dataclass(frozen=True)
class Settings:
    """Every parameter of image processing and feature computation.

    Build one directly, from a preset (:meth:`preset`), from fedrad's YAML (:meth:`from_file`) or
    from a PyRadiomics parameter file (:func:`fedrad.radiomics.pyradiomics_params.translate`).
    """

    name: str = "custom"
    label: int = 1
    # Intensity normalisation of the whole image before interpolation (IBSI 2.3, optional):
    # "zscore" maps x -> scale * (x - mean) / sd, and with ``normalisation_outlier_sigma`` clips
    # the result to +- that many scaled sd first (PyRadiomics' ``normalize`` / ``removeOutliers``).
    normalisation: Literal["none", "zscore"] = "none"
    normalisation_scale: float = 1.0
    normalisation_outlier_sigma: float | None = None
    # Interpolation (IBSI 2.4): None keeps the original grid. With ``in_plane_only`` (2D
    # interpolation) the z entry is ignored and the slice spacing kept.
    resampled_spacing: tuple[float, float, float] | None = None
    in_plane_only: bool = False
    interpolation: InterpolationOrder = "linear"
    intensity_rounding: bool = False
    roi_interpolation: InterpolationOrder = "linear"
    roi_partial_volume: float = 0.5
    # Re-segmentation (IBSI 2.5): range (None bound = open) and outlier filtering in sigmas.
    reseg_range: tuple[float | None, float | None] | None = None
    outlier_sigma: float | None = None
    # Discretisation (IBSI 2.7), for texture + intensity histogram, and for the IVH.
    discretisation: Discretisation = field(default_factory=lambda: Discretisation("fbn", 32))
    ivh_discretisation: Discretisation = field(default_factory=Discretisation)
    # Texture matrices.
    texture_dimensions: tuple[TextureDimension, ...] = ("3D",)
    glcm_distance: int = 1
    glcm_symmetric: bool = True
    ngtdm_distance: int = 1
    ngldm_distance: int = 1
    ngldm_alpha: int = 0
    # What to compute.
    families: tuple[str, ...] = ALL_FAMILIES
    filters: tuple[FilterSpec, ...] = ()
    filter_families: tuple[str, ...] = (
        "stat",
        "ih",
        "glcm",
        "glrlm",
        "glszm",
        "gldzm",
        "ngtdm",
        "ngldm",
    )
    diagnostics: bool = False
    # Definitions: "ibsi" (default) or "pyradiomics" (reproduce PyRadiomics 3.x, see
    # fedrad.radiomics.compat); ``pyradiomics_params`` is the PyRadiomics parameter mapping (JSON)
    # compat mode reads, when the settings came from a PyRadiomics parameter file.
    compat: Literal["ibsi", "pyradiomics"] = "ibsi"
    pyradiomics_params: str | None = None

    def __post_init__(self) -> None:
        if self.compat not in ("ibsi", "pyradiomics"):
            raise SettingsError(f"unknown compat {self.compat!r}: use ibsi or pyradiomics")
        for dim in self.texture_dimensions:
            if dim not in ALL_TEXTURE_DIMENSIONS:
                raise SettingsError(f"unknown texture dimension {dim!r}: use 2D, 2.5D or 3D")
        for fam in (*self.families, *self.filter_families):
            if fam not in ALL_FAMILIES:
                raise SettingsError(
                    f"unknown feature family {fam!r}: choose from {', '.join(ALL_FAMILIES)}"
                )
        for order in (self.interpolation, self.roi_interpolation):
            if order not in ("nearest", "linear", "cubic"):
                raise SettingsError(
                    f"unknown interpolation {order!r}: use nearest, linear or cubic"
                )
        for key in ("glcm_distance", "ngtdm_distance", "ngldm_distance"):
            if int(getattr(self, key)) < 1:
                raise SettingsError(f"{key} must be at least 1, got {getattr(self, key)!r}")
        if self.ngldm_alpha < 0:
            raise SettingsError(f"ngldm_alpha must be >= 0, got {self.ngldm_alpha!r}")
        if self.normalisation not in ("none", "zscore"):
            raise SettingsError(f"unknown normalisation {self.normalisation!r}: use none or zscore")
        if not 0.0 < self.roi_partial_volume <= 1.0:
            raise SettingsError("roi_partial_volume must lie in (0, 1]")
        if self.resampled_spacing is not None and (
            len(self.resampled_spacing) != 3 or any(s <= 0 for s in self.resampled_spacing)
        ):
            raise SettingsError(
                f"resampled_spacing must be three positive numbers (x, y, z) in mm, got {self.resampled_spacing!r}"
            )

    # ------------------------------------------------------------------ construction helpers
    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)

    @staticmethod
    def preset(name: str) -> Settings:
        """A built-in preset by name (see :data:`PRESETS`)."""
        try:
            return PRESETS[name]
        except KeyError:
            raise SettingsError(
                f"unknown preset {name!r}: choose from {', '.join(sorted(PRESETS))}"
            ) from None

    @staticmethod
    def from_dict(data: dict[str, Any], *, name: str = "custom") -> Settings:
        """Settings from a plain mapping (fedrad's YAML schema; see ``sites/README.md``)."""
        data = dict(data)
        base_name = data.pop("preset", None)
        base = Settings.preset(base_name) if base_name else Settings(name=name)
        known = {f.name for f in dataclasses.fields(Settings)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SettingsError(
                f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        changes: dict[str, Any] = {}
        for key, value in data.items():
            if key in ("discretisation", "ivh_discretisation"):
                if not isinstance(value, dict):
                    raise SettingsError(f"{key} must be a mapping with method, value, lower_bound")
                changes[key] = Discretisation(**value)
            elif key == "filters":
                changes[key] = tuple(
                    FilterSpec(**{k: tuple(v) if k == "angles_deg" else v for k, v in spec.items()})
                    for spec in value
                )
            elif key in ("resampled_spacing",) and value is not None:
                changes[key] = tuple(float(v) for v in value)
            elif key == "reseg_range" and value is not None:
                lo, hi = value
                changes[key] = (
                    None if lo is None else float(lo),
                    None if hi is None else float(hi),
                )
            elif key in ("texture_dimensions", "families", "filter_families"):
                changes[key] = tuple(value)
            else:
                changes[key] = value
        changes.setdefault("name", data.get("name", base.name if base_name else name))
        try:
            return dataclasses.replace(base, **changes)
        except TypeError as exc:
            raise SettingsError(f"invalid settings: {exc}") from None

    @staticmethod
    def from_file(
        path: str | Path, notices: list[str] | None = None, compat: str | None = None
    ) -> Settings:
        """Settings from fedrad's YAML settings file, or from a PyRadiomics parameter file.

        A file with any of PyRadiomics' top-level keys (``setting``, ``imageType``,
        ``featureClass``, ``voxelSetting``) is translated by
        :func:`fedrad.radiomics.pyradiomics_params.translate`; its notices about ignored settings
        are appended to ``notices`` when given (else issued as warnings). ``compat`` overrides
        the file's ``compat`` (``"ibsi"`` or ``"pyradiomics"``).
        """
        import yaml

        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise SettingsError(f"{path}: settings file not found") from None
        except yaml.YAMLError as exc:
            raise SettingsError(f"{path}: not valid YAML ({exc})") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise SettingsError(f"{path}: expected a mapping of settings at the top level")
        if compat is not None:
            data["compat"] = compat
        if {"setting", "imageType", "featureClass", "voxelSetting"} & set(data):
            from fedrad.radiomics.pyradiomics_params import translate

            return translate(data, name=path.stem, notices=notices)
        return Settings.from_dict(data, name=path.stem)

    def to_dict(self) -> dict[str, Any]:
        """A plain mapping that :meth:`from_dict` reads back."""
        out = dataclasses.asdict(self)
        for key, value in list(out.items()):
            if isinstance(value, tuple):
                out[key] = list(value)
        out["filters"] = [dataclasses.asdict(f) for f in self.filters]
        return out


def _ibsi_ct(name: str, **kw: Any) -> Settings:
    """IBSI chapter 1 CT-phantom configurations share these defaults."""
    base: dict[str, Any] = dict(
        name=name,
        intensity_rounding=True,
        roi_interpolation="linear",
        roi_partial_volume=0.5,
        glcm_distance=1,
        ngtdm_distance=1,
        ngldm_distance=1,
        ngldm_alpha=0,
    )
    base.update(kw)
    return Settings(**base)


#: Built-in presets reproducing ``ibsi1_configurations.csv`` (IBSI reference manual, ch. 5).
PRESETS: dict[str, Settings] = {
    "ibsi-dig-phantom": Settings(
        name="ibsi-dig-phantom",
        discretisation=Discretisation("none"),
        ivh_discretisation=Discretisation("none"),
        texture_dimensions=ALL_TEXTURE_DIMENSIONS,
    ),
    "ibsi-config-a": _ibsi_ct(
        "ibsi-config-a",
        intensity_rounding=False,
        reseg_range=(-500.0, 400.0),
        discretisation=Discretisation("fbs", 25.0),
        ivh_discretisation=Discretisation("none"),
        texture_dimensions=("2D", "2.5D"),
    ),
    "ibsi-config-b": _ibsi_ct(
        "ibsi-config-b",
        resampled_spacing=(2.0, 2.0, 3.0),
        in_plane_only=True,
        interpolation="linear",
        reseg_range=(-500.0, 400.0),
        discretisation=Discretisation("fbn", 32),
        ivh_discretisation=Discretisation("none"),
        texture_dimensions=("2D", "2.5D"),
    ),
    "ibsi-config-c": _ibsi_ct(
        "ibsi-config-c",
        resampled_spacing=(2.0, 2.0, 2.0),
        interpolation="linear",
        reseg_range=(-1000.0, 400.0),
        discretisation=Discretisation("fbs", 25.0),
        ivh_discretisation=Discretisation("fbs", 2.5),
    ),
    "ibsi-config-d": _ibsi_ct(
        "ibsi-config-d",
        resampled_spacing=(2.0, 2.0, 2.0),
        interpolation="linear",
        outlier_sigma=3.0,
        discretisation=Discretisation("fbn", 32),
        ivh_discretisation=Discretisation("none"),
    ),
    "ibsi-config-e": _ibsi_ct(
        "ibsi-config-e",
        resampled_spacing=(2.0, 2.0, 2.0),
        interpolation="cubic",
        reseg_range=(-1000.0, 400.0),
        outlier_sigma=3.0,
        discretisation=Discretisation("fbn", 32),
        ivh_discretisation=Discretisation("fbn", 1000),
    ),
}
