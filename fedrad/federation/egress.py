"""The site's egress log: one JSON line for every message that leaves the site.

:func:`make_egress_mod` is a Flower client mod. Put it **first** in ``ClientApp(mods=[...])``:
Flower wraps the mods so that the first one is the outermost, hence it sees the reply exactly as it
leaves, after inner mods (SecAgg+ masking, sealing) have changed it. For every reply it appends one
line to the site's ``egress_log_path`` before handing the reply back to Flower:

- ``time`` (UTC, ISO 8601), ``site``, ``run`` (Flower run id), ``round`` (the server round: the
  incoming config's ``server-round``, else the message group id Flower's workflows set to the
  round), ``message_type``, ``action`` (a query's ``action``), ``stage`` (a SecAgg+ stage),
  ``node`` (the site's node id) and ``reply_to`` (the id of the message answered);
- ``records``: for each record of the reply, its name, kind (arrays, metrics or config) and items.
  Arrays: key, shape, dtype and byte size. Numbers and text: their values in full (text leaves as
  text, so the hospital reads exactly what left). Numeric lists, bytes and lists of bytes: their
  length and SHA-256 only (see :func:`describe_value`);
- ``error``: the error code and reason of an error reply, or of an exception raised below this mod
  (Flower turns it into an error reply whose reason quotes the exception);
- ``bytes``: the size of the content in Flower's own serialisation, i.e. the sum of
  ``deflate()`` sizes of the distinct objects of the content's object tree (records, arrays,
  array chunks) that a SuperNode pushes to the SuperLink; gRPC framing and the message's own
  metadata are not counted;
- ``sha256``: Flower's object id of the content, the SHA-256 of its serialised head, which names
  the SHA-256 of every record, array and chunk below it: it commits to every byte that left;
- ``plaintext``: only when an inner mod changed the content (sealing to the server's key): the
  same description (``records``, ``bytes``, ``sha256``) of the reply *before* it was sealed,
  recorded by :func:`egress_plaintext_mod` placed right inside the sealing mod. The site cannot
  decrypt its own sealed replies, so this is how the hospital learns what the ciphertext holds;
- ``epsilon``: the privacy budget the site has spent so far: the reply's own ``epsilon`` metric if
  it carries one (in the plaintext of a sealed reply), else the total in the site's privacy ledger
  (``ledger_path``) if it exists (``epsilon_source`` says which).

Refusal rule: a hospital must not send unlogged messages. If the line cannot be written (or the
site cannot be resolved), the mod raises :class:`EgressLogError` instead of returning the reply;
Flower then sends an error reply (whose reason is that error's text) in place of the content, so
no data leaves unlogged. The line is written before the reply is handed to Flower, so a transport
failure afterwards leaves a logged message that never arrived: the log errs on the side of
over-reporting.

Concurrency: each line is one ``write`` on a file opened with ``O_APPEND``, under an exclusive
``flock`` where the platform has it, followed by ``fsync``, so several processes of the same site
(Flower starts one ClientApp process per message in deployment) never interleave lines.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict

from fedrad.errors import FedradError
from fedrad.federation.config import SiteConfig

try:  # POSIX advisory locks; elsewhere O_APPEND single writes alone keep lines whole
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

#: Version of the line format, written into every line as ``v``.
FORMAT_VERSION = 1

#: Key of the SecAgg+ config record and of its stage (as in Flower's ``secaggplus_mod``).
SECAGG_RECORD = "secaggplus_configs"
SECAGG_STAGE = "stage"


Mod = Callable[[Message, Context, Callable[[Message, Context], Message]], Message]

#: Descriptions of the reply before sealing, collected by :func:`egress_plaintext_mod` while the
#: outer egress mod handles one message (None outside it).
_PLAINTEXT: contextvars.ContextVar[list[dict[str, Any]] | None] = contextvars.ContextVar(
    "fedrad_egress_plaintext", default=None
)
#: Protections the site's release path applied while the egress mod handles one message (the
#: masked SecAgg+ vector carries no record of them, so the release path notes them here).
_APPLIED: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "fedrad_egress_applied", default=None
)


def note_protection(protection: Iterable[str]) -> None:
    """Called by the site's release path: the reply being made carries these protections."""
    applied = _APPLIED.get()
    if applied is not None:
        applied.extend(protection)


