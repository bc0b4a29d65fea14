"""A site's model update sealed end to end for the ServerApp: the relay can neither read nor
alter it, and the server accepts it once, in the round it was made for, from a registered site.

Construction (version 1), for payload ``P`` from site ``S`` to the server key ``Q``:

1. an ephemeral X25519 key ``e`` per message; ``z = X25519(e, Q)`` (forward secrecy for the
   site: ``e`` is forgotten at once, so a stolen site key opens nothing);
2. ``AD = enc("fedrad/sealed-update", version, run_id, round, site_id, message_id, e_pub, Q)``,
   a canonical encoding (every field length-prefixed, integers as fixed-width big-endian);
3. ``k = HKDF-SHA256(ikm=z, salt="fedrad/sealed-update/v1", info="fedrad/sealed-update/v1/
   chacha20-poly1305" || AD)``, 32 bytes: the key is bound to the whole context;
4. ``C = ChaCha20-Poly1305(k).encrypt(nonce, P, AD)`` with a random 96-bit ``nonce`` (each key
   is used once, so the nonce could be fixed; a random one costs nothing);
5. ``sig = Ed25519_sign(site identity, "fedrad/sealed-update/v1/signature" || lp(AD) ||
   lp(nonce) || lp(C))``.

Encrypt-then-sign, and why. The server must know *who* sent an update before it spends work on
it or lets it near the aggregate, and a relay must not be able to pass a forged update as a
site's. Signing the ciphertext lets the server check the signer first, from public data only
(the site id in the clear names the key to check with). Sign-then-encrypt would hide the
signer until after decryption, so any stranger could make the server run X25519 and the AEAD
on junk, and it would leave the signature unbound to the recipient. The known weakness of
encrypt-then-sign is signature stripping (an adversary removes the signature and signs the
ciphertext itself, claiming it as its own); it fails here because the signed bytes contain
``AD``, which names the site and is also authenticated by the AEAD under a key derived from
it: re-signing as another site means changing ``AD``, which breaks decryption, and keeping
``AD`` means the signature must verify under the named site's key, which only that site holds.
The recipient key ``Q`` and the ephemeral key are in ``AD`` too, so a signed update cannot be
redirected to another server or spliced with another key exchange.

What the server checks (:func:`open_sealed`), in this order: the envelope's shape; the site is
registered (:class:`UnknownSignerError`); the signature (:class:`TamperedUpdateError`, and
the message says so when the key of *another* registered site made it); the recipient key is
the server's own; run and round are the ones being aggregated, and (site, run, message id) was
not seen before (:class:`ReplayedUpdateError`, via :class:`ReplayGuard`); decryption
(:class:`TamperedUpdateError`). Only a fully accepted update is recorded as seen, so a forged
copy cannot burn a genuine message's id.
"""

from __future__ import annotations

import hashlib
import secrets
import struct
import threading
from dataclasses import dataclass, replace

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedrad.errors import FedradError
from fedrad.secure.identity import SiteRegistry, fingerprint, public_bytes

#: The envelope format version (part of the associated data and the key derivation).
VERSION = 1
NONCE_BYTES = 12
KEY_BYTES = 32
SIGNATURE_BYTES = 64
MAX_SITE_ID_BYTES = 256

_DOMAIN = b"fedrad/sealed-update"
_SALT = b"fedrad/sealed-update/v1"
_INFO = b"fedrad/sealed-update/v1/chacha20-poly1305"
_SIGNATURE_DOMAIN = b"fedrad/sealed-update/v1/signature"
_U64 = 2**64
_I63 = 2**63


class SealError(FedradError):
    """A sealed update cannot be made or is refused; ``site_id`` and ``reason`` say which and why."""

    def __init__(self, message: str, *, site_id: str | None = None):
        self.site_id = site_id
        self.reason = message
        prefix = f"sealed update from site {site_id!r}: " if site_id is not None else ""
        super().__init__(prefix + message)


class UnknownSignerError(SealError):
    """The update names a site that is not in the server's register."""


