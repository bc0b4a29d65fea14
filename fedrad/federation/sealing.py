"""Sealed site replies over Flower: the SuperLink relays them but can neither read nor alter them.

Used when secure aggregation is off (robust aggregation needs each site's update). The ServerApp
offers sealing by putting its X25519 public key (raw 32 bytes) in the instruction's ``config``
record under :data:`SEALING_PUBLIC_KEY`; the site's :func:`make_sealing_mod` then turns the
handler's reply content into one ``ConfigRecord`` :data:`SEALED_RECORD` (ciphertext, nonce,
ephemeral key, recipient key, signature as bytes; the site id as str; run, round, message id
and envelope version as int): no plaintext array or metric travels. :class:`SealingGrid` (or
:func:`open_replies`) opens the replies before the strategy sees them, so strategies aggregate
the site's original ``RecordDict``. The cryptography is :mod:`fedrad.secure.sealing`.

Payload encoding (:func:`encode_records`, deterministic): ``MAGIC || u32 header length ||
header || array bytes``. The header is compact JSON of lists only (so record and key order is
kept, which ``ArrayRecord.to_numpy_ndarrays`` relies on): per record its name, kind
(arrays/metrics/config) and entries. An array entry is (key, dtype, shape, stype, byte count)
and its bytes (Flower's ``.npy`` serialisation) follow the header in order; a metric or config
value is tagged with its type (floats as ``float.hex`` so they round-trip bit for bit, bytes as
base64).

Trust. A site that pins the server's key (``server-sealing.pub`` in its keys folder) refuses to
seal to any other key offered, so a relay cannot substitute its own key and read the update. A
site with ``required=True`` refuses any instruction outside SecAgg+ that offers no key (a relay could strip
the offer), unless SecAgg+ protects it. The server requires every reply of a batch it asked to
be sealed to come sealed. Both refusals happen before any training, so no privacy is spent.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)

from fedrad.secure.identity import (
    IDENTITY_KEY,
    SERVER_SEALING_PUB,
    SiteRegistry,
    fingerprint,
    load_identity,
    load_sealing_public,
    public_bytes,
)
from fedrad.secure.sealing import (
    MalformedUpdateError,
    ReplayedUpdateError,
    ReplayGuard,
    SealedUpdate,
    SealError,
    TamperedUpdateError,
    open_sealed,
    seal,
)

log = logging.getLogger("fedrad.sealing")

#: Key of the instruction's ``config`` record that offers sealing (value: raw X25519 key bytes).
SEALING_PUBLIC_KEY = "sealing-public-key"
#: Name of the only record of a sealed reply.
SEALED_RECORD = "sealed"
#: Error code of a reply the ServerApp refused (fedrad's own; Flower's codes are below 100).
SEAL_REJECTED_CODE = 4001

_MAGIC = b"fedrad-records/v1\n"
_CONFIG_KEY = "config"
_ROUND_KEY = "server-round"
_SECAGG_CONFIGS = "secaggplus_configs"

ClientAppCallable = Callable[[Message, Context], Message]
Mod = Callable[[Message, Context, ClientAppCallable], Message]


# --- payload encoding ----------------------------------------------------------------------


def _encode_scalar(value: Any) -> tuple[str, Any]:
    if isinstance(value, bool):
        return "bool", value
    if isinstance(value, int):
        return "int", value
    if isinstance(value, float):
        return "float", value.hex()
    if isinstance(value, str):
        return "str", value
    if isinstance(value, bytes):
        return "bytes", base64.b64encode(value).decode("ascii")
    raise SealError(f"cannot seal a record value of type {type(value).__name__}")


def _encode_value(value: Any) -> list[Any]:
    if isinstance(value, list):
        items = [_encode_scalar(v) for v in value]
        kinds = {k for k, _ in items}
        if len(kinds) > 1:
            raise SealError(f"cannot seal a list mixing types {sorted(kinds)}")
        return [f"list:{kinds.pop() if kinds else ''}", [v for _, v in items]]
    return list(_encode_scalar(value))


def encode_records(content: RecordDict) -> bytes:
    """The records of ``content`` as bytes, deterministically (same records -> same bytes)."""
    header: list[list[Any]] = []
    blobs: list[bytes] = []
    for name, record in content.items():
        if isinstance(record, ArrayRecord):
            entries = []
            for key, array in record.items():
                data = bytes(array.data)
                entries.append([key, array.dtype, list(array.shape), array.stype, len(data)])
                blobs.append(data)
            header.append([name, "arrays", entries])
        elif isinstance(record, MetricRecord | ConfigRecord):
            kind = "metrics" if isinstance(record, MetricRecord) else "config"
            header.append([name, kind, [[k, *_encode_value(v)] for k, v in record.items()]])
        else:
            raise SealError(f"cannot seal record {name!r} of type {type(record).__name__}")
    head = json.dumps(header, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()
    return _MAGIC + struct.pack(">I", len(head)) + head + b"".join(blobs)


def _decode_scalar(kind: str, value: Any) -> Any:
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind == "float" and isinstance(value, str):
        return float.fromhex(value)
    if kind == "str" and isinstance(value, str):
        return value
    if kind == "bytes" and isinstance(value, str):
        return base64.b64decode(value.encode("ascii"), validate=True)
    raise ValueError(f"value {value!r} is not of the declared type {kind!r}")


def _decode_value(tag: Any, value: Any) -> Any:
    if not isinstance(tag, str):
        raise ValueError(f"bad type tag {tag!r}")
    if tag.startswith("list:"):
        if not isinstance(value, list):
            raise ValueError(f"{tag} value is not a list")
        return [_decode_scalar(tag[5:], v) for v in value]
    return _decode_scalar(tag, value)


def _decode_array(entry: Any, data: memoryview, offset: int) -> tuple[str, Array, int]:
    key, dtype, shape, stype, size = entry
    if not (isinstance(key, str) and isinstance(dtype, str) and isinstance(stype, str)):
        raise ValueError(f"array entry {entry!r} is malformed")
    if not isinstance(shape, list) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
    ):
        raise ValueError(f"array {key!r}: bad shape {shape!r}")
    if not isinstance(size, int) or size < 0 or offset + size > len(data):
        raise ValueError(f"array {key!r}: its {size!r} bytes run past the payload")
    blob = bytes(data[offset : offset + size])
    if stype == "numpy.ndarray":
        loaded = np.load(io.BytesIO(blob), allow_pickle=False)
        if str(loaded.dtype) != dtype or list(loaded.shape) != shape:
            raise ValueError(
                f"array {key!r}: declared {dtype}{tuple(shape)}, "
                f"holds {loaded.dtype}{tuple(loaded.shape)}"
            )
    return key, Array(dtype=dtype, shape=tuple(shape), stype=stype, data=blob), offset + size


def decode_records(payload: bytes, *, site_id: str | None = None) -> RecordDict:
    """The ``RecordDict`` that :func:`encode_records` made; :class:`MalformedUpdateError` else."""
    try:
        if not payload.startswith(_MAGIC):
            raise ValueError("it does not start with fedrad's record encoding marker")
        start = len(_MAGIC) + 4
        if len(payload) < start:
            raise ValueError("it is truncated")
        (head_len,) = struct.unpack(">I", payload[len(_MAGIC) : start])
        if start + head_len > len(payload):
            raise ValueError("its header runs past its end")
        header = json.loads(payload[start : start + head_len].decode("utf-8"))
        data = memoryview(payload)[start + head_len :]
        offset = 0
        content = RecordDict()
        if not isinstance(header, list):
            raise ValueError("its header is not a list of records")
        for item in header:
            name, kind, entries = item
            if not isinstance(name, str) or name in content or not isinstance(entries, list):
                raise ValueError(f"record entry {item!r} is malformed")
            if kind == "arrays":
                record = ArrayRecord()
                for entry in entries:
                    key, array, offset = _decode_array(entry, data, offset)
                    record[key] = array
                content[name] = record
            elif kind in ("metrics", "config"):
                values = {}
                for key, tag, value in entries:
                    if not isinstance(key, str):
                        raise ValueError(f"record {name!r}: key {key!r} is not a string")
                    values[key] = _decode_value(tag, value)
                content[name] = MetricRecord(values) if kind == "metrics" else ConfigRecord(values)
            else:
                raise ValueError(f"record {name!r} has unknown kind {kind!r}")
        if offset != len(data):
            raise ValueError(f"{len(data) - offset} byte(s) follow the last array")
    except (
        ValueError,
        TypeError,
        KeyError,
        EOFError,
        OSError,
        RecursionError,
        struct.error,
    ) as exc:
        raise MalformedUpdateError(
            f"the decrypted payload is not a record set ({exc})", site_id=site_id
        ) from None
    return content


# --- the sealed record ---------------------------------------------------------------------


def sealed_to_record(sealed: SealedUpdate) -> ConfigRecord:
    """The ``ConfigRecord`` that carries ``sealed`` (no plaintext of the payload)."""
    return ConfigRecord(
        {
            "version": sealed.version,
            "site-id": sealed.site_id,
            "run-id": sealed.run_id,
            "server-round": sealed.server_round,
            "message-id": sealed.message_id,
            "ephemeral-key": sealed.ephemeral_public,
            "recipient-key": sealed.recipient_public,
            "nonce": sealed.nonce,
            "ciphertext": sealed.ciphertext,
            "signature": sealed.signature,
        }
    )


_FIELDS = {
    "version": ("version", int),
    "site-id": ("site_id", str),
    "run-id": ("run_id", int),
    "server-round": ("server_round", int),
    "message-id": ("message_id", int),
    "ephemeral-key": ("ephemeral_public", bytes),
    "recipient-key": ("recipient_public", bytes),
    "nonce": ("nonce", bytes),
    "ciphertext": ("ciphertext", bytes),
    "signature": ("signature", bytes),
}


def sealed_from_record(record: Any) -> SealedUpdate:
    """The :class:`SealedUpdate` a ``sealed`` record carries; :class:`MalformedUpdateError` else."""
    if not isinstance(record, ConfigRecord):
        raise MalformedUpdateError(f"the {SEALED_RECORD!r} record is a {type(record).__name__}")
    site = record.get("site-id")
    site = site if isinstance(site, str) else None
    missing = sorted(set(_FIELDS) - set(record))
    extra = sorted(set(record) - set(_FIELDS))
    if missing or extra:
        raise MalformedUpdateError(
            f"the sealed record lacks {missing} / has unknown {extra} fields", site_id=site
        )
    values = {}
    for key, (attr, kind) in _FIELDS.items():
        value = record[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise MalformedUpdateError(
                f"sealed field {key!r} is a {type(value).__name__}, not {kind.__name__}",
                site_id=site,
            )
        values[attr] = value
    return SealedUpdate(**values)


def is_sealed(content: RecordDict) -> bool:
    """Whether a reply's content is a sealed update."""
    return SEALED_RECORD in content


