"""The site's ClientApp now lives with the rest of the hospital's code in :mod:`fedrad.site`.

This module keeps the historical import path (``fedrad.federation.client_app:app``).
"""

from __future__ import annotations

from fedrad.site.client_app import (
    admit,
    app,
    build_client_app,
    evaluation_metrics,
    node_sealing,
    node_site,
    simulation_resolver,
    site_mods,
)

__all__ = [
    "admit",
    "app",
    "build_client_app",
    "evaluation_metrics",
    "node_sealing",
    "node_site",
    "simulation_resolver",
    "site_mods",
]
