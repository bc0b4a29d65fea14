"""IBSI chapter 2 filters: properties checked on the IBSI-2 digital phantoms and small arrays.

Expected values are derived in each test from the filter's definition (IBSI 2 reference manual):
a mean filter spreads an impulse into a uniform cube, a LoG filter reproduces its kernel from an
impulse and the Laplacian of a quadratic, an orthogonal undecimated wavelet transform conserves
energy, rotation-invariant filters commute with right-angle rotations.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import SimpleITK as sitk

from fedrad.errors import SettingsError
from fedrad.io.case import Case
from fedrad.radiomics.filtered_images import filtered_rois
from fedrad.radiomics.filters import filter_image, laws, response_maps
from fedrad.radiomics.filters.boundary import map_indices, pad
from fedrad.radiomics.filters.wavelet import decomposition_filters, responses, scaling_filter
from fedrad.radiomics.preprocess import Grid, prepare
from fedrad.radiomics.settings import Discretisation, FilterSpec, Settings
from tests.conftest import SHARED_DATA, require_shared

PHANTOMS = SHARED_DATA / "ibsi2_filter_phantoms"
SPACING = (2.0, 2.0, 2.0)  # every IBSI-2 phantom has 2 mm voxels


def phantom(name: str) -> np.ndarray:
    path = require_shared(PHANTOMS / name / "image.nii.gz")
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.float64)


# ----------------------------------------------------------------------------- boundaries
def test_padding_follows_the_ibsi_definitions() -> None:
    row = np.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 4)
    expected = {  # module docstring of fedrad.radiomics.filters.boundary, with a b c d = 1 2 3 4
        "mirror": [2, 1, 1, 2, 3, 4, 4, 3],
        "nearest": [1, 1, 1, 2, 3, 4, 4, 4],
        "wrap": [3, 4, 1, 2, 3, 4, 1, 2],
        "constant": [0, 0, 1, 2, 3, 4, 0, 0],
    }
    for boundary, values in expected.items():
        np.testing.assert_array_equal(pad(row, (0, 0, 2), boundary)[0, 0], values)


@pytest.mark.parametrize("boundary", ["mirror", "nearest", "wrap"])
def test_index_folding_matches_numpy_padding_also_beyond_one_period(boundary: str) -> None:
    n, width = 5, 13
    values = np.arange(n, dtype=float)
    mode = {"mirror": "symmetric", "nearest": "edge", "wrap": "wrap"}[boundary]
    folded = values[map_indices(np.arange(-width, n + width), n, boundary)]
    np.testing.assert_array_equal(folded, np.pad(values, width, mode=mode))


def test_unknown_boundary_is_a_settings_error() -> None:
    with pytest.raises(SettingsError, match="boundary"):
        response_maps(FilterSpec("mean", support=3, boundary="reflect"))  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- mean filter
def test_mean_filter_spreads_the_impulse_into_a_uniform_cube() -> None:
    img = phantom("impulse")
    (centre,) = np.argwhere(img > 0)
    peak = img[tuple(centre)]
    for dims, m in (("3D", 5), ("2D", 3)):
        out = filter_image(
            img, FilterSpec("mean", support=m, boundary="constant", dimensions=dims), SPACING
        )
        expected = np.zeros_like(img)
        r = (m - 1) // 2
        rz = 0 if dims == "2D" else r
        z, y, x = centre
        expected[z - rz : z + rz + 1, y - r : y + r + 1, x - r : x + r + 1] = peak / m ** (
            2 if dims == "2D" else 3
        )
        np.testing.assert_allclose(out, expected, atol=1e-12)


def test_mean_filter_with_periodic_padding_keeps_the_total_intensity() -> None:
    img = phantom("checkerboard")
    out = filter_image(img, FilterSpec("mean", support=5, boundary="wrap"), SPACING)
    assert out.shape == img.shape
    assert out.sum() == pytest.approx(img.sum(), rel=1e-12)
    # Mirror padding of a constant image gives the constant everywhere, edges included.
    flat = filter_image(np.full((6, 7, 8), 3.0), FilterSpec("mean", support=5), SPACING)
    np.testing.assert_allclose(flat, 3.0)


# ----------------------------------------------------------------------------- LoG
def _ibsi_log_kernel(sigma_vox: float, radius: int, d: int) -> np.ndarray:
    """IBSI LoG kernel in voxel units, written out from the manual's formula."""
    grid = np.mgrid[tuple(slice(-radius, radius + 1) for _ in range(d))]
    r2 = sum(g.astype(float) ** 2 for g in grid)
    return (
        -1.0
        / sigma_vox**2
        * (2.0 * math.pi * sigma_vox**2) ** (-d / 2.0)
        * (d - r2 / sigma_vox**2)
        * np.exp(-r2 / (2.0 * sigma_vox**2))
    )