def seal_reply(
    reply_content: RecordDict,
    *,
    site_id: str,
    identity: Ed25519PrivateKey,
    server_public: X25519PublicKey,
    run_id: int,
    server_round: int,
) -> RecordDict:
    """A reply's content sealed for the ServerApp: a ``RecordDict`` holding one ``sealed`` record."""
    sealed = seal(
        encode_records(reply_content),
        server_public=server_public,
        identity=identity,
        site_id=site_id,
        run_id=run_id,
        server_round=server_round,
    )
    return RecordDict({SEALED_RECORD: sealed_to_record(sealed)})


def open_reply_content(
    content: RecordDict,
    *,
    server_private: X25519PrivateKey,
    registry: SiteRegistry,
    run_id: int,
    server_round: int,
    guard: ReplayGuard,
) -> tuple[str, RecordDict]:
    """The site id and original ``RecordDict`` of a sealed reply content.

    Raises a :class:`~fedrad.secure.sealing.SealError` subclass naming the site and the reason.
    """
    if not is_sealed(content):
        raise MalformedUpdateError(f"the reply is not sealed (no {SEALED_RECORD!r} record)")
    sealed = sealed_from_record(content[SEALED_RECORD])
    extra = sorted(set(content) - {SEALED_RECORD})
    if extra:
        raise TamperedUpdateError(
            f"records {extra} travel beside the sealed one, outside its signature",
            site_id=sealed.site_id,
        )
    payload = open_sealed(
        sealed,
        server_private=server_private,
        registry=registry,
        run_id=run_id,
        server_round=server_round,
        replay_guard=guard,
    )
    plain = decode_records(payload, site_id=sealed.site_id)
    inner = plain.get("site")
    if isinstance(inner, ConfigRecord) and inner.get("site_id", sealed.site_id) != sealed.site_id:
        raise MalformedUpdateError(
            f"the sealed content says it comes from site {inner.get('site_id')!r}",
            site_id=sealed.site_id,
        )
    return sealed.site_id, plain


