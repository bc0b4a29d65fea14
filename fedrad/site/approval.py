"""Studies a site has approved, pinned by a canonical hash.

A study's hash covers everything that decides what is computed and released: the task and
outcome columns, the split (``test_fraction``, ``cv_folds``), the feature settings *by content*
(a study never names a file the site should open), the model, the strategy, the privacy and the
secure-aggregation settings. The site's split depends on the split settings alone
(:func:`split_hash`). :func:`approval_hash` leaves out ``cv_fold`` only, so approving a
cross-validated study approves each of its folds; :func:`study_hash` includes it (each fold is
a separate release in the ledger).

The site approves a study once (``fedrad site approve SITE.toml STUDY.toml`` or ``fedrad site
check --approve``); its handlers answer only messages whose study has an approved hash and
refuse any other with the fields that differ from the approved study of the same name. Approvals
live in ``keys_dir/approved-studies.json`` (owner-only).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedrad.federation.config import SiteConfig, StudyConfig
from fedrad.site.refusal import SiteRefusal

APPROVALS_FILE = "approved-studies.json"
APPROVALS_FORMAT = "fedrad-approved-studies"


def canonical_study(study: StudyConfig) -> dict[str, Any]:
    """The study as a plain mapping with sorted keys: what the hash covers."""
    data = study.to_dict()
    return json.loads(json.dumps(data, sort_keys=True, default=str))


def _digest(data: dict[str, Any]) -> str:
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def study_hash(study: StudyConfig) -> str:
    """SHA-256 of the canonical study, ``cv_fold`` included."""
    return _digest(canonical_study(study))


def approval_hash(study: StudyConfig) -> str:
    """SHA-256 of the canonical study with ``cv_fold`` left out (what a site approves)."""
    data = canonical_study(study)
    data.pop("cv_fold", None)
    return _digest(data)


def computation_hash(study: StudyConfig) -> str:
    """What fixes the site's randomness for a study: the study without its transport
    protection (``secure_aggregation``), which changes how a result leaves, not what it is."""
    data = canonical_study(study)
    data.pop("secure_aggregation", None)
    return _digest(data)


#: The study fields that define a site's split. Nothing else (not the study's name or seed):
#: every study with the same split settings sees the same held-out patients at a site, so two
#: approved studies cannot be differenced into a patient's values through different splits.
SPLIT_FIELDS = ("task", "label_column", "time_column", "event_column", "test_fraction", "cv_folds")


def split_hash(study: StudyConfig) -> str:
    """What fixes the site's split (with its secret): :data:`SPLIT_FIELDS` only, so the folds of
    a cross-validated study share one assignment."""
    data = canonical_study(study)
    return _digest({key: data[key] for key in SPLIT_FIELDS})


def _path(site: SiteConfig) -> Path:
    return site.keys_dir / APPROVALS_FILE


def approved_studies(site: SiteConfig) -> dict[str, dict[str, Any]]:
    """``{approval hash: {"name", "approved_at", "study"}}`` ({} before the first approval)."""
    try:
        data = json.loads(_path(site).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise SiteRefusal(
            "internal", f"{_path(site)}: the site's approvals cannot be read ({exc})"
        ) from None
    if not isinstance(data, dict) or data.get("format") != APPROVALS_FORMAT:
        raise SiteRefusal("internal", f"{_path(site)}: not a fedrad approvals file")
    return dict(data.get("studies", {}))


def refuse_params_path(study: StudyConfig) -> None:
    """A study must carry its feature settings by content, never a path the site would open."""
    if "params" in study.feature_settings:
        raise SiteRefusal(
            "malformed",
            "the study's [features] names a file (params); a site never opens a path a study "
            "names: the coordinator's fedrad inlines the file's settings when it reads study.toml",
        )


def approve(site: SiteConfig, study: StudyConfig) -> str:
    """Record the site's approval of ``study``; returns its approval hash."""
    from fedrad.secure.files import write_owner_only

    refuse_params_path(study)
    studies = approved_studies(site)
    key = approval_hash(study)
    data = canonical_study(study)
    data.pop("cv_fold", None)
    studies[key] = {
        "name": study.name,
        "approved_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "study": data,
    }
    text = json.dumps({"format": APPROVALS_FORMAT, "version": 1, "studies": studies}, indent=1)
    write_owner_only(_path(site), (text + "\n").encode("utf-8"))
    return key


def revoke(site: SiteConfig, approval: str) -> bool:
    """Withdraw an approval (by hash or hash prefix); True if one was removed."""
    from fedrad.secure.files import write_owner_only

    studies = approved_studies(site)
    matches = [k for k in studies if k.startswith(approval)]
    for key in matches:
        del studies[key]
    if matches:
        text = json.dumps({"format": APPROVALS_FORMAT, "version": 1, "studies": studies}, indent=1)
        write_owner_only(_path(site), (text + "\n").encode("utf-8"))
    return bool(matches)


def differing_fields(
    approved: dict[str, Any], asked: dict[str, Any], prefix: str = ""
) -> list[str]:
    """Dotted names of the fields whose values differ (``training.rounds``)."""
    out: list[str] = []
    for key in sorted(set(approved) | set(asked)):
        a, b = approved.get(key, "<absent>"), asked.get(key, "<absent>")
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += differing_fields(a, b, prefix=f"{name}.")
        elif a != b:
            out.append(name)
    return out


def require_approved(site: SiteConfig, study: StudyConfig) -> str:
    """The study's full hash if the site approved it; else :class:`SiteRefusal` naming the
    fields that differ from the approved study of the same name."""
    refuse_params_path(study)
    studies = approved_studies(site)
    key = approval_hash(study)
    if key in studies:
        return study_hash(study)
    asked = canonical_study(study)
    asked.pop("cv_fold", None)
    same_name = [v for v in studies.values() if v.get("name") == study.name]
    if same_name:
        fields = differing_fields(same_name[-1]["study"], asked)
        detail = (
            f"study {study.name!r} differs from the approved one in: {', '.join(fields[:8])}"
            + (" ..." if len(fields) > 8 else "")
        )
    else:
        detail = f"study {study.name!r} (hash {key[:12]}) was never approved by this site"
    raise SiteRefusal("study-not-approved", detail)


def study_from_message(text: str) -> StudyConfig:
    """Parse the study a message carries; a malformed one is refused."""
    from fedrad.federation.protocol import study_from_json

    try:
        return study_from_json(text)
    except Exception as exc:
        raise SiteRefusal("malformed", f"the message's study cannot be read: {exc}") from None


__all__ = [
    "approval_hash",
    "approve",
    "approved_studies",
    "canonical_study",
    "computation_hash",
    "differing_fields",
    "require_approved",
    "revoke",
    "split_hash",
    "study_from_message",
    "study_hash",
]
