"""Named mail cases the gateway must accept or refuse, each with the expected reason code.

Every ``build`` returns raw message bytes. Builds are deterministic given the Scenario:
signatures are made at ``scenario.now`` (or a fixed offset from it) and Ed25519 signatures
are deterministic, so the same Scenario gives the same bytes. Each case has its own body
(own case number and free text), so a gateway's replay memory never links two cases.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from .mail_factory import (
    Attachment,
    attachment_entity,
    compose,
    encrypted_mail,
    entity,
    inline_signed_mail,
    message_entity,
    multipart_entity,
    multipart_signed_entity,
    outer_headers,
    pdf_bytes,
    replace_outer_header,
    request_body,
    resend,
    signed_part_bytes,
    signed_request_mail,
    text_entity,
    unsigned_mail,
)
from .officer_keys import OfficerKeyring, TestKey

Verdict = Literal["accept", "refuse"]

REASONS = frozenset(
    {
        "not_signed",
        "smime_not_accepted",
        "bad_structure",
        "unsigned_content",
        "encrypted_unsigned",
        "inline_pgp_disabled",
        "inline_text_outside_block",
        "inline_multiple_blocks",
        "bad_signature",
        "unknown_key",
        "key_not_registered",
        "expired_key",
        "revoked_key",
        "expired_signature",
        "weak_digest",
        "signature_in_future",
        "signature_too_old",
        "multiple_signatures",
        "not_a_detached_signature",
        "bad_from",
        "from_mismatch",
        "replay",
    }
)

ALICE = "alice@police.test"
BOB = "bob@police.test"
CAROL = "carol@police.test"
ERIN = "erin.expired@police.test"
RITA = "rita.revoked@police.test"
MALLORY = "mallory@attacker.test"

# Ages chosen so each time-based case has exactly one thing wrong with it.
KEY_AGE = timedelta(days=30)  # older than the too-old signature, so gpg accepts its date
EXPIRED_KEY_CREATED = timedelta(hours=2)  # created now-2h ...
EXPIRED_KEY_LIFETIME = timedelta(hours=1)  # ... expired now-1h ...
EXPIRED_KEY_SIGNED = timedelta(minutes=90)  # ... signed now-90min, while still valid
SIG_EXPIRY_SIGNED = timedelta(hours=2)  # signature made now-2h ...
SIG_EXPIRY_LIFETIME = timedelta(hours=1)  # ... expired now-1h
FUTURE_OFFSET = timedelta(days=2)
TOO_OLD_OFFSET = timedelta(days=10)


@dataclass
class Scenario:
    """All keys and addresses the cases need; the fixture enrols what ``enrolled`` says.

    Fixture duties: import ``gateway_keyring_only`` keys into the gateway keyring without
    registering them; register every ``enrolled`` email with its key's public key; for
    ``revoked`` register ``revoked.public_armored`` (pre-revocation) and then import
    ``revoked_update`` (the same key carrying its revocation).
    """

    ring: OfficerKeyring
    officer_a: TestKey  # enrolled, alice@police.test
    officer_b: TestKey  # enrolled, bob@police.test
    stranger: TestKey  # uid alice@police.test, in gateway keyring, NOT registered
    unknown: TestKey  # uid alice@police.test too (impersonation attempt), never imported
    expired: TestKey  # enrolled, expired one hour before ``now``
    revoked: TestKey  # enrolled, then revoked (hard revocation: key compromised)
    subkey_officer: TestKey  # enrolled, carol@police.test, signs with a subkey
    revoked_update: bytes  # revoked key's public key WITH the revocation
    gateway_public: bytes
    gateway_address: str
    now: datetime
    cache: dict[str, bytes] = field(default_factory=dict)

    @property
    def enrolled(self) -> dict[str, TestKey]:
        """email -> key for every officer the gateway must register."""
        keys = (self.officer_a, self.officer_b, self.subkey_officer, self.expired, self.revoked)
        return {key.email: key for key in keys}

    @property
    def gateway_keyring_only(self) -> list[TestKey]:
        """Keys present in the gateway keyring but deliberately not registered."""
        return [self.stranger]


@dataclass(frozen=True)
class Case:
    """One mail and what the gateway must do with it.

    ``inline``: the case relies on inline PGP; with inline PGP disabled the expected
    outcome becomes refuse/inline_pgp_disabled. ``prior``: a mail to send (and see
    accepted) first, used by the replay cases.
    """

    name: str
    build: Callable[[Scenario], bytes]
    verdict: Verdict
    reason: str | None
    inline: bool = False
    prior: Callable[[Scenario], bytes] | None = None
    note: str = ""

    def expected(self, *, inline_allowed: bool = True) -> tuple[Verdict, str | None]:
        """(verdict, reason) for a gateway with or without inline PGP enabled."""
        if self.inline and not inline_allowed:
            return "refuse", "inline_pgp_disabled"
        return self.verdict, self.reason


def make_scenario(ring: OfficerKeyring, gateway_public: bytes, gateway_address: str) -> Scenario:
    """Create every key the catalogue needs (about a second with Ed25519)."""
    # a past second: gpg ignores a faked time equal to its own clock's second and runs on the
    # real clock, so a signature made in the scenario's first second could carry the next one
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=2)
    old = now - KEY_AGE
    officer_a = ring.create_key(ALICE, "Alice Officer", created_at=old)
    officer_b = ring.create_key(BOB, "Bob Officer", created_at=old)
    stranger = ring.create_key(ALICE, "Alice Officer", created_at=old)
    unknown = ring.create_key(ALICE, "Alice Officer", created_at=old)
    subkey_officer = ring.create_key(CAROL, "Carol Officer", created_at=old, signing_subkey=True)
    expired = ring.create_key(
        ERIN,
        "Erin Expired",
        created_at=now - EXPIRED_KEY_CREATED,
        expires_seconds=int(EXPIRED_KEY_LIFETIME.total_seconds()),
    )
    revoked = ring.create_key(RITA, "Rita Revoked", created_at=old)
    revoked_update = ring.revoke(revoked, at=now - timedelta(minutes=5))
    return Scenario(
        ring=ring,
        officer_a=officer_a,
        officer_b=officer_b,
        stranger=stranger,
        unknown=unknown,
        expired=expired,
        revoked=revoked,
        subkey_officer=subkey_officer,
        revoked_update=revoked_update,
        gateway_public=gateway_public,
        gateway_address=gateway_address,
        now=now,
    )


# -- building blocks ------------------------------------------------------------------


def case_body(name: str, **overrides: str | None) -> str:
    """A request body unique to one case (own case number and free text)."""
    number = 1000 + zlib.crc32(name.encode()) % 9000
    return request_body(
        case_number=f"2026-CR-{number:04d}",
        free_text=f"Catalogue case {name}. Please respond within 14 days.",
        **overrides,
    )


def _mid(name: str, suffix: str = "") -> str:
    """Message-ID named after the case, so gateway logs point straight at it."""
    return f"<{name}{suffix}@police.test>"


def _signed(
    s: Scenario,
    name: str,
    key: TestKey | None = None,
    *,
    from_addr: str | None = ALICE,
    at: datetime | None = None,
    message_id: str | None = None,
    attachments: Sequence[Attachment] = (),
    protected_headers: bool = False,
    extra_outer_headers: Sequence[tuple[str, str]] = (),
    digest: str = "SHA256",
    expires_seconds: int | None = None,
    line_ending: bytes = b"\r\n",
) -> bytes:
    """The standard PGP/MIME request for case ``name``, signed at ``s.now`` by default."""
    return signed_request_mail(
        s.ring,
        key or s.officer_a,
        from_addr=from_addr,
        to_addr=s.gateway_address,
        body=case_body(name),
        attachments=attachments,
        protected_headers=protected_headers,
        message_id=message_id or _mid(name),
        extra_outer_headers=extra_outer_headers,
        digest=digest,
        at=at or s.now,
        expires_seconds=expires_seconds,
        line_ending=line_ending,
    )


def _signed_entity(s: Scenario, name: str, key: TestKey | None = None) -> bytes:
    """A valid multipart/signed entity (no RFC 5322 headers) for wrapping attacks."""
    part = signed_part_bytes(case_body(name), to_addr=s.gateway_address)
    sig = s.ring.sign_detached(key or s.officer_a, part, at=s.now)
    return multipart_signed_entity(part, sig, closing_crlf=False)


def _wrap(s: Scenario, name: str, top: bytes, *, from_addr: str | None = ALICE) -> bytes:
    """Put RFC 5322 headers on top of an arbitrary top-level entity."""
    headers = outer_headers(
        from_addr=from_addr,
        to_addr=s.gateway_address,
        subject="Data request",
        date=s.now,
        message_id=_mid(name),
    )
    return compose(headers, top, b"\r\n")


def _with_signature(
    s: Scenario,
    name: str,
    signature: bytes,
    *,
    micalg: str = "pgp-sha256",
    from_addr: str | None = ALICE,
) -> bytes:
    """A multipart/signed mail over this case's body, with a chosen signature part."""
    part = signed_part_bytes(case_body(name), to_addr=s.gateway_address)
    return _wrap(
        s, name, multipart_signed_entity(part, signature, micalg=micalg), from_addr=from_addr
    )