class TamperedUpdateError(SealError):
    """The signature does not verify under the named site's key, or decryption fails."""


class ReplayedUpdateError(SealError):
    """The update was accepted before, or was made for another run or round."""


class MalformedUpdateError(SealError):
    """The envelope (or what it decrypts to) is not shaped as a sealed update."""


class WrongRecipientError(SealError):
    """The site sealed the update for another server key (it pinned an old or wrong key)."""


@dataclass(frozen=True)
class SealedUpdate:
    """One sealed update: the context in the clear, the ciphertext, and the site's signature."""

    site_id: str
    run_id: int
    server_round: int
    message_id: int
    ephemeral_public: bytes
    recipient_public: bytes
    nonce: bytes
    ciphertext: bytes
    signature: bytes
    version: int = VERSION

    def associated_data(self) -> bytes:
        """The canonical encoding of the context, authenticated by the AEAD and the signature."""
        return associated_data(
            version=self.version,
            run_id=self.run_id,
            server_round=self.server_round,
            site_id=self.site_id,
            message_id=self.message_id,
            ephemeral_public=self.ephemeral_public,
            recipient_public=self.recipient_public,
        )

    def signed_bytes(self) -> bytes:
        """What the site signs: domain || lp(AD) || lp(nonce) || lp(ciphertext)."""
        return (
            _SIGNATURE_DOMAIN + _lp(self.associated_data()) + _lp(self.nonce) + _lp(self.ciphertext)
        )


