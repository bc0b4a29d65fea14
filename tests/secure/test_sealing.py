"""End-to-end sealing of updates with real ``cryptography``: what a relay can and cannot do."""

from __future__ import annotations

import pickle
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fedrad.errors import FedradError
from fedrad.secure.identity import SiteRegistry, generate_identity, generate_sealing_key
from fedrad.secure.sealing import (
    MalformedUpdateError,
    ReplayedUpdateError,
    ReplayGuard,
    SealedUpdate,
    SealError,
    TamperedUpdateError,
    UnknownSignerError,
    WrongRecipientError,
    open_sealed,
    seal,
)

PAYLOAD = b"weights of round 4: " + bytes(range(256)) * 8
RUN = 2**64 - 7  # Flower run ids are unsigned 64-bit


@pytest.fixture(scope="module")
def server() -> X25519PrivateKey:
    return generate_sealing_key()


@pytest.fixture(scope="module")
def sites() -> dict[str, Ed25519PrivateKey]:
    return {"hospital-a": generate_identity(), "hospital-b": generate_identity()}


@pytest.fixture(scope="module")
def registry(sites: dict[str, Ed25519PrivateKey]) -> SiteRegistry:
    return SiteRegistry({s: k.public_key() for s, k in sites.items()})


def _seal(server, sites, site="hospital-a", *, identity=None, server_round=4, **kw) -> SealedUpdate:
    return seal(
        PAYLOAD,
        server_public=server.public_key(),
        identity=identity or sites[site],
        site_id=site,
        run_id=kw.pop("run_id", RUN),
        server_round=server_round,
        **kw,
    )


def _open(sealed, server, registry, *, guard=None, server_round=4, run_id=RUN) -> bytes:
    return open_sealed(
        sealed,
        server_private=server,
        registry=registry,
        run_id=run_id,
        server_round=server_round,
        replay_guard=ReplayGuard() if guard is None else guard,
    )


def _flip(data: bytes, index: int = 0) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def test_round_trip(server, sites, registry) -> None:
    sealed = _seal(server, sites)
    guard = ReplayGuard()
    assert _open(sealed, server, registry, guard=guard) == PAYLOAD
    assert guard.seen("hospital-a", RUN, sealed.message_id) and guard.accepted == 1
    assert PAYLOAD not in sealed.ciphertext and PAYLOAD[:32] not in sealed.ciphertext
    assert len(sealed.ciphertext) == len(PAYLOAD) + 16


def test_every_seal_is_fresh(server, sites) -> None:
    a, b = _seal(server, sites), _seal(server, sites)
    assert a.ephemeral_public != b.ephemeral_public
    assert a.ciphertext != b.ciphertext
    assert a.message_id != b.message_id


def test_empty_payload(server, sites, registry) -> None:
    sealed = seal(
        b"",
        server_public=server.public_key(),
        identity=sites["hospital-b"],
        site_id="hospital-b",
        run_id=0,
        server_round=0,
        message_id=0,
    )
    assert _open(sealed, server, registry, server_round=0, run_id=0) == b""


@pytest.mark.parametrize(
    "field, value",
    [
        ("ciphertext", lambda s: _flip(s.ciphertext, 5)),
        ("ciphertext", lambda s: _flip(s.ciphertext, len(s.ciphertext) - 1)),  # the tag
        ("ciphertext", lambda s: s.ciphertext[:-1]),
        ("ciphertext", lambda s: s.ciphertext + b"\x00"),
        ("nonce", lambda s: _flip(s.nonce)),
        ("signature", lambda s: _flip(s.signature, 10)),
        ("ephemeral_public", lambda s: _flip(s.ephemeral_public, 3)),
        ("recipient_public", lambda s: _flip(s.recipient_public, 3)),
        ("message_id", lambda s: s.message_id ^ 1),
        ("server_round", lambda s: 5),
        ("run_id", lambda s: s.run_id - 1),
    ],
)
def test_tampered_bytes_or_associated_data_are_rejected(
    server, sites, registry, field, value
) -> None:
    sealed = _seal(server, sites)
    altered = replace(sealed, **{field: value(sealed)})
    guard = ReplayGuard()
    with pytest.raises(TamperedUpdateError, match="hospital-a") as info:
        _open(
            altered,
            server,
            registry,
            guard=guard,
            server_round=altered.server_round,
            run_id=altered.run_id,
        )
    assert info.value.site_id == "hospital-a"
    assert guard.accepted == 0  # a forgery burns nothing ...
    assert _open(sealed, server, registry, guard=guard) == PAYLOAD  # ... the genuine one passes