def _cve_filename(s: Scenario) -> str:
    """Fake status lines claiming a good signature by Alice (CVE-2018-12020 style)."""
    a = s.officer_a
    stamp = f"{s.now:%Y-%m-%d} {int(s.now.timestamp())}"
    return (
        f"\n[GNUPG:] GOODSIG {a.keyid} {a.uid}"
        f"\n[GNUPG:] VALIDSIG {a.fingerprint} {stamp} 0 4 0 22 8 00 {a.fingerprint}"
        "\n[GNUPG:] TRUST_FULLY 0 pgp\n"
    )


def _cve_message(s: Scenario, name: str) -> bytes:
    """Opaque message signed by the unknown key, injecting status lines via its filename."""
    return s.ring.sign_opaque(
        s.unknown, case_body(name).encode(), filename=_cve_filename(s), at=s.now
    )


def _cached(s: Scenario, key: str, build: Callable[[], bytes]) -> bytes:
    """Build once per Scenario, so a replay re-uses the very same signature bytes."""
    if key not in s.cache:
        s.cache[key] = build()
    return s.cache[key]


def _replay_original(name: str) -> Callable[[Scenario], bytes]:
    """The first, legitimate sending of a replay case (its ``prior``)."""

    def build(s: Scenario) -> bytes:
        return _cached(s, f"{name}:original", lambda: _signed(s, name, message_id=_mid(name)))

    return build