def _lp(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _check_int(value: object, name: str, upper: int, site_id: str | None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < upper:
        raise MalformedUpdateError(
            f"{name} must be an integer in [0, {upper}), got {value!r}", site_id=site_id
        )
    return value


def associated_data(
    *,
    version: int,
    run_id: int,
    server_round: int,
    site_id: str,
    message_id: int,
    ephemeral_public: bytes,
    recipient_public: bytes,
) -> bytes:
    """``lp(domain) || lp(u8 version) || lp(u64 run) || lp(u64 round) || lp(utf8 site) ||
    lp(u64 message id) || lp(ephemeral key) || lp(recipient key)``, ``lp`` = u32 length prefix."""
    fields = [
        _DOMAIN,
        struct.pack(">B", version),
        struct.pack(">Q", run_id),
        struct.pack(">Q", server_round),
        site_id.encode("utf-8"),
        struct.pack(">Q", message_id),
        ephemeral_public,
        recipient_public,
    ]
    return b"".join(_lp(f) for f in fields)


def _derive_key(shared: bytes, ad: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=_SALT, info=_INFO + ad).derive(
        shared
    )


def new_message_id() -> int:
    """A random 63-bit message id (fits a signed 64-bit record field)."""
    return secrets.randbits(63)


def seal(
    payload: bytes,
    *,
    server_public: X25519PublicKey,
    identity: Ed25519PrivateKey,
    site_id: str,
    run_id: int,
    server_round: int,
    message_id: int | None = None,
) -> SealedUpdate:
    """Encrypt ``payload`` to ``server_public`` and sign it with the site's ``identity``.

    ``message_id`` defaults to a fresh random id; the server accepts each id once.
    """
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise SealError(f"the payload must be bytes, not {type(payload).__name__}")
    if not isinstance(site_id, str) or not site_id:
        raise SealError(f"site id {site_id!r}: a site id is a non-empty string")
    if len(site_id.encode("utf-8")) > MAX_SITE_ID_BYTES:
        raise SealError(f"site id {site_id!r} is longer than {MAX_SITE_ID_BYTES} bytes")
    if not isinstance(server_public, X25519PublicKey):
        raise SealError(
            f"the server sealing key must be an X25519 public key, not {type(server_public).__name__}"
        )
    if not isinstance(identity, Ed25519PrivateKey):
        raise SealError(
            f"the site identity must be an Ed25519 private key, not {type(identity).__name__}"
        )
    message_id = new_message_id() if message_id is None else message_id
    try:
        _check_int(run_id, "run id", _U64, site_id)
        _check_int(server_round, "server round", _I63, site_id)
        _check_int(message_id, "message id", _I63, site_id)
    except MalformedUpdateError as exc:
        raise SealError(exc.reason, site_id=site_id) from None
    ephemeral = X25519PrivateKey.generate()
    ephemeral_public = public_bytes(ephemeral)
    recipient = public_bytes(server_public)
    ad = associated_data(
        version=VERSION,
        run_id=run_id,
        server_round=server_round,
        site_id=site_id,
        message_id=message_id,
        ephemeral_public=ephemeral_public,
        recipient_public=recipient,
    )
    key = _derive_key(ephemeral.exchange(server_public), ad)
    nonce = secrets.token_bytes(NONCE_BYTES)
    ciphertext = ChaCha20Poly1305(key).encrypt(nonce, bytes(payload), ad)
    unsigned = SealedUpdate(
        site_id=site_id,
        run_id=run_id,
        server_round=server_round,
        message_id=message_id,
        ephemeral_public=ephemeral_public,
        recipient_public=recipient,
        nonce=nonce,
        ciphertext=ciphertext,
        signature=b"",
    )
    signature = identity.sign(unsigned.signed_bytes())
    return replace(unsigned, signature=signature)


class ReplayGuard:
    """The server's memory of accepted updates, for one ServerApp process.

    Rejects an update whose bound run or round is not the one being aggregated (a replay from
    an earlier round or run), and a (site, run, message id) already accepted. Thread-safe.
    A restarted ServerApp starts a new Flower run (new run id), so updates of the old run
    are refused by the run binding even though this memory is gone.
    """

    def __init__(self) -> None:
        self._seen: set[tuple[str, int, int]] = set()
        self._lock = threading.Lock()

    def check(self, sealed: SealedUpdate, *, run_id: int, server_round: int) -> None:
        """Raise :class:`ReplayedUpdateError` unless ``sealed`` is fresh for this run and round."""
        site = sealed.site_id
        if sealed.run_id != run_id:
            raise ReplayedUpdateError(
                f"made for run {sealed.run_id}, but this is run {run_id} (replayed from another run)",
                site_id=site,
            )
        if sealed.server_round != server_round:
            raise ReplayedUpdateError(
                f"made for round {sealed.server_round}, but round {server_round} is being "
                "aggregated (replayed from another round)",
                site_id=site,
            )
        with self._lock:
            if (site, sealed.run_id, sealed.message_id) in self._seen:
                raise ReplayedUpdateError(
                    f"message {sealed.message_id} was accepted before (a replayed duplicate)",
                    site_id=site,
                )

    def record(self, sealed: SealedUpdate) -> None:
        """Remember ``sealed`` as accepted; raise if it was already (a concurrent duplicate)."""
        key = (sealed.site_id, sealed.run_id, sealed.message_id)
        with self._lock:
            if key in self._seen:
                raise ReplayedUpdateError(
                    f"message {sealed.message_id} was accepted before (a replayed duplicate)",
                    site_id=sealed.site_id,
                )
            self._seen.add(key)

    def seen(self, site_id: str, run_id: int, message_id: int) -> bool:
        """Whether the update (site, run, message id) was accepted."""
        with self._lock:
            return (site_id, run_id, message_id) in self._seen

    @property
    def accepted(self) -> int:
        """How many updates were accepted."""
        with self._lock:
            return len(self._seen)


def check_shape(sealed: SealedUpdate) -> None:
    """Raise :class:`MalformedUpdateError` unless every field has its type and length."""
    site = sealed.site_id if isinstance(sealed.site_id, str) else None
    if site is None or not site or len(site.encode("utf-8")) > MAX_SITE_ID_BYTES:
        raise MalformedUpdateError(f"the site id {sealed.site_id!r} is not a usable site id")
    if sealed.version != VERSION:
        raise MalformedUpdateError(
            f"envelope version {sealed.version!r} is not supported (this server reads version "
            f"{VERSION}); the site and the server must run compatible fedrad versions",
            site_id=site,
        )
    _check_int(sealed.run_id, "run id", _U64, site)
    _check_int(sealed.server_round, "server round", _I63, site)
    _check_int(sealed.message_id, "message id", _I63, site)
    for name, value, size in (
        ("ephemeral key", sealed.ephemeral_public, KEY_BYTES),
        ("recipient key", sealed.recipient_public, KEY_BYTES),
        ("nonce", sealed.nonce, NONCE_BYTES),
        ("signature", sealed.signature, SIGNATURE_BYTES),
    ):
        if not isinstance(value, bytes) or len(value) != size:
            length = len(value) if isinstance(value, bytes) else type(value).__name__
            raise MalformedUpdateError(
                f"the {name} must be {size} bytes, got {length}", site_id=site
            )
    if not isinstance(sealed.ciphertext, bytes) or len(sealed.ciphertext) < 16:
        raise MalformedUpdateError("the ciphertext is shorter than its 16-byte tag", site_id=site)


def _verify(sealed: SealedUpdate, registry: SiteRegistry) -> None:
    site = sealed.site_id
    key = registry.get(site)
    if key is None:
        raise UnknownSignerError(
            f"site {site!r} is not registered on this server ({len(registry)} site(s) are); "
            "file its identity.pub in the server's register as SITE_ID.pub",
            site_id=site,
        )
    signed = sealed.signed_bytes()
    try:
        key.verify(sealed.signature, signed)
        return
    except InvalidSignature:
        pass
    impostor = _signer_among(registry, sealed.signature, signed, exclude=site)
    if impostor is not None:
        raise TamperedUpdateError(
            f"signed with the identity key of site {impostor!r}, not that of site {site!r} "
            "(a site posing as another)",
            site_id=site,
        )
    raise TamperedUpdateError(
        f"the signature does not verify under site {site!r}'s key "
        f"({fingerprint(key)[:16]}...): the update was altered in transit or signed by "
        "an unregistered key",
        site_id=site,
    )


def _signer_among(
    registry: SiteRegistry, signature: bytes, signed: bytes, *, exclude: str
) -> str | None:
    for other, key in registry.items():
        if other == exclude:
            continue
        try:
            key.verify(signature, signed)
        except InvalidSignature:
            continue
        return other
    return None


def open_sealed(
    sealed: SealedUpdate,
    *,
    server_private: X25519PrivateKey,
    registry: SiteRegistry,
    run_id: int,
    server_round: int,
    replay_guard: ReplayGuard,
) -> bytes:
    """Verify, check freshness, decrypt: the payload of an update accepted for this round.

    Raises a :class:`SealError` subclass naming the site and the reason otherwise.
    """
    check_shape(sealed)
    site = sealed.site_id
    _verify(sealed, registry)
    own = public_bytes(server_private)
    if sealed.recipient_public != own:
        raise WrongRecipientError(
            f"sealed for server key {fingerprint_raw(sealed.recipient_public)[:16]}..., "
            f"but this server's key is {fingerprint_raw(own)[:16]}...; give the site the "
            "server's current sealing.pub (as server-sealing.pub in its keys folder)",
            site_id=site,
        )
    replay_guard.check(sealed, run_id=run_id, server_round=server_round)
    ad = sealed.associated_data()
    try:
        shared = server_private.exchange(X25519PublicKey.from_public_bytes(sealed.ephemeral_public))
    except ValueError:
        raise MalformedUpdateError(
            "the ephemeral key is a degenerate (low-order) X25519 point", site_id=site
        ) from None
    try:
        payload = ChaCha20Poly1305(_derive_key(shared, ad)).decrypt(
            sealed.nonce, sealed.ciphertext, ad
        )
    except InvalidTag:
        raise TamperedUpdateError(
            "the ciphertext does not decrypt (authentication tag mismatch)", site_id=site
        ) from None
    replay_guard.record(sealed)
    return payload


def fingerprint_raw(raw: bytes) -> str:
    """SHA-256 hex of raw public key bytes (as :func:`fedrad.secure.identity.fingerprint`)."""
    return hashlib.sha256(raw).hexdigest()