def _node(reply: Message) -> str:
    return f"node {reply.metadata.src_node_id}"


def _rejected(reply: Message, reason: str) -> Message:
    return Message(Error(SEAL_REJECTED_CODE, reason), metadata=reply.metadata)


def open_replies(
    replies: Iterable[Message],
    *,
    server_private: X25519PrivateKey,
    registry: SiteRegistry,
    run_id: int,
    server_round: int,
    guard: ReplayGuard,
    require_sealed: bool = True,
) -> tuple[list[Message], list[str]]:
    """Open a batch of sealed replies (one round) before a strategy aggregates them.

    Returns every reply in order: an accepted one with its original content again, a refused
    one turned into an error ``Message`` (code :data:`SEAL_REJECTED_CODE`, which strategies
    skip), an error reply from a site unchanged; and the reasons for the refusals. An unsealed
    reply is refused when ``require_sealed``; a second update from one site in the batch is
    refused as a duplicate.
    """
    out: list[Message] = []
    reasons: list[str] = []
    accepted_sites: set[str] = set()
    for reply in replies:
        if reply.has_error():
            out.append(reply)
            continue
        if not is_sealed(reply.content) and not require_sealed:
            out.append(reply)
            continue
        try:
            site_id, plain = open_reply_content(
                reply.content,
                server_private=server_private,
                registry=registry,
                run_id=run_id,
                server_round=server_round,
                guard=guard,
            )
            if site_id in accepted_sites:
                raise ReplayedUpdateError(
                    f"a second update in round {server_round} (only the first counts)",
                    site_id=site_id,
                )
        except SealError as exc:
            reason = f"{_node(reply)}, round {server_round}: {exc}"
            reasons.append(reason)
            out.append(_rejected(reply, reason))
            continue
        accepted_sites.add(site_id)
        out.append(Message(metadata=reply.metadata, content=plain))
    return out, reasons


