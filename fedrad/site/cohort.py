"""The site's check of a SecAgg+ round: it joins only cohorts its policy accepts.

Flower's SecAgg+ setup stage tells each site the round's reconstruction threshold and how many
sites share its secrets; the share-keys stage lists the sites' public keys. A relay or curious
server that wraps a round around too few sites, or with a threshold of 1 (whose unmask stage
would hand over this site's individual update), is refused before the site shares anything.
"""

from __future__ import annotations

from collections.abc import Callable

from flwr.app import Context, Message, MessageType
from flwr.clientapp.typing import ClientAppCallable, Mod
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage

from fedrad.site.policy import SitePolicy
from fedrad.site.refusal import SiteRefusal


def check_cohort(configs, policy: SitePolicy) -> None:
    """Refuse a SecAgg+ stage below the policy's ``min_secagg_sites`` / ``min_secagg_threshold``."""
    stage = str(configs.get(Key.STAGE, ""))
    if stage == Stage.SETUP:
        threshold = int(configs.get(Key.THRESHOLD, 0))
        shares = int(configs.get(Key.SHARE_NUMBER, 0))
        if threshold < policy.min_secagg_threshold:
            raise SiteRefusal(
                "secagg-cohort",
                f"SecAgg+ reconstruction threshold {threshold} is below the site's "
                f"min_secagg_threshold {policy.min_secagg_threshold}",
            )
        if shares < policy.min_secagg_sites:
            raise SiteRefusal(
                "secagg-cohort",
                f"SecAgg+ shares among {shares} site(s), below the site's min_secagg_sites "
                f"{policy.min_secagg_sites}",
            )
    elif stage == Stage.SHARE_KEYS:
        peers = len([k for k in configs if k != Key.STAGE])
        if peers < policy.min_secagg_sites:
            raise SiteRefusal(
                "secagg-cohort",
                f"the SecAgg+ round holds {peers} site(s), below the site's min_secagg_sites "
                f"{policy.min_secagg_sites}",
            )


def make_cohort_mod(resolve_policy: Callable[[Context], SitePolicy]) -> Mod:
    """A ClientApp mod applying :func:`check_cohort` to every SecAgg+ message."""

    def cohort_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        if (
            msg.metadata.message_type == MessageType.TRAIN
            and msg.has_content()
            and RECORD_KEY_CONFIGS in msg.content.config_records
        ):
            check_cohort(msg.content.config_records[RECORD_KEY_CONFIGS], resolve_policy(context))
        return call_next(msg, context)

    return cohort_mod