def test_log_of_the_impulse_is_the_ibsi_kernel_and_sums_to_about_zero() -> None:
    img = phantom("impulse")
    (centre,) = np.argwhere(img > 0)
    peak = img[tuple(centre)]
    sigma_mm = 3.0  # 1.5 voxels
    out = filter_image(
        img, FilterSpec("log", sigma_mm=sigma_mm, truncate=4.0, boundary="constant"), SPACING
    )
    radius = int(math.floor(4.0 * sigma_mm / SPACING[0] + 0.5))
    z, y, x = centre
    window = out[
        z - radius : z + radius + 1, y - radius : y + radius + 1, x - radius : x + radius + 1
    ]
    kernel = _ibsi_log_kernel(sigma_mm / SPACING[0], radius, 3)
    np.testing.assert_allclose(window, peak * kernel, rtol=1e-10, atol=1e-12 * peak)
    assert np.count_nonzero(out) == np.count_nonzero(window)  # nothing beyond the support
    # The continuous kernel integrates to 0; the truncated, sampled one nearly so.
    assert abs(out.sum()) < 1e-3 * np.abs(out).sum()


def test_log_of_a_quadratic_is_its_laplacian_in_voxel_units() -> None:
    # f = (x - c)^2 (x in mm) has Laplacian 2 / mm^2, i.e. 2 s^2 per voxel^2 for voxels of s mm.
    # At x = c the kernel's small residual sum (times f(c) = 0) does not contribute; truncating
    # the kernel at 4 sigma leaves an error of a few 1e-3.
    s = 2.0
    x_mm = (np.arange(41) - 20) * s
    img = np.broadcast_to(x_mm**2, (20, 20, 41)).copy()
    for dims in ("3D", "2D"):
        out = filter_image(img, FilterSpec("log", sigma_mm=3.0, dimensions=dims), (s, s, s))
        np.testing.assert_allclose(out[:, :, 20], 2.0 * s**2, rtol=1e-2)


# ----------------------------------------------------------------------------- wavelet kernels
@pytest.mark.parametrize("name", ["haar", "db2", "db3", "db4", "db8", "db12", "coif1"])
def test_wavelet_filters_are_orthonormal_with_vanishing_moments(name: str) -> None:
    h = np.asarray(scaling_filter(name))
    assert h.sum() == pytest.approx(math.sqrt(2.0), abs=1e-10)
    for shift in range(0, h.size, 2):  # sum_k h[k] h[k + 2m] = delta_m
        assert np.dot(h[: h.size - shift], h[shift:]) == pytest.approx(float(shift == 0), abs=1e-9)
    lo, hi = decomposition_filters(name)
    np.testing.assert_allclose(lo, h[::-1])
    moments = {"haar": 1, "coif1": 2}.get(name, int(name[2:]) if name.startswith("db") else 0)
    k = np.arange(hi.size, dtype=float)
    for p in range(moments):  # the high-pass filter annihilates polynomials of degree < N
        assert abs(np.sum(k**p * hi)) < 1e-7 * np.sum(np.abs(k**p * hi))


def test_daubechies_2_matches_its_closed_form() -> None:
    r3 = math.sqrt(3.0)
    closed = np.array([1 + r3, 3 + r3, 3 - r3, 1 - r3]) / (4.0 * math.sqrt(2.0))
    np.testing.assert_allclose(scaling_filter("db2"), closed, atol=1e-12)
    assert scaling_filter("haar") == pytest.approx((1 / math.sqrt(2.0),) * 2)


def test_unknown_wavelet_and_bad_response_are_settings_errors() -> None:
    with pytest.raises(SettingsError, match="db99"):
        response_maps(FilterSpec("wavelet", wavelet="db99"))
    with pytest.raises(SettingsError, match="LLX"):
        response_maps(FilterSpec("wavelet", wavelet="db2", response="LLX"))
    with pytest.raises(SettingsError, match="LLH"):
        response_maps(FilterSpec("wavelet", wavelet="db2", response="LLH", dimensions="2D"))
    with pytest.raises(SettingsError, match="support"):
        response_maps(FilterSpec("mean", support=4))
    with pytest.raises(SettingsError, match="sigma"):
        response_maps(FilterSpec("log", sigma_mm=0.0))
    with pytest.raises(NotImplementedError, match="simoncelli"):
        response_maps(FilterSpec("simoncelli"))  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- wavelet transform