def test_relay_cannot_swap_the_site_id(server, sites, registry) -> None:
    sealed = _seal(server, sites, "hospital-a")
    with pytest.raises(TamperedUpdateError, match="hospital-b"):
        _open(replace(sealed, site_id="hospital-b"), server, registry)


def test_relay_cannot_re_seal_with_its_own_key(server, sites, registry) -> None:
    """A relay knows the server's public key, so it can seal; it cannot sign as a site."""
    forged = _seal(server, sites, "hospital-a", identity=generate_identity())
    with pytest.raises(TamperedUpdateError, match="does not verify under site 'hospital-a'"):
        _open(forged, server, registry)


def test_relay_cannot_strip_and_re_sign(server, sites, registry) -> None:
    """Signature stripping: keep the ciphertext, sign it with another registered key."""
    sealed = _seal(server, sites, "hospital-a")
    re_signed = replace(sealed, signature=sites["hospital-b"].sign(sealed.signed_bytes()))
    with pytest.raises(TamperedUpdateError, match="key of site 'hospital-b'"):
        _open(re_signed, server, registry)
    # claiming the ciphertext for site b changes the associated data: the AEAD refuses it
    claimed = replace(sealed, site_id="hospital-b")
    claimed = replace(claimed, signature=sites["hospital-b"].sign(claimed.signed_bytes()))
    with pytest.raises(TamperedUpdateError, match="does not decrypt"):
        _open(claimed, server, registry)


def test_replay_of_the_same_message_is_rejected(server, sites, registry) -> None:
    sealed = _seal(server, sites)
    guard = ReplayGuard()
    assert _open(sealed, server, registry, guard=guard) == PAYLOAD
    with pytest.raises(ReplayedUpdateError, match=f"message {sealed.message_id} was accepted"):
        _open(sealed, server, registry, guard=guard)
    with pytest.raises(ReplayedUpdateError):
        guard.record(sealed)


def test_update_from_round_3_presented_in_round_4_is_rejected(server, sites, registry) -> None:
    guard = ReplayGuard()
    old = _seal(server, sites, server_round=3)
    assert _open(old, server, registry, guard=guard, server_round=3) == PAYLOAD
    with pytest.raises(ReplayedUpdateError, match="made for round 3, but round 4") as info:
        _open(old, server, registry, guard=guard, server_round=4)
    assert "hospital-a" in str(info.value)
    withheld = _seal(server, sites, server_round=3)  # never delivered in round 3
    with pytest.raises(ReplayedUpdateError, match="round 3"):
        _open(withheld, server, registry, guard=ReplayGuard(), server_round=4)


def test_update_from_another_run_is_rejected(server, sites, registry) -> None:
    sealed = _seal(server, sites, run_id=11)
    with pytest.raises(ReplayedUpdateError, match="made for run 11"):
        _open(sealed, server, registry, run_id=12)


def test_unknown_signer_is_rejected(server, registry) -> None:
    stranger = generate_identity()
    sealed = _seal(server, {"hospital-z": stranger}, "hospital-z")
    with pytest.raises(UnknownSignerError, match="'hospital-z' is not registered"):
        _open(sealed, server, registry)