# -- the cases ------------------------------------------------------------------------


def _valid(s: Scenario) -> bytes:
    return _signed(s, "valid_request")


def _valid_pdf(s: Scenario) -> bytes:
    pdf = pdf_bytes("Subpoena\nCase 2026-CR-0042\nSigned by the court clerk.")
    return _signed(
        s,
        "valid_with_pdf_attachment",
        attachments=[Attachment("subpoena.pdf", "application/pdf", pdf)],
    )


def _valid_protected(s: Scenario) -> bytes:
    return _signed(s, "valid_protected_headers", protected_headers=True)


def _subkey(s: Scenario) -> bytes:
    return _signed(s, "signing_subkey", s.subkey_officer, from_addr=CAROL)


def _outer_changed(s: Scenario) -> bytes:
    mail = _signed(s, "outer_headers_changed_after_signing")
    mail = replace_outer_header(mail, "Subject", "Re: something else entirely")
    return replace_outer_header(mail, "To", f"Records <{s.gateway_address}>")


def _lf_only(s: Scenario) -> bytes:
    return _signed(s, "lf_line_endings", line_ending=b"\n")


def _unsigned(s: Scenario) -> bytes:
    return unsigned_mail(
        from_addr=ALICE,
        to_addr=s.gateway_address,
        body=case_body("unsigned"),
        message_id=_mid("unsigned"),
        date=s.now,
    )


def _smime(s: Scenario) -> bytes:
    # Not a real PKCS#7 blob (only its signedData OID prefix): the protocol alone must
    # be enough for the gateway to refuse, it must never try to parse S/MIME.
    fake_p7s = bytes.fromhex("308006092a864886f70d010702a080") + b"\0" * 64
    name = "smime_signed"
    part = signed_part_bytes(case_body(name), to_addr=s.gateway_address)
    sig_part = attachment_entity(Attachment("smime.p7s", "application/pkcs7-signature", fake_p7s))
    boundary = "=_lers_smime_boundary"
    body = (
        f"--{boundary}\r\n".encode() + part + f"\r\n--{boundary}\r\n".encode()
        + sig_part + f"\r\n--{boundary}--\r\n".encode()
    )  # fmt: skip
    ctype = (
        'multipart/signed; protocol="application/pkcs7-signature"; micalg=sha-256;\r\n'
        f' boundary="{boundary}"'
    )
    return _wrap(s, name, entity([("Content-Type", ctype)], body))


def _tampered(s: Scenario) -> bytes:
    mail = _signed(s, "tampered_body")
    tampered = mail.replace(b"date_to: 2026-06-30", b"date_to: 2026-07-30", 1)
    assert tampered != mail and len(tampered) == len(mail)
    return tampered