def _noise_block(n: int = 24) -> np.ndarray:
    return phantom("noise")[:n, :n, :n]


@pytest.mark.parametrize("name", ["haar", "db3", "coif1"])
@pytest.mark.parametrize("dims", ["3D", "2D"])
def test_undecimated_wavelet_conserves_energy(name: str, dims: str) -> None:
    # With periodic padding |LO(w)|^2 + |HI(w)|^2 = 2 per axis, so the 2^D responses of a level
    # together hold 2^D times the energy of the level's input (the image, or level-1 LL..L).
    img = _noise_block()
    d = 2 if dims == "2D" else 3
    spec = FilterSpec("wavelet", wavelet=name, boundary="wrap", dimensions=dims)  # type: ignore[arg-type]
    level1 = {r: filter_image(img, spec, SPACING, r) for r in responses(spec)}
    assert len(level1) == 2**d
    energy1 = sum(float((v**2).sum()) for v in level1.values())
    assert energy1 == pytest.approx(2**d * float((img**2).sum()), rel=1e-10)
    spec2 = dataclasses.replace(spec, level=2)
    energy2 = sum(
        float((filter_image(img, spec2, SPACING, r) ** 2).sum()) for r in responses(spec2)
    )
    assert energy2 == pytest.approx(2**d * float((level1["L" * d] ** 2).sum()), rel=1e-10)


def test_wavelet_letters_name_x_first() -> None:
    # An image varying along x only (array axis 2): a high-pass along y or z gives 0.
    rng = np.random.default_rng(1)
    img = np.broadcast_to(rng.normal(size=20), (12, 14, 20)).copy()
    spec = FilterSpec("wavelet", wavelet="db2", boundary="wrap")
    for resp in responses(spec):
        out = filter_image(img, spec, SPACING, resp)
        if resp[1:] == "LL":
            assert np.abs(out).max() > 1e-3
        else:
            assert np.abs(out).max() < 1e-9, resp


@pytest.mark.parametrize(
    "spec",
    [
        FilterSpec(
            "wavelet", wavelet="db3", response="LLH", rotation_invariant=True, boundary="wrap"
        ),
        FilterSpec(
            "wavelet",
            wavelet="haar",
            level=2,
            response="LHH",
            rotation_invariant=True,
            boundary="mirror",
        ),
        FilterSpec(
            "wavelet",
            wavelet="db2",
            level=2,
            response="LH",
            rotation_invariant=True,
            dimensions="2D",
            boundary="wrap",
        ),
        FilterSpec("log", sigma_mm=3.0, boundary="wrap"),
        FilterSpec(
            "laws",
            laws_kernel="L5E5E5",
            energy_distance=2,
            rotation_invariant=True,
            pooling="max",
            boundary="wrap",
        ),
        FilterSpec(
            "laws", laws_kernel="E3S3", rotation_invariant=True, dimensions="2D", boundary="mirror"
        ),
    ],
    ids=["db3-LLH", "haar-L2-LHH", "db2-L2-LH-2D", "log", "laws-max-energy", "laws-2D-average"],
)
def test_rotation_invariant_filters_commute_with_right_angle_rotations(spec: FilterSpec) -> None:
    img = _noise_block(20)
    out = filter_image(img, spec, SPACING)
    planes = [(1, 2)] if spec.dimensions == "2D" else [(1, 2), (0, 2), (0, 1)]
    for axes in planes:
        rotated = filter_image(np.rot90(img, 1, axes), spec, SPACING)
        np.testing.assert_allclose(rotated, np.rot90(out, 1, axes), atol=1e-9 * np.abs(out).max())


def test_rotation_invariance_averages_the_oriented_responses() -> None:
    # 2D "LH": the 4 in-plane rotations give LH, its transpose HL and both reversed.
    img = _noise_block(16)
    base = FilterSpec("wavelet", wavelet="db2", dimensions="2D", boundary="wrap")
    inv = filter_image(img, dataclasses.replace(base, rotation_invariant=True), SPACING, "LH")
    oriented = []
    for k in range(4):
        rot = np.rot90(img, k, (1, 2))
        oriented.append(np.rot90(filter_image(rot, base, SPACING, "LH"), -k, (1, 2)))
    np.testing.assert_allclose(inv, np.mean(oriented, axis=0), atol=1e-9 * np.abs(inv).max())