class EgressLogError(FedradError):
    """The egress log cannot be written, read or parsed (the message names the file and line)."""


# --------------------------------------------------------------------------------------------
# describing what leaves


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _scalar(value: bool | int | float) -> bool | int | float | str:
    """A JSON-safe scalar: non-finite floats become their text (``nan``, ``inf``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def describe_value(key: str, value: Any) -> dict[str, Any]:
    """One item of a metric or config record, as the log shows it.

    Scalars (bool, int, float) and text (str, list of str) are logged in full. A numeric list
    is logged as ``length`` and ``sha256`` of its JSON text (``json.dumps(list)``); ``bytes`` as
    ``length`` and the SHA-256 of the bytes; a list of bytes as ``length`` (items), ``bytes`` (their
    total size) and the SHA-256 of the items each prefixed by its 8-byte big-endian length.
    """
    if isinstance(value, bool | int | float):
        return {"key": key, "type": type(value).__name__, "value": _scalar(value)}
    if isinstance(value, str):
        return {"key": key, "type": "str", "value": value}
    if isinstance(value, bytes):
        return {"key": key, "type": "bytes", "length": len(value), "sha256": _sha256(value)}
    if isinstance(value, list):
        kinds = sorted({type(v).__name__ for v in value})
        kind = f"list[{'|'.join(kinds)}]" if kinds else "list"
        if value and all(isinstance(v, str) for v in value):
            return {"key": key, "type": kind, "length": len(value), "value": list(value)}
        if value and all(isinstance(v, bytes) for v in value):
            framed = b"".join(len(v).to_bytes(8, "big") + v for v in value)
            return {
                "key": key,
                "type": kind,
                "length": len(value),
                "bytes": sum(len(v) for v in value),
                "sha256": _sha256(framed),
            }
        text = json.dumps([_scalar(v) for v in value]).encode()
        return {"key": key, "type": kind, "length": len(value), "sha256": _sha256(text)}
    return {"key": key, "type": type(value).__name__}


def describe_content(content: RecordDict) -> list[dict[str, Any]]:
    """Every record of ``content``: name, kind and items (arrays by key, shape, dtype, bytes)."""
    records: list[dict[str, Any]] = []
    for name, record in content.items():
        if isinstance(record, ArrayRecord):
            items = [
                {
                    "key": key,
                    "shape": list(array.shape),
                    "dtype": str(array.dtype),
                    "bytes": len(array.data),
                }
                for key, array in record.items()
            ]
            records.append({"name": name, "kind": "arrays", "items": items})
        elif isinstance(record, MetricRecord | ConfigRecord):
            kind = "metrics" if isinstance(record, MetricRecord) else "config"
            items = [describe_value(key, value) for key, value in record.items()]
            records.append({"name": name, "kind": kind, "items": items})
        else:  # pragma: no cover - Flower has no other record kind today
            records.append({"name": name, "kind": type(record).__name__, "items": []})
    return records


def content_size_and_hash(content: RecordDict) -> tuple[int, str]:
    """Bytes and SHA-256 of ``content`` in Flower's own serialisation.

    The content is a tree of Flower objects (record dict -> records -> arrays -> chunks); each
    object's ``deflate()`` is its serialised form and its ``object_id`` the SHA-256 of that form,
    which includes its children's ids. Bytes = sum of the sizes of the distinct objects (what is
    pushed once each); hash = the root's object id.
    """
    seen: dict[str, int] = {}

    def visit(obj: Any) -> None:
        for child in (obj.children or {}).values():
            visit(child)
        seen.setdefault(obj.object_id, len(obj.deflate()))

    visit(content)
    return sum(seen.values()), content.object_id


# --------------------------------------------------------------------------------------------
# privacy cost


def ledger_epsilon(path: Path) -> float | None:
    """The total epsilon the site's privacy ledger records, or None (no ledger, or not readable).

    The ledger (:mod:`fedrad.privacy.ledger`) keeps, with every entry, ``epsilon_after``: the
    site's total right after that entry was written, composed over all entries. The total now is
    the largest of these (0 with no entry). Read without locking and never raising: a ledger
    being rewritten, or not a fedrad ledger, gives None and the line says no epsilon.
    """
    from fedrad.privacy.ledger import FORMAT

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return None
    totals = [
        float(e["epsilon_after"])
        for e in data.get("entries") or []
        if isinstance(e, dict)
        and isinstance(e.get("epsilon_after"), int | float)
        and not isinstance(e.get("epsilon_after"), bool)
        and math.isfinite(e["epsilon_after"])
    ]
    return max(totals, default=0.0)


def _reply_epsilon(content: RecordDict) -> float | None:
    for record in content.metric_records.values():
        value = record.get("epsilon")
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


# --------------------------------------------------------------------------------------------
# the mod


def describe_reply(content: RecordDict) -> dict[str, Any]:
    """``records``, ``bytes``, ``sha256`` and ``epsilon`` (its metric, or None) of a content."""
    size, digest = content_size_and_hash(content)
    return {
        "records": describe_content(content),
        "bytes": size,
        "sha256": digest,
        "epsilon": _reply_epsilon(content),
    }


def _incoming(msg: Message) -> dict[str, Any]:
    """Round, action and SecAgg+ stage of the incoming message (read before inner mods run:
    Flower's ``secaggplus_mod`` pops the stage from the incoming config)."""
    info: dict[str, Any] = {"round": None, "action": None, "stage": None}
    if msg.has_content():
        for name, record in msg.content.config_records.items():
            rnd = record.get("server-round")
            if info["round"] is None and isinstance(rnd, int) and not isinstance(rnd, bool):
                info["round"] = rnd
            action = record.get("action")
            if info["action"] is None and isinstance(action, str):
                info["action"] = action
            if name == SECAGG_RECORD and isinstance(record.get(SECAGG_STAGE), str):
                info["stage"] = record[SECAGG_STAGE]
    group = msg.metadata.group_id
    if info["round"] is None and group.isdigit():
        info["round"] = int(group)
    return info


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def egress_entry(
    site: SiteConfig,
    incoming: Message,
    reply: Message | None,
    *,
    info: dict[str, Any] | None = None,
    exception: BaseException | None = None,
    plaintext: dict[str, Any] | None = None,
    applied: list[str] | None = None,
) -> dict[str, Any]:
    """The log line (as a dict) for ``reply`` to ``incoming``, or for an exception raised instead.

    ``info`` is :func:`_incoming` of the message as it arrived (before inner mods changed it);
    ``plaintext`` the :func:`describe_reply` of the reply before an inner mod sealed it (kept only
    when it differs from what left).
    """
    info = info if info is not None else _incoming(incoming)
    meta = incoming.metadata
    entry: dict[str, Any] = {
        "v": FORMAT_VERSION,
        "time": _now(),
        "site": site.site_id,
        "run": meta.run_id,
        "round": info["round"],
        "message_type": meta.message_type,
        "action": info["action"],
        "stage": info["stage"],
        "node": meta.dst_node_id,
        "reply_to": meta.message_id,
        "records": [],
        "error": None,
        "bytes": 0,
        "sha256": None,
        "plaintext": None,
        "epsilon": None,
        "epsilon_source": None,
    }
    if exception is not None:
        # the reason Flower builds when a ClientApp raises, which is what then leaves
        reason = f"{type(exception)}:<'{exception}'>"
        entry["error"] = {"code": None, "reason": reason}
        entry["bytes"] = len(reason.encode())
        entry["sha256"] = _sha256(reason.encode())
    elif reply is not None and reply.has_error():
        entry["error"] = {"code": int(reply.error.code), "reason": str(reply.error.reason)}
        entry["bytes"] = len(str(reply.error.reason).encode())
        entry["sha256"] = _sha256(str(reply.error.reason).encode())
    elif reply is not None and reply.has_content():
        entry.update(describe_reply(reply.content))
        if plaintext is not None and plaintext["sha256"] != entry["sha256"]:
            entry["plaintext"] = {k: plaintext[k] for k in ("records", "bytes", "sha256")}
            if entry["epsilon"] is None:
                entry["epsilon"] = plaintext["epsilon"]
        if entry["epsilon"] is not None:
            entry["epsilon_source"] = "reply"
    if entry["epsilon"] is None:
        entry["epsilon"] = ledger_epsilon(site.ledger_path)
        entry["epsilon_source"] = None if entry["epsilon"] is None else "ledger"
    entry["protection"] = protection_of(entry, applied or [])
    return entry


#: SecAgg+ stage whose reply carries the site's masked update.
MASKED_STAGE = "collect_masked_vectors"


def _released_protection(records: list[dict[str, Any]]) -> list[str]:
    """The protections the site's release path applied (its ``release`` record), e.g. dp."""
    for record in records:
        if record.get("name") != "release":
            continue
        for item in record.get("items", []):
            if item.get("key") == "protection" and isinstance(item.get("value"), str):
                return [p for p in item["value"].split(",") if p and p != "none"]
    return []


def _has_metric(records: list[dict[str, Any]], key: str) -> bool:
    return any(
        item.get("key") == key
        for record in records
        if record.get("kind") == "metrics"
        for item in record.get("items", [])
    )


def protection_of(entry: dict[str, Any], applied: Iterable[str] = ()) -> list[str]:
    """How what left was protected: ``secagg`` (a masked SecAgg+ vector), ``protocol`` (other
    SecAgg+ stages: keys and shares), ``sealed`` (end to end to the server's key), ``dp``
    (differentially private), ``refusal`` (a coded error), else ``clear``."""
    if entry.get("error") is not None:
        return ["refusal"]
    records = entry.get("records") or []
    inner = (entry.get("plaintext") or {}).get("records") or records
    out: list[str] = []
    stage = entry.get("stage")
    if stage:
        out.append("secagg" if stage == MASKED_STAGE else "protocol")
        if stage == MASKED_STAGE:
            out += list(applied)  # what the release path applied (DP-SGD), noted in passing
            if _has_metric(records, "noise-multiplier"):
                out.append("dp")
    else:
        if entry.get("plaintext") is not None:
            out.append("sealed")
        out += _released_protection(inner)
    return sorted(set(out)) or ["clear"]


@contextlib.contextmanager
def _locked(fd: int) -> Iterator[None]:
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def append_entry(path: Path, entry: dict[str, Any]) -> None:
    """Append ``entry`` as one JSON line to ``path`` (parents created), durably (fsync).

    Raises:
        EgressLogError: the file cannot be created or written.
    """
    line = (json.dumps(entry, separators=(",", ":"), allow_nan=False) + "\n").encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            with _locked(fd):
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise EgressLogError(
            f"{path}: cannot write the site's egress log ({exc.strerror or exc}); the reply was "
            "not sent. Make the folder writable (or set [site] egress_log in site.toml)."
        ) from exc


class EgressMod:
    """The egress mod (see :func:`make_egress_mod`). A module-level class, so that Flower's
    simulation can ship it to its workers by pickling (the mod holds only ``resolve_site``)."""

    def __init__(self, resolve_site: Callable[[Context], SiteConfig]):
        self.resolve_site = resolve_site

    def __call__(
        self, msg: Message, context: Context, call_next: Callable[[Message, Context], Message]
    ) -> Message:
        """Run the inner mods and handler, append the reply's line, hand the reply back."""
        try:
            site = self.resolve_site(context)
        except Exception as exc:
            raise EgressLogError(
                f"cannot tell which site this node serves, so its reply could not be logged: {exc}"
            ) from exc
        info = _incoming(msg)
        token = _PLAINTEXT.set([])
        applied_token = _APPLIED.set([])
        try:
            reply = call_next(msg, context)
        except Exception as exc:
            append_entry(
                site.egress_log_path, egress_entry(site, msg, None, info=info, exception=exc)
            )
            raise
        finally:
            seen = _PLAINTEXT.get() or [None]
            applied = list(_APPLIED.get() or [])
            _PLAINTEXT.reset(token)
            _APPLIED.reset(applied_token)
        entry = egress_entry(site, msg, reply, info=info, plaintext=seen[-1], applied=applied)
        append_entry(site.egress_log_path, entry)
        return reply


def make_egress_mod(resolve_site: Callable[[Context], SiteConfig]) -> Mod:
    """A Flower client mod logging every reply to ``resolve_site(context).egress_log_path``.

    Use it as the first (outermost) mod: ``ClientApp(mods=[make_egress_mod(resolve), ...])``,
    with :func:`egress_plaintext_mod` right inside a sealing mod. If the log line cannot be
    written the mod raises :class:`EgressLogError` instead of returning the reply, so nothing
    leaves unlogged.
    """
    return EgressMod(resolve_site)


def egress_plaintext_mod(
    msg: Message, context: Context, call_next: Callable[[Message, Context], Message]
) -> Message:
    """Records what a reply held before an outer mod sealed it, for the egress mod's line.

    Place it right inside the sealing mod: ``[egress_mod, sealing_mod, egress_plaintext_mod,
    ...]``. It changes nothing; outside an egress mod it does nothing.
    """
    reply = call_next(msg, context)
    seen = _PLAINTEXT.get()
    if seen is not None and reply.has_content():
        seen.append(describe_reply(reply.content))
    return reply


# --------------------------------------------------------------------------------------------
# reading the log


@dataclass(frozen=True)
class EgressEntry:
    """One logged outgoing message (see the module docstring for the fields)."""

    time: str
    site: str
    run: int | None
    round: int | None
    message_type: str
    action: str | None
    stage: str | None
    records: tuple[dict[str, Any], ...]
    error: dict[str, Any] | None
    bytes: int
    sha256: str | None
    epsilon: float | None
    epsilon_source: str | None
    plaintext: dict[str, Any] | None = None
    #: How it was protected (``protection_of``): secagg, protocol, sealed, dp, refusal, clear.
    protection: tuple[str, ...] = ()
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> EgressEntry:
        """An entry from a parsed log line; raises ``ValueError`` naming a missing/bad field."""
        if not isinstance(data, dict):
            raise ValueError(f"a log line must be a JSON object, got {type(data).__name__}")
        missing = [k for k in ("time", "message_type", "bytes", "records") if k not in data]
        if missing:
            raise ValueError(f"missing field(s) {', '.join(missing)}")
        if not isinstance(data["bytes"], int) or not isinstance(data["records"], list):
            raise ValueError("'bytes' must be an integer and 'records' a list")
        epsilon = data.get("epsilon")
        return EgressEntry(
            time=str(data["time"]),
            site=str(data.get("site", "")),
            run=data.get("run"),
            round=data.get("round"),
            message_type=str(data["message_type"]),
            action=data.get("action"),
            stage=data.get("stage"),
            records=tuple(data["records"]),
            error=data.get("error"),
            bytes=data["bytes"],
            sha256=data.get("sha256"),
            epsilon=float(epsilon) if isinstance(epsilon, int | float) else None,
            epsilon_source=data.get("epsilon_source"),
            plaintext=data.get("plaintext") if isinstance(data.get("plaintext"), dict) else None,
            protection=tuple(data.get("protection") or protection_of(data)),
            raw=data,
        )

    @property
    def kind(self) -> str:
        """Message type with its action or SecAgg+ stage: ``query/check``, ``train/setup``."""
        detail = self.action or self.stage
        return f"{self.message_type}/{detail}" if detail else self.message_type

    @property
    def sealed(self) -> bool:
        """Whether the content left sealed (the log then also describes the plaintext)."""
        return self.plaintext is not None

    @property
    def content_records(self) -> tuple[dict[str, Any], ...]:
        """What the message holds for its recipient: the plaintext records of a sealed reply,
        else the records that left."""
        if self.plaintext is not None:
            return tuple(self.plaintext.get("records", []))
        return self.records

    def array_shapes(self, *, as_sent: bool = False) -> list[tuple[int, ...]]:
        """The shape of every array the message holds (``as_sent``: of the records that left)."""
        return [tuple(item["shape"]) for _, item in self.items("arrays", as_sent=as_sent)]

    def items(
        self, kind: str | None = None, *, as_sent: bool = False
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(record name, item)`` for every item (of records of ``kind``, if given) of
        :attr:`content_records` (``as_sent``: of the records that left)."""
        for record in self.records if as_sent else self.content_records:
            if kind is None or record.get("kind") == kind:
                for item in record.get("items", []):
                    yield str(record.get("name")), item

    def what(self) -> str:
        """A one-line, human-readable account of what left (and, if sealed, what it holds)."""
        if self.error:
            return f"error: {self.error.get('reason')}"
        text = _show_records(self.content_records)
        if self.plaintext is not None:
            return f"sealed {self.bytes} B, holding: {text}"
        return text


def _show_records(records: Iterable[dict[str, Any]]) -> str:
    parts = []
    for record in records:
        shown = [_show_item(record.get("kind", ""), item) for item in record.get("items", [])]
        parts.append(f"{record.get('name')}: {', '.join(shown) or '(empty)'}")
    return " | ".join(parts) or "(empty)"


def _show_item(kind: str, item: dict[str, Any]) -> str:
    key = item.get("key")
    if kind == "arrays":
        shape = "x".join(str(n) for n in item.get("shape", [])) or "scalar"
        return f"{key} [{shape}] {item.get('dtype')}"
    if "value" in item and not isinstance(item["value"], list):
        value = item["value"]
        text = f"{value:.4g}" if isinstance(value, float) else repr(value)
        return f"{key}={text}"
    if "value" in item:
        values = item["value"]
        shown = ", ".join(repr(v) for v in values[:3]) + (", ..." if len(values) > 3 else "")
        return f"{key}[{len(values)}]=[{shown}]"
    if "length" in item:
        return f"{key}: {item.get('type')} of {item['length']}"
    return f"{key}: {item.get('type')}"


def read_egress(path: str | Path) -> list[EgressEntry]:
    """Every entry of an egress log, in order.

    Raises:
        EgressLogError: the file is missing or unreadable, or a line is not a valid entry (named
            by its line number).
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise EgressLogError(
            f"{path}: no egress log here (the site has sent nothing yet, or its site.toml names "
            "another [site] egress_log)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EgressLogError(f"{path}: cannot read the egress log ({exc})") from None
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entries.append(EgressEntry.from_dict(json.loads(line)))
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            raise EgressLogError(
                f"{path}: line {number} is not a valid egress entry ({exc}); the log was changed "
                "or truncated by something other than fedrad"
            ) from None
    return entries


@dataclass(frozen=True)
class EgressSummary:
    """Totals of an egress log: messages and bytes per message kind, the largest epsilon."""

    messages: int
    bytes: int
    by_kind: dict[str, tuple[int, int]]
    runs: tuple[int, ...]
    errors: int
    max_epsilon: float | None
    first: str | None
    last: str | None


def summarise(entries: Iterable[EgressEntry]) -> EgressSummary:
    """Messages, bytes per kind (``message_type/action``: count and bytes), runs, max epsilon."""
    entries = list(entries)
    by_kind: dict[str, tuple[int, int]] = {}
    for e in entries:
        count, size = by_kind.get(e.kind, (0, 0))
        by_kind[e.kind] = (count + 1, size + e.bytes)
    epsilons = [e.epsilon for e in entries if e.epsilon is not None]
    runs = sorted({e.run for e in entries if isinstance(e.run, int)})
    return EgressSummary(
        messages=len(entries),
        bytes=sum(e.bytes for e in entries),
        by_kind=dict(sorted(by_kind.items())),
        runs=tuple(runs),
        errors=sum(1 for e in entries if e.error),
        max_epsilon=max(epsilons) if epsilons else None,
        first=entries[0].time if entries else None,
        last=entries[-1].time if entries else None,
    )