def _other_body(s: Scenario) -> bytes:
    other = signed_part_bytes(case_body("some other, legitimately signed request"))
    return _with_signature(
        s, "signature_over_other_body", s.ring.sign_detached(s.officer_a, other, at=s.now)
    )


def _unknown(s: Scenario) -> bytes:
    return _signed(s, "unknown_key", s.unknown)


def _not_registered(s: Scenario) -> bytes:
    return _signed(s, "key_not_registered", s.stranger)


def _expired_key(s: Scenario) -> bytes:
    return _signed(s, "expired_key", s.expired, from_addr=ERIN, at=s.now - EXPIRED_KEY_SIGNED)


def _revoked_key(s: Scenario) -> bytes:
    return _signed(s, "revoked_key", s.revoked, from_addr=RITA)


def _expired_sig(s: Scenario) -> bytes:
    return _signed(
        s,
        "expired_signature",
        at=s.now - SIG_EXPIRY_SIGNED,
        expires_seconds=int(SIG_EXPIRY_LIFETIME.total_seconds()),
    )


def _future(s: Scenario) -> bytes:
    return _signed(s, "signature_in_future", at=s.now + FUTURE_OFFSET)


def _too_old(s: Scenario) -> bytes:
    return _signed(s, "signature_too_old", at=s.now - TOO_OLD_OFFSET)


def _sha1(s: Scenario) -> bytes:
    return _signed(s, "sha1_digest", digest="SHA1")


def _from_mismatch(s: Scenario) -> bytes:
    return _signed(s, "from_mismatch", s.officer_b, from_addr=ALICE)


def _from_quoted(s: Scenario) -> bytes:
    return _signed(
        s, "from_display_name_quoted_address", s.officer_b, from_addr=f'"{BOB}" <{ALICE}>'
    )


def _from_unquoted(s: Scenario) -> bytes:
    return _signed(
        s, "from_display_name_unquoted_address", s.officer_b, from_addr=f"{BOB} <{ALICE}>"
    )


def _from_two_headers(s: Scenario) -> bytes:
    return _signed(s, "from_two_headers", extra_outer_headers=[("From", BOB)])


def _from_multiple(s: Scenario) -> bytes:
    return _signed(s, "from_multiple_mailboxes", from_addr=f"{ALICE}, {BOB}")


def _from_empty(s: Scenario) -> bytes:
    return _signed(s, "from_empty", from_addr="")


def _from_missing(s: Scenario) -> bytes:
    return _signed(s, "from_missing", from_addr=None)


def _prepended(s: Scenario) -> bytes:
    name = "wrapped_prepended_text"
    note = text_entity(case_body("attacker text", data_categories="all_message_content"))
    top = multipart_entity("mixed", [note, _signed_entity(s, name)])
    return _wrap(s, name, top)


def _appended(s: Scenario) -> bytes:
    name = "wrapped_appended_attachment"
    extra = Attachment(
        "scope_extension.pdf",
        "application/pdf",
        pdf_bytes("Scope extension: all message content of all accounts."),
    )
    top = multipart_entity("mixed", [_signed_entity(s, name), attachment_entity(extra)])
    return _wrap(s, name, top)


def _html_hiding(s: Scenario) -> bytes:
    name = "wrapped_html_alternative"
    html = (
        "<html><body><pre>"
        + case_body("attacker html", data_categories="all_message_content")
        + "</pre><div style='display:none'></div></body></html>"
    )
    # multipart/alternative: a mail client shows the *last* alternative it can render,
    # i.e. the attacker's HTML, and never displays the signed part.
    top = multipart_entity(
        "alternative", [_signed_entity(s, name), text_entity(html, subtype="html")]
    )
    return _wrap(s, name, top)


def _forwarded(s: Scenario) -> bytes:
    name = "forwarded_as_rfc822"
    inner = _signed(s, name, message_id=_mid(name, ".original"))
    cover = text_entity("Forwarding Alice's request, please process.\n")
    top = multipart_entity("mixed", [cover, message_entity(inner)])
    return _wrap(s, name, top)


def _opaque_as_sig(s: Scenario) -> bytes:
    opaque = s.ring.sign_opaque(s.officer_a, b"some other text\n", at=s.now)
    return _with_signature(s, "opaque_message_as_signature", opaque)


def _two_sigs(s: Scenario) -> bytes:
    name = "two_signatures_one_unknown"
    part = signed_part_bytes(case_body(name), to_addr=s.gateway_address)
    sig = s.ring.sign_detached(s.officer_a, part, at=s.now, extra_signers=[s.unknown])
    return _wrap(s, name, multipart_signed_entity(part, sig))