def _cube_rotations(n: int) -> list[np.ndarray]:
    """The 24 right-angle rotations of an n^3 cube, as flat index maps (``g.flat = f.flat[p]``)."""
    idx = np.arange(n**3).reshape(n, n, n)
    found: dict[bytes, np.ndarray] = {}
    frontier = [idx]
    while frontier:
        nxt = []
        for a in frontier:
            key = a.tobytes()
            if key in found:
                continue
            found[key] = a.ravel()
            nxt += [np.rot90(a, 1, (1, 2)), np.rot90(a, 1, (0, 2))]
        frontier = nxt
    return list(found.values())


def test_3d_rotation_invariance_averages_the_24_oriented_responses() -> None:
    img = _noise_block(20)
    base = FilterSpec("wavelet", wavelet="db3", level=2, response="LLH", boundary="wrap")
    inv = filter_image(img, dataclasses.replace(base, rotation_invariant=True), SPACING)
    rotations = _cube_rotations(img.shape[0])
    assert len(rotations) == 24
    total = np.zeros(img.size)
    for p in rotations:
        response = filter_image(img.ravel()[p].reshape(img.shape), base, SPACING).ravel()
        back = np.empty_like(response)
        back[p] = response
        total += back
    np.testing.assert_allclose(inv.ravel(), total / 24, atol=1e-9 * np.abs(inv).max())


def test_response_maps_and_names() -> None:
    assert len(response_maps(FilterSpec("wavelet", wavelet="db2"))) == 8
    names = [
        m.name for m in response_maps(FilterSpec("wavelet", wavelet="db2", rotation_invariant=True))
    ]
    assert names == [f"wavelet-db2-{r}-rotinv" for r in ("LLL", "LLH", "LHH", "HHH")]
    assert [
        m.name
        for m in response_maps(
            FilterSpec("wavelet", wavelet="coif1", level=2, response="HL", dimensions="2D")
        )
    ] == ["wavelet-coif1-level2-HL-2D"]
    assert response_maps(FilterSpec("mean", support=5, boundary="wrap"))[0].name == "mean-5-wrap"
    assert response_maps(FilterSpec("log", sigma_mm=1.5))[0].name == "log-sigma-1.5mm"


# ----------------------------------------------------------------------------- Laws
def test_laws_kernels_have_unit_norm_and_the_impulse_response_is_their_product() -> None:
    for name in ("L3", "E3", "S3", "L5", "E5", "S5", "W5", "R5"):
        assert float(np.sum(laws.kernel_1d(name) ** 2)) == pytest.approx(1.0)
    img = np.zeros((9, 9, 9))
    img[4, 4, 4] = 1.0
    out = filter_image(img, FilterSpec("laws", laws_kernel="L5E5S5", boundary="constant"))
    lx, ey, sz = (laws.kernel_1d(n) for n in ("L5", "E5", "S5"))
    expected = sz[:, None, None] * ey[None, :, None] * lx[None, None, :]  # x along the last axis
    np.testing.assert_allclose(out[2:7, 2:7, 2:7], expected, atol=1e-12)
    assert np.abs(out).sum() == pytest.approx(np.abs(expected).sum())


def test_laws_energy_is_the_mean_absolute_response_in_the_chebyshev_neighbourhood() -> None:
    img = _noise_block(14)
    plain = FilterSpec("laws", laws_kernel="E5W5", dimensions="2D", boundary="wrap")
    resp = filter_image(img, plain)
    energy = filter_image(img, dataclasses.replace(plain, energy_distance=2))
    k = (3, 6, 8)  # any voxel: periodic padding keeps the whole neighbourhood exact
    window = np.abs(np.take(np.take(resp, range(4, 9), axis=1, mode="wrap"), range(6, 11), axis=2))
    assert energy[k] == pytest.approx(float(window[3].mean()))


def test_laws_max_pooling_takes_the_largest_oriented_response() -> None:
    img = _noise_block(12)
    base = FilterSpec("laws", laws_kernel="L3E3", dimensions="2D", boundary="wrap")
    pooled = filter_image(img, dataclasses.replace(base, rotation_invariant=True, pooling="max"))
    oriented = [
        np.rot90(filter_image(np.rot90(img, k, (1, 2)), base), -k, (1, 2)) for k in range(4)
    ]
    np.testing.assert_allclose(pooled, np.max(oriented, axis=0), atol=1e-12)


