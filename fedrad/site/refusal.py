"""How a site says no: a short code and a generic message leave; the detail stays at the site.

A reply that fails carries only ``fedrad-site-refusal <code>: <generic message>`` to the server
(Flower turns an exception into an error reply whose reason quotes it, which would carry file
lines, values and positions to the server). :func:`make_refusal_mod` catches every exception of
the handlers and mods inside it, writes the full detail to the site's own log
(``log_dir/site.log``) and returns the coded error reply instead.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable

from flwr.app import Context, Error, Message
from flwr.clientapp.typing import ClientAppCallable, Mod

from fedrad.errors import FedradError

#: Prefix of every refusal reason a site sends.
REFUSAL_PREFIX = "fedrad-site-refusal"
#: Flower error code of a site's refusal (Flower's own codes are small integers).
REFUSAL_ERROR_CODE = 4_000

#: code -> the generic message that leaves the site.
REFUSAL_CODES: dict[str, str] = {
    "study-not-approved": "this site has not approved the study (hash mismatch)",
    "policy": "the site's policy does not allow this request",
    "budget": "the site's privacy budget does not allow this request",
    "already-released": "the site already released a different answer for this request",
    "query-limit": "the site's limit on releases of this kind is reached",
    "malformed": "the request is malformed",
    "sealing-required": "the site sends this reply only sealed to the pinned server key",
    "secagg-cohort": "the secure-aggregation round is below the site's cohort or threshold",
    "update-out-of-range": "the update does not fit the secure-aggregation range",
    "site-data": "the site cannot serve this request with its data",
    "internal": "the site failed to process the request",
}


class SiteRefusal(FedradError):  # noqa: N818 - a refusal, not an error of the site
    """The site refuses a request. ``code`` leaves the site; ``detail`` stays in its log."""

    def __init__(self, code: str, detail: str):
        if code not in REFUSAL_CODES:
            raise ValueError(f"unknown refusal code {code!r}")
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


def refusal_reason(code: str) -> str:
    """The text that leaves the site for a refusal with ``code``."""
    return f"{REFUSAL_PREFIX} {code}: {REFUSAL_CODES[code]}"


def refusal_code(reason: str) -> str | None:
    """The code of a site's refusal reason (server side), or None for any other error."""
    text = str(reason)
    start = text.find(REFUSAL_PREFIX)
    if start < 0:
        return None
    code = text[start + len(REFUSAL_PREFIX) :].strip().split(":", 1)[0].strip()
    return code if code in REFUSAL_CODES else None


def classify(exc: BaseException) -> str:
    """The refusal code of an exception raised while serving a request."""
    if isinstance(exc, SiteRefusal):
        return exc.code
    from fedrad.privacy.ledger import PrivacyBudgetExceeded

    if isinstance(exc, PrivacyBudgetExceeded):
        return "budget"
    from fedrad.privacy.ledger import ReleaseConflictError

    if isinstance(exc, ReleaseConflictError):
        return "already-released"
    names = {cls.__name__ for cls in type(exc).__mro__}
    if "UpdateOutOfRangeError" in names:
        return "update-out-of-range"
    if "SealError" in names:
        return "sealing-required"
    if "PrivacyError" in names:
        return "policy"
    if "InputError" in names or "ConfigError" in names or "SettingsError" in names:
        return "site-data"
    return "internal"


def site_logger(log_dir) -> logging.Logger:
    """The site's own log (``log_dir/site.log``): the detail of every refusal goes here."""
    from pathlib import Path

    path = Path(log_dir) / "site.log"
    logger = logging.getLogger(f"fedrad.site.{path}")
    if not any(getattr(h, "baseFilename", None) == str(path) for h in logger.handlers):
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def make_refusal_mod(resolve_log_dir: Callable[[Context], object]) -> Mod:
    """A ClientApp mod turning every exception below it into a coded, generic error reply.

    Place it right inside the egress log (so the log records exactly the coded reply that left)
    and outside every other mod.
    """

    def refusal_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        try:
            reply = call_next(msg, context)
        except Exception as exc:  # every failure leaves as a code; the detail stays here
            code = classify(exc)
            try:
                logger = site_logger(resolve_log_dir(context))
                logger.warning(
                    "refused %s (run %s): %s %s\n%s",
                    msg.metadata.message_type,
                    msg.metadata.run_id,
                    code,
                    exc,
                    traceback.format_exc(),
                )
            except Exception:
                logging.getLogger("fedrad.site").warning("refused a request: %s", code)
            return Message(
                error=Error(code=REFUSAL_ERROR_CODE, reason=refusal_reason(code)), reply_to=msg
            )
        if reply.has_error() and refusal_code(str(reply.error.reason)) is None:
            reason = str(reply.error.reason)
            logging.getLogger("fedrad.site").warning("an inner mod replied with error: %s", reason)
            return Message(
                error=Error(code=REFUSAL_ERROR_CODE, reason=refusal_reason("internal")),
                reply_to=msg,
            )
        return reply

    return refusal_mod