def _structural(
    name: str,
    *,
    extra_headers: Sequence[tuple[str, str]] = (),
    protocol: str | None = "application/pgp-signature",
) -> Callable[[Scenario], bytes]:
    """A correctly signed part inside a malformed multipart/signed header."""

    def build(s: Scenario) -> bytes:
        part = signed_part_bytes(case_body(name), to_addr=s.gateway_address)
        sig = s.ring.sign_detached(s.officer_a, part, at=s.now)
        top = multipart_signed_entity(part, sig, protocol=protocol, extra_headers=extra_headers)
        return _wrap(s, name, top)

    return build


def _inline(name: str, before: str = "", after: str = "") -> Callable[[Scenario], bytes]:
    def build(s: Scenario) -> bytes:
        return inline_signed_mail(
            s.ring,
            s.officer_a,
            from_addr=ALICE,
            to_addr=s.gateway_address,
            body=case_body(name),
            text_before=before,
            text_after=after,
            message_id=_mid(name),
            at=s.now,
        )

    return build


def _inline_two_blocks(s: Scenario) -> bytes:
    name = "inline_two_blocks"
    first = s.ring.clearsign(s.officer_a, case_body(name).encode(), at=s.now).decode()
    second_body = case_body(name + " second", data_categories="all_message_content")
    second = s.ring.clearsign(s.officer_a, second_body.encode(), at=s.now).decode()
    return unsigned_mail(
        from_addr=ALICE,
        to_addr=s.gateway_address,
        body=first + "\n" + second,
        message_id=_mid(name),
        date=s.now,
    )


def _cve_inline(s: Scenario) -> bytes:
    name = "cve_2018_12020_inline"
    return unsigned_mail(
        from_addr=ALICE,
        to_addr=s.gateway_address,
        body=_cve_message(s, name).decode(),
        message_id=_mid(name),
        date=s.now,
    )


def _cve_sig_part(s: Scenario) -> bytes:
    name = "cve_2018_12020_signature_part"
    return _with_signature(s, name, _cve_message(s, name))


def _encrypted(s: Scenario) -> bytes:
    name = "encrypted_unsigned"
    return encrypted_mail(
        s.ring,
        s.gateway_public,
        from_addr=ALICE,
        to_addr=s.gateway_address,
        body=case_body(name),
        message_id=_mid(name),
        date=s.now,
    )


def _replay_identical(s: Scenario) -> bytes:
    return _replay_original("replay_identical")(s)


def _replay_new_headers(s: Scenario) -> bytes:
    name = "replay_new_headers"
    original = _replay_original(name)(s)
    return resend(original, message_id=_mid(name, ".resent"), date=s.now + timedelta(minutes=5))


_BEFORE = "Hi, urgent request below, thanks.\n\n"
_AFTER = "\n\nAlso include all message content for these accounts.\n"

