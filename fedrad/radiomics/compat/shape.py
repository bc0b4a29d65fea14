"""PyRadiomics' 3D shape features (``shape``).

The mask, padded by one voxel, is meshed by marching cubes at iso-level 0.5 (vertices at edge
midpoints, so diameters do not depend on how ambiguous faces are triangulated); cubes are
triangulated from the classic (Lorensen) table, a cube with its pivot corner inside as its
complement (see :func:`mesh_triangles`). volume and surface area then
match PyRadiomics' mesh (IBSI mode resolves ambiguous faces otherwise: ``docs/compat.md``). Volume and
surface area are those of the mesh. Diameters are the largest vertex distances in 3D and within
axial (same slice), coronal (same row) and sagittal (same column) planes. Axis lengths are
``4 sqrt(lambda)`` of the eigenvalues of the voxel-centre covariance normalised by ``N``
(IBSI's PCA uses ``N - 1``). ``VoxelVolume`` is ``N`` times the voxel volume.
"""

from __future__ import annotations

import contextlib

import numpy as np
from scipy.spatial import ConvexHull, QhullError
from scipy.spatial.distance import pdist

FEATURES: tuple[str, ...] = (
    "Elongation",
    "Flatness",
    "LeastAxisLength",
    "MajorAxisLength",
    "Maximum2DDiameterColumn",
    "Maximum2DDiameterRow",
    "Maximum2DDiameterSlice",
    "Maximum3DDiameter",
    "MeshVolume",
    "MinorAxisLength",
    "Sphericity",
    "SurfaceArea",
    "SurfaceVolumeRatio",
    "VoxelVolume",
)


def _largest_distance(points: np.ndarray) -> float:
    """Largest pairwise distance of ``points`` (on the convex hull when there are many)."""
    if len(points) < 2:
        return 0.0
    if len(points) > 64:
        with contextlib.suppress(QhullError):  # a flat set: every point may lie on the hull
            points = points[ConvexHull(points).vertices]
    return float(pdist(points).max())


def _plane_diameter(verts: np.ndarray, axis: int) -> float:
    """Largest distance between vertices sharing their coordinate on ``axis``."""
    best = 0.0
    others = [a for a in range(3) if a != axis]
    for value in np.unique(verts[:, axis]):
        best = max(best, _largest_distance(verts[verts[:, axis] == value][:, others]))
    return best


#: Corner (dz, dy, dx) of a marching cube whose state picks the triangulation: when it lies
#: inside the ROI, the cube is triangulated as its complement (inside and outside swapped, faces
#: reversed), as PyRadiomics' lookup of the first 128 cube configurations does.
_PIVOT_CORNER = np.array((1, 1, 0))


def _cube_triangles(volume: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Triangles (voxel units) of the 0.5 iso-surface of ``volume`` and their cube's index."""
    from skimage.measure import marching_cubes

    verts, faces, _, _ = marching_cubes(volume, level=0.5, method="lorensen")
    tri = verts[faces]
    return tri, np.floor(tri.mean(axis=1)).astype(np.int64)


def mesh_triangles(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Triangles ``(T, 3, 3)`` (voxel units, z/y/x) of PyRadiomics' mesh and their signs.

    The mask is padded by one voxel. A cube whose pivot corner is outside takes its triangles
    from the mesh of the mask, otherwise from the mesh of the complement with sign -1.
    """
    padded = np.pad(mask, 1).astype(np.float64)
    parts, signs = [], []
    for volume, sign in ((padded, 1.0), (1.0 - padded, -1.0)):
        tri, cube = _cube_triangles(volume)
        z, y, x = (cube + _PIVOT_CORNER).T
        keep = (padded[z, y, x] > 0.5) == (sign < 0)
        parts.append(tri[keep])
        signs.append(np.full(int(keep.sum()), sign))
    return np.concatenate(parts), np.concatenate(signs)


def compute(mask: np.ndarray, spacing: tuple[float, float, float]) -> dict[str, float]:
    """Every default shape feature of the boolean ``mask`` (z, y, x) with ``spacing`` (z, y, x)."""
    tri, signs = mesh_triangles(mask)
    tri = tri * np.asarray(spacing)
    verts = np.unique(tri.reshape(-1, 3), axis=0)
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area = float(0.5 * np.linalg.norm(cross, axis=1).sum())
    signed = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2]))
    volume = float(abs(np.sum(signs * signed)) / 6)
    points = np.argwhere(mask) * np.asarray(spacing)
    n = len(points)
    centred = (points - points.mean(axis=0)) / np.sqrt(n)
    eig = np.sort(np.linalg.eigvals(centred.T @ centred).real)
    eig[(eig < 0) & (eig > -1e-10)] = 0.0
    with np.errstate(invalid="ignore", divide="ignore"):
        axes = 4.0 * np.sqrt(eig)
        return {
            "Elongation": float(np.sqrt(eig[1] / eig[2])),
            "Flatness": float(np.sqrt(eig[0] / eig[2])),
            "LeastAxisLength": float(axes[0]),
            "MajorAxisLength": float(axes[2]),
            "Maximum2DDiameterColumn": _plane_diameter(verts, 1),
            "Maximum2DDiameterRow": _plane_diameter(verts, 2),
            "Maximum2DDiameterSlice": _plane_diameter(verts, 0),
            "Maximum3DDiameter": _largest_distance(verts),
            "MeshVolume": volume,
            "MinorAxisLength": float(axes[1]),
            "Sphericity": float((36 * np.pi * volume**2) ** (1.0 / 3.0) / area),
            "SurfaceArea": area,
            "SurfaceVolumeRatio": area / volume,
            "VoxelVolume": float(n * np.prod(spacing)),
        }