# --- site side -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SiteSealing:
    """What a site seals with: its id and identity, and the server key it pinned (if any).

    ``server_public=None`` trusts the key the instruction offers (only a passive relay is
    then kept out); ``required`` refuses any instruction outside SecAgg+ that offers no key.
    Picklable (Flower's simulation ships the ClientApp to its workers).
    """

    site_id: str
    identity: Ed25519PrivateKey
    server_public: X25519PublicKey | None = None
    required: bool = False

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        from cryptography.hazmat.primitives import serialization

        seed = self.identity.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        server = None if self.server_public is None else public_bytes(self.server_public)
        return _site_sealing_from_raw, (self.site_id, seed, server, self.required)


def _site_sealing_from_raw(
    site_id: str, seed: bytes, server: bytes | None, required: bool
) -> SiteSealing:
    return SiteSealing(
        site_id,
        Ed25519PrivateKey.from_private_bytes(seed),
        None if server is None else X25519PublicKey.from_public_bytes(server),
        required,
    )


def load_site_sealing(
    site_id: str, keys_dir: str | Path, *, required: bool | None = None
) -> SiteSealing:
    """A site's sealing setup from its keys folder: ``identity.key`` and, when present, the
    pinned ``server-sealing.pub``. ``required`` defaults to whether a server key is pinned."""
    keys_dir = Path(keys_dir)
    identity = load_identity(keys_dir / IDENTITY_KEY)
    pinned_path = keys_dir / SERVER_SEALING_PUB
    pinned = load_sealing_public(pinned_path) if pinned_path.exists() else None
    return SiteSealing(
        site_id, identity, pinned, required=pinned is not None if required is None else required
    )


def offered_key(msg: Message) -> bytes | None:
    """The sealing key an instruction offers (raw bytes), or None."""
    if not msg.has_content():
        return None
    config = msg.content.get(_CONFIG_KEY)
    if not isinstance(config, ConfigRecord):
        return None
    value = config.get(SEALING_PUBLIC_KEY)
    return value if isinstance(value, bytes) else None


def _server_key(keys: SiteSealing, offered: bytes) -> X25519PublicKey:
    if len(offered) != 32:
        raise SealError(
            f"the server offered a sealing key of {len(offered)} bytes (an X25519 key has 32)",
            site_id=keys.site_id,
        )
    offered_key_ = X25519PublicKey.from_public_bytes(offered)
    if keys.server_public is None:
        return offered_key_
    if public_bytes(keys.server_public) != offered:
        raise SealError(
            f"the instruction offers sealing key {fingerprint(offered_key_)[:16]}... but this "
            f"site pinned {fingerprint(keys.server_public)[:16]}... (server-sealing.pub); "
            "refusing to seal to an unknown key (a relay may be substituting it). If the "
            "coordinator made a new key, compare fingerprints and replace server-sealing.pub",
            site_id=keys.site_id,
        )
    return keys.server_public