CASES: list[Case] = [
    # accepted
    Case("valid_request", _valid, "accept", None),
    Case("valid_with_pdf_attachment", _valid_pdf, "accept", None),
    Case("valid_protected_headers", _valid_protected, "accept", None),
    Case("signing_subkey", _subkey, "accept", None),
    Case(
        "outer_headers_changed_after_signing",
        _outer_changed,
        "accept",
        None,
        note="Subject and To are outside the signature; only the signed part counts.",
    ),
    Case("lf_line_endings", _lf_only, "accept", None, note="LF-only transport; sig over CRLF."),
    Case("inline_valid", _inline("inline_valid"), "accept", None, inline=True),
    # not signed / wrong kind of signing
    Case("unsigned", _unsigned, "refuse", "not_signed"),
    Case("smime_signed", _smime, "refuse", "smime_not_accepted"),
    Case("encrypted_unsigned", _encrypted, "refuse", "encrypted_unsigned"),
    # signature does not verify
    Case("tampered_body", _tampered, "refuse", "bad_signature"),
    Case("signature_over_other_body", _other_body, "refuse", "bad_signature"),
    # key problems
    Case("unknown_key", _unknown, "refuse", "unknown_key"),
    Case("key_not_registered", _not_registered, "refuse", "key_not_registered"),
    Case(
        "expired_key",
        _expired_key,
        "refuse",
        "expired_key",
        note="Signed while the key was valid (90 min ago); the key expired 60 min ago.",
    ),
    Case(
        "revoked_key",
        _revoked_key,
        "refuse",
        "revoked_key",
        note="Signed after a hard revocation (reason: compromised).",
    ),
    # signature metadata
    Case("expired_signature", _expired_sig, "refuse", "expired_signature"),
    Case("signature_in_future", _future, "refuse", "signature_in_future"),
    Case("signature_too_old", _too_old, "refuse", "signature_too_old"),
    Case("sha1_digest", _sha1, "refuse", "weak_digest"),
    Case("opaque_message_as_signature", _opaque_as_sig, "refuse", "not_a_detached_signature"),
    Case("two_signatures_one_unknown", _two_sigs, "refuse", "multiple_signatures"),
    # From header
    Case("from_mismatch", _from_mismatch, "refuse", "from_mismatch"),
    Case("from_display_name_quoted_address", _from_quoted, "refuse", "bad_from"),
    Case("from_display_name_unquoted_address", _from_unquoted, "refuse", "bad_from"),
    Case("from_two_headers", _from_two_headers, "refuse", "bad_from"),
    Case("from_multiple_mailboxes", _from_multiple, "refuse", "bad_from"),
    Case("from_empty", _from_empty, "refuse", "bad_from"),
    Case("from_missing", _from_missing, "refuse", "bad_from"),
    # MIME wrapping
    Case("wrapped_prepended_text", _prepended, "refuse", "unsigned_content"),
    Case("wrapped_appended_attachment", _appended, "refuse", "unsigned_content"),
    Case("wrapped_html_alternative", _html_hiding, "refuse", "unsigned_content"),
    Case("forwarded_as_rfc822", _forwarded, "refuse", "unsigned_content"),
    # MIME structure
    Case(
        "duplicate_content_type",
        _structural(
            "duplicate_content_type",
            extra_headers=[("Content-Type", 'text/plain; charset="us-ascii"')],
        ),
        "refuse",
        "bad_structure",
    ),
    Case(
        "base64_cte_on_multipart_signed",
        _structural(
            "base64_cte_on_multipart_signed",
            extra_headers=[("Content-Transfer-Encoding", "base64")],
        ),
        "refuse",
        "bad_structure",
    ),
    Case(
        "missing_protocol_parameter",
        _structural("missing_protocol_parameter", protocol=None),
        "refuse",
        "bad_structure",
    ),
    # inline PGP (expected outcomes assume inline PGP is allowed; see Case.expected)
    Case(
        "inline_text_before_block",
        _inline("inline_text_before_block", before=_BEFORE),
        "refuse",
        "inline_text_outside_block",
        inline=True,
    ),
    Case(
        "inline_text_after_block",
        _inline("inline_text_after_block", after=_AFTER),
        "refuse",
        "inline_text_outside_block",
        inline=True,
    ),
    Case("inline_two_blocks", _inline_two_blocks, "refuse", "inline_multiple_blocks", inline=True),
    # CVE-2018-12020: filename in the literal data packet carries fake [GNUPG:] lines
    Case(
        "cve_2018_12020_inline",
        _cve_inline,
        "refuse",
        "not_signed",
        note=(
            "Body is an opaque '-----BEGIN PGP MESSAGE-----' (signed, not clearsigned) by a "
            "key the gateway lacks. Neither PGP/MIME nor a cleartext signature, so: "
            "not_signed, whether or not inline PGP is enabled."
        ),
    ),
    Case(
        "cve_2018_12020_signature_part",
        _cve_sig_part,
        "refuse",
        "not_a_detached_signature",
        note=(
            "The same kind of opaque message placed as the application/pgp-signature part; "
            "'gpg --verify sig data' says 'not a detached signature' and exits 2."
        ),
    ),
    # replay: send ``prior`` first (accepted), then ``build``
    Case(
        "replay_identical",
        _replay_identical,
        "refuse",
        "replay",
        prior=_replay_original("replay_identical"),
        note="Byte-identical re-send.",
    ),
    Case(
        "replay_new_headers",
        _replay_new_headers,
        "refuse",
        "replay",
        prior=_replay_original("replay_new_headers"),
        note="Same signed part and signature; new Message-ID and Date.",
    ),
]

CASES_BY_NAME: dict[str, Case] = {case.name: case for case in CASES}

assert len(CASES_BY_NAME) == len(CASES), "duplicate case name"
assert all(case.reason is None or case.reason in REASONS for case in CASES)
assert all((case.verdict == "accept") == (case.reason is None) for case in CASES)
