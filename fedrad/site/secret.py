"""The site's secret and what it seeds: DP noise, sampling and the train/held-out split.

One 32-byte secret in ``keys_dir/dp-noise.secret`` (owner-only, made on first use; a
simulation derives it from the scenario seed so that runs repeat). Every random choice the
site makes for a study is ``HMAC-SHA256(secret, label)`` with a label naming what it is for and
the key it is bound to, so the server can neither regenerate the site's noise (and subtract it)
nor pick which patients train and which are held out.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path

from fedrad.federation.config import SiteConfig

#: The site's secret, in its keys folder (created on first use).
SITE_SECRET = "dp-noise.secret"


def write_site_secret(site: SiteConfig, secret: bytes | None = None) -> Path:
    """Write the site's secret (random unless given), readable by the site only."""
    from fedrad.secure.files import write_owner_only

    return write_owner_only(
        site.keys_dir / SITE_SECRET, secret if secret is not None else secrets.token_bytes(32)
    )


def site_secret(site: SiteConfig) -> bytes:
    """The site's secret, made on first use."""
    path = site.keys_dir / SITE_SECRET
    if not path.exists():
        write_site_secret(site)
    return path.read_bytes()


def derive_seed(site: SiteConfig, label: str) -> int:
    """A 64-bit seed: the first 8 bytes of ``HMAC-SHA256(site secret, label)``."""
    digest = hmac.new(site_secret(site), label.encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big")