def make_sealing_mod(resolve: Callable[[Context], SiteSealing]) -> Mod:
    """A Flower ClientApp mod that seals the reply of every instruction offering a sealing key.

    The offered key is checked against the pinned one, and a required seal against the offer,
    *before* the handler runs, so a refused instruction spends no training or privacy budget.
    Place the mod before ``secaggplus_mod`` in ``ClientApp(mods=[...])`` (outermost). The bound
    round is the instruction's ``config["server-round"]`` (0 when absent), the run its run id.
    """

    def sealing_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        offered = offered_key(msg)
        if offered is None:
            # relay-proof: once a server key is pinned, every reply outside SecAgg+ (train,
            # evaluate and query alike) leaves sealed or not at all
            if msg.has_content() and _SECAGG_CONFIGS not in msg.content:
                keys = resolve(context)
                if keys.required:
                    raise SealError(
                        "this site pinned the server's sealing key, but the instruction offers "
                        "none; refusing to send its reply in the clear (a relay may have "
                        "stripped the offer)",
                        site_id=keys.site_id,
                    )
            return call_next(msg, context)
        keys = resolve(context)
        server_public = _server_key(keys, offered)
        server_round = int(msg.content[_CONFIG_KEY].get(_ROUND_KEY, 0))
        reply = call_next(msg, context)
        if reply.has_error():
            return reply
        sealed = seal_reply(
            reply.content,
            site_id=keys.site_id,
            identity=keys.identity,
            server_public=server_public,
            run_id=msg.metadata.run_id,
            server_round=server_round,
        )
        return Message(sealed, reply_to=msg)

    return sealing_mod


def simulation_sealing_resolver(
    sealings: Sequence[SiteSealing],
) -> Callable[[Context], SiteSealing]:
    """Virtual node ``partition-id`` i seals as ``sealings[i]`` (as ``simulation_resolver``)."""
    sealings = list(sealings)

    def resolve(context: Context) -> SiteSealing:
        return sealings[int(context.node_config["partition-id"])]

    return resolve


# --- server side ---------------------------------------------------------------------------


class SealingGrid:
    """A Flower Grid that asks sites to seal their replies and opens them before returning.

    For a batch of instructions whose type is in ``message_types`` (TRAIN by default) it puts the
    server's sealing key in each ``config`` record, reads the round from ``config["server-round"]``
    and returns the replies opened by :func:`open_replies` (refusals become error replies, which
    strategies skip; their reasons are logged and kept in :attr:`rejections`). Other batches
    pass through. Every other attribute is the wrapped grid's, so it composes with ``SiteGrid``.
    """

    def __init__(
        self,
        grid: Any,
        *,
        server_private: X25519PrivateKey,
        registry: SiteRegistry,
        guard: ReplayGuard | None = None,
        message_types: Sequence[str] = (MessageType.TRAIN,),
        run_id: int | None = None,
    ):
        self._grid = grid
        self._private = server_private
        self._public = public_bytes(server_private)
        self._registry = registry
        self.guard = ReplayGuard() if guard is None else guard
        self._types = set(message_types)
        self._run_id = run_id
        #: (round, reason) of every refused reply.
        self.rejections: list[tuple[int, str]] = []

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "_grid":
            raise AttributeError(name)
        return getattr(self._grid, name)

    def _sealed_round(self, messages: list[Message]) -> int | None:
        kinds = [m.metadata.message_type.split(".")[0] in self._types for m in messages]
        if not any(kinds):
            return None
        if not all(kinds):
            raise ValueError("a batch mixes message types that are sealed and that are not")
        rounds = set()
        for msg in messages:
            config = msg.content.get(_CONFIG_KEY)
            if not isinstance(config, ConfigRecord):
                config = ConfigRecord()
                msg.content[_CONFIG_KEY] = config
            config[SEALING_PUBLIC_KEY] = self._public
            rounds.add(int(config.get(_ROUND_KEY, 0)))
        if len(rounds) != 1:
            raise ValueError(f"a batch of sealed instructions spans rounds {sorted(rounds)}")
        return rounds.pop()

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        """Send ``messages``, wait for the replies and open them when sealing applies."""
        messages = list(messages)
        server_round = self._sealed_round(messages)
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        if server_round is None:
            return replies
        run_id = self._run_id if self._run_id is not None else self._grid.run.run_id
        opened, reasons = open_replies(
            replies,
            server_private=self._private,
            registry=self._registry,
            run_id=run_id,
            server_round=server_round,
            guard=self.guard,
        )
        for reason in reasons:
            log.warning("refused a reply: %s", reason)
            self.rejections.append((server_round, reason))
        return opened


__all__ = [
    "SEALED_RECORD",
    "SEALING_PUBLIC_KEY",
    "SEAL_REJECTED_CODE",
    "SealingGrid",
    "SiteSealing",
    "decode_records",
    "encode_records",
    "is_sealed",
    "load_site_sealing",
    "make_sealing_mod",
    "offered_key",
    "open_replies",
    "open_reply_content",
    "seal_reply",
    "sealed_from_record",
    "sealed_to_record",
    "simulation_sealing_resolver",
]
