"""The site's train/held-out split, fixed by the site for an approved study.

The split seed is ``HMAC(site secret, "split:" + split hash)``: it depends only on the
split settings of the approved study (so every message of a study, every fold of a cross-validated
study and every other study with the same split settings sees the
same assignment) and on a secret the server never sees (so the server cannot choose, or even
predict, which patients are held out). Nothing in a message can change it.
"""

from __future__ import annotations

from fedrad.federation.config import SiteConfig, StudyConfig


def split_seed(site: SiteConfig, study: StudyConfig) -> int:
    """The seed of the site's stratified split and folds for ``study``."""
    from fedrad.site.approval import split_hash
    from fedrad.site.secret import derive_seed

    return derive_seed(site, f"split:{split_hash(study)}")