def test_bad_laws_settings_are_settings_errors() -> None:
    for bad in (
        FilterSpec("laws", laws_kernel="L5E5"),  # 2 kernels for a 3D filter
        FilterSpec("laws", laws_kernel="L5X5E5"),
        FilterSpec("laws", laws_kernel="L5E5E5", energy_distance=-1),
        FilterSpec("laws", laws_kernel="L5E5E5", pooling="median"),  # type: ignore[arg-type]
    ):
        with pytest.raises(SettingsError, match="Laws"):
            response_maps(bad)
    spec = FilterSpec(
        "laws", laws_kernel="l5e5e5", energy_distance=7, rotation_invariant=True, pooling="max"
    )
    assert response_maps(spec)[0].name == "laws-L5E5E5-energy7-rotinv-max"


# ----------------------------------------------------------------------------- filtered ROIs
def _small_case() -> Case:
    rng = np.random.default_rng(7)
    image = rng.integers(-200, 200, size=(10, 36, 40)).astype(float)
    mask = np.zeros(image.shape, dtype=bool)
    mask[0:4, 5:20, 28:40] = True  # touches the first slice and the last column
    return Case.from_arrays(image, mask, spacing=(3.0, 0.9, 0.9), case_id="small")


FILTERS = (
    FilterSpec("mean", support=5, boundary="mirror"),
    FilterSpec("log", sigma_mm=1.5, boundary="nearest"),
    FilterSpec(
        "wavelet", wavelet="db2", level=2, response="LLH", rotation_invariant=True, boundary="wrap"
    ),
    FilterSpec("wavelet", wavelet="haar", response="LH", dimensions="2D", boundary="constant"),
    FilterSpec("laws", laws_kernel="L5E5E5", rotation_invariant=True, pooling="max"),
)


def test_filtered_rois_equal_the_filtered_whole_image_around_the_roi() -> None:
    case = _small_case()
    settings = Settings(
        resampled_spacing=(1.0, 1.0, 1.0),
        interpolation="cubic",
        intensity_rounding=True,
        reseg_range=(-150.0, None),
        filters=FILTERS,
    )
    original = prepare(case, settings)
    grid = Grid(case.image.shape, case.spacing, original.spacing)
    whole = np.round(grid.sample(case.image, (0, 0, 0), grid.shape, 3))
    rois = list(filtered_rois(case, settings, original))
    assert [r.image_type for r in rois] == [
        "mean-5",
        "log-sigma-1.5mm-nearest",
        "wavelet-db2-level2-LLH-rotinv-wrap",
        "wavelet-haar-LH-2D-constant",
        "laws-L5E5E5-rotinv-max",
    ]
    o = original.origin_index
    crop = tuple(slice(o[ax], o[ax] + original.image.shape[ax]) for ax in range(3))
    for spec, roi in zip(FILTERS, rois, strict=True):
        expected = filter_image(whole, spec, original.spacing)[crop]
        np.testing.assert_allclose(roi.image, expected, atol=1e-6, err_msg=roi.image_type)
        assert roi.int_mask is original.int_mask and roi.morph_mask is original.morph_mask
        assert roi.origin_index == original.origin_index and roi.spacing == original.spacing
        levels = roi.grey[roi.int_mask]
        assert levels.min() >= 1 and levels.max() <= roi.n_grey
        assert not roi.grey[~roi.int_mask].any()


def test_fixed_bin_size_starts_at_the_response_minimum_unless_intensities_keep_their_units() -> (
    None
):
    case = _small_case()
    settings = Settings(
        reseg_range=(-150.0, None),
        discretisation=Discretisation("fbs", 10.0),
        filters=(FilterSpec("mean", support=3), FilterSpec("log", sigma_mm=2.0)),
    )
    original = prepare(case, settings)
    mean_roi, log_roi = filtered_rois(case, settings, original)
    assert mean_roi.grey_lower_bound == -150.0  # same bins as the unfiltered image
    assert log_roi.grey_lower_bound == pytest.approx(float(log_roi.image[log_roi.int_mask].min()))
    assert log_roi.bin_width == 10.0 and log_roi.grey[log_roi.int_mask].min() == 1