def test_signer_registered_under_another_site_id_is_rejected(server, sites, registry) -> None:
    sealed = _seal(server, sites, "hospital-a", identity=sites["hospital-b"])
    with pytest.raises(
        TamperedUpdateError, match="key of site 'hospital-b', not that of site 'hospital-a'"
    ):
        _open(sealed, server, registry)


def test_wrong_server_key_cannot_open(server, sites, registry) -> None:
    sealed = _seal(server, sites)
    other = generate_sealing_key()
    with pytest.raises(WrongRecipientError, match="sealed for server key"):
        _open(sealed, other, registry)
    # even if the recipient field is rewritten, the signature covers it
    with pytest.raises(TamperedUpdateError):
        _open(
            replace(sealed, recipient_public=other.public_key().public_bytes_raw()), other, registry
        )


def test_sealed_by_a_broken_site_for_the_wrong_key_does_not_decrypt(
    server, sites, registry
) -> None:
    """A site that signs a ciphertext made for another key: the AEAD catches it."""
    other = generate_sealing_key()
    for_other = _seal(other, sites)
    relabelled = replace(for_other, recipient_public=server.public_key().public_bytes_raw())
    relabelled = replace(relabelled, signature=sites["hospital-a"].sign(relabelled.signed_bytes()))
    with pytest.raises(TamperedUpdateError, match="does not decrypt"):
        _open(relabelled, server, registry)


def test_low_order_ephemeral_key_is_malformed(server, sites, registry) -> None:
    sealed = replace(_seal(server, sites), ephemeral_public=bytes(32))
    sealed = replace(sealed, signature=sites["hospital-a"].sign(sealed.signed_bytes()))
    with pytest.raises(MalformedUpdateError, match="low-order"):
        _open(sealed, server, registry)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"version": 2}, "version 2 is not supported"),
        ({"nonce": b"short"}, "nonce must be 12 bytes"),
        ({"signature": b""}, "signature must be 64 bytes"),
        ({"ephemeral_public": b"x" * 31}, "ephemeral key must be 32 bytes"),
        ({"ciphertext": b"tiny"}, "shorter than its 16-byte tag"),
        ({"message_id": -1}, "message id must be an integer"),
        ({"server_round": True}, "server round must be an integer"),
        ({"site_id": ""}, "not a usable site id"),
    ],
)
def test_malformed_envelopes(server, sites, registry, changes, message) -> None:
    with pytest.raises(MalformedUpdateError, match=message):
        _open(replace(_seal(server, sites), **changes), server, registry)


def test_seal_refuses_bad_arguments(server, sites) -> None:
    with pytest.raises(SealError, match="run id"):
        _seal(server, sites, run_id=-1)
    with pytest.raises(SealError, match="message id"):
        _seal(server, sites, message_id=2**63)
    with pytest.raises(SealError, match="X25519"):
        seal(
            b"x",
            server_public=sites["hospital-a"].public_key(),  # type: ignore[arg-type]
            identity=sites["hospital-a"],
            site_id="hospital-a",
            run_id=1,
            server_round=1,
        )
    with pytest.raises(SealError, match="non-empty"):
        _seal(server, {"": sites["hospital-a"]}, "")


def test_errors_are_fedrad_errors_naming_site_and_reason(server, sites, registry) -> None:
    for cls in (UnknownSignerError, TamperedUpdateError, ReplayedUpdateError, MalformedUpdateError):
        assert issubclass(cls, SealError) and issubclass(cls, FedradError)
    sealed = replace(_seal(server, sites), ciphertext=b"\x00" * 40)
    with pytest.raises(TamperedUpdateError) as info:
        _open(sealed, server, registry)
    assert info.value.site_id == "hospital-a"
    assert info.value.reason in str(info.value)
    assert str(info.value).startswith("sealed update from site 'hospital-a': ")


def test_sealed_update_is_plain_data(server, sites, registry) -> None:
    """What crosses process boundaries is bytes, ints and a str: it pickles."""
    sealed = _seal(server, sites)
    assert _open(pickle.loads(pickle.dumps(sealed)), server, registry) == PAYLOAD
