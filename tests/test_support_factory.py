"""Self-test of tests/support: the mail factory makes what each catalogue case claims.

Checked with plain ``gpg --verify`` in a separate keyring holding only what the gateway
would hold, so a case that is "refuse" for a signature reason fails for that reason and no
other (and "accept" cases really verify).
"""

from __future__ import annotations

import email
import email.policy
import io
import re
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from tests.support.attack_catalog import (
    CASES,
    CASES_BY_NAME,
    FUTURE_OFFSET,
    REASONS,
    TOO_OLD_OFFSET,
    Case,
    Scenario,
    make_scenario,
)
from tests.support.mail_factory import (
    CRLF,
    extract_signed_part,
    pdf_bytes,
    request_body,
    split_head,
)
from tests.support.officer_keys import GpgResult, OfficerKeyring

GATEWAY = "lers@gateway.test"


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    """Officer keys plus a stand-in gateway key, all in one throw-away GNUPGHOME."""
    ring = OfficerKeyring(tmp_path_factory.mktemp("officers"))
    try:
        gateway_key = ring.create_key(GATEWAY, "LERS Gateway")
        yield make_scenario(ring, gateway_key.public_armored, GATEWAY)
    finally:
        ring.close()


@pytest.fixture(scope="module")
def verifier(
    tmp_path_factory: pytest.TempPathFactory, scenario: Scenario
) -> Iterator[OfficerKeyring]:
    """A keyring with what the gateway would import: enrolled keys, stranger, revocation."""
    ring = OfficerKeyring(tmp_path_factory.mktemp("gateway"))
    try:
        for key in [*scenario.enrolled.values(), *scenario.gateway_keyring_only]:
            ring.import_key(key.public_armored)
        ring.import_key(scenario.revoked_update)
        yield ring
    finally:
        ring.close()


@pytest.fixture(scope="module")
def mails(scenario: Scenario) -> dict[str, bytes]:
    """Every case built once (and its prior, for replay cases)."""
    return {case.name: case.build(scenario) for case in CASES}


def _verify_mail(verifier: OfficerKeyring, mail: bytes) -> GpgResult:
    signed, signature = extract_signed_part(mail)
    return verifier.verify_detached_status(signature, signed)


def _validsig(result: GpgResult) -> list[str]:
    lines = result.lines("VALIDSIG")
    assert len(lines) == 1, result.status
    return lines[0]


def _nested_signed_entity(mail: bytes) -> bytes:
    """The nested multipart/signed entity of a wrapping attack, as a parsable message."""
    start = mail.index(b"Content-Type: multipart/signed")
    return mail[start:]


def _headers(mail: bytes) -> list[tuple[str, str]]:
    head, _sep, _body = split_head(mail)
    unfolded = re.sub(rb"\r?\n[ \t]", b" ", head).decode()
    pairs = []
    for line in re.split(r"\r?\n", unfolded):
        name, _colon, value = line.partition(":")
        pairs.append((name, value))
    return pairs


def _header_values(mail: bytes, name: str) -> list[str]:
    return [value.strip() for key, value in _headers(mail) if key.lower() == name.lower()]


# -- the catalogue itself -------------------------------------------------------------


def test_every_case_builds_well_formed_mail(mails: dict[str, bytes]) -> None:
    for name, mail in mails.items():
        assert isinstance(mail, bytes) and mail, name
        if name == "lf_line_endings":
            assert b"\r" not in mail
        else:
            assert b"\n" not in mail.replace(CRLF, b""), f"{name}: bare LF"
        assert max(len(line) for line in mail.splitlines()) <= 998, name
        assert mail.isascii(), name
        parsed = email.message_from_bytes(mail, policy=email.policy.default)
        assert parsed.get_content_type(), name


def test_catalogue_reasons_are_known_and_all_used() -> None:
    used = {case.expected(inline_allowed=allowed)[1] for case in CASES for allowed in (True, False)}
    assert used - {None} <= REASONS
    assert used >= REASONS, f"unused reason codes: {sorted(REASONS - used)}"


def test_builds_are_deterministic(scenario: Scenario, mails: dict[str, bytes]) -> None:
    for name in ("valid_request", "expired_key", "wrapped_prepended_text", "inline_valid"):
        assert CASES_BY_NAME[name].build(scenario) == mails[name], name


def test_enrolment_data(scenario: Scenario) -> None:
    assert set(scenario.enrolled) == {
        "alice@police.test",
        "bob@police.test",
        "carol@police.test",
        scenario.expired.email,
        scenario.revoked.email,
    }
    assert scenario.stranger.email == scenario.officer_a.email
    assert scenario.stranger.fingerprint != scenario.officer_a.fingerprint
    assert b"PRIVATE KEY" not in scenario.revoked_update


# -- accepted cases really verify -----------------------------------------------------


@pytest.mark.parametrize(
    ("name", "signer"),
    [
        ("valid_request", "officer_a"),
        ("valid_with_pdf_attachment", "officer_a"),
        ("valid_protected_headers", "officer_a"),
        ("outer_headers_changed_after_signing", "officer_a"),
        ("lf_line_endings", "officer_a"),
        ("signing_subkey", "subkey_officer"),
        ("key_not_registered", "stranger"),
        ("from_mismatch", "officer_b"),
    ],
)
def test_good_signature(
    name: str, signer: str, scenario: Scenario, verifier: OfficerKeyring, mails: dict[str, bytes]
) -> None:
    result = _verify_mail(verifier, mails[name])
    key = getattr(scenario, signer)
    assert result.returncode == 0, result.stderr
    assert len(result.lines("GOODSIG")) == 1
    fields = _validsig(result)
    assert fields[0] == key.signing_fingerprint
    assert fields[9] == key.fingerprint  # primary key fingerprint
    assert fields[7] == "8"  # SHA256


def test_subkey_signature_comes_from_subkey(scenario: Scenario) -> None:
    key = scenario.subkey_officer
    assert key.signing_fingerprint != key.fingerprint


def test_signed_part_excludes_boundary_crlf(mails: dict[str, bytes]) -> None:
    signed, _sig = extract_signed_part(mails["valid_request"])
    assert signed.startswith(b"Content-Type: text/plain")
    assert signed.endswith(b"Please respond within 14 days.\r\n")  # body's own last CRLF
    signed, _sig = extract_signed_part(mails["valid_with_pdf_attachment"])
    assert signed.startswith(b"Content-Type: multipart/mixed")
    assert signed.endswith(b"--")


def test_protected_headers(mails: dict[str, bytes]) -> None:
    signed, _sig = extract_signed_part(mails["valid_protected_headers"])
    head = signed.split(b"\r\n\r\n", 1)[0]
    assert b'protected-headers="v1"' in head
    assert b"From: alice@police.test" in head and b"Subject: Data request" in head


def test_outer_headers_changed(mails: dict[str, bytes]) -> None:
    mail = mails["outer_headers_changed_after_signing"]
    assert _header_values(mail, "Subject") == ["Re: something else entirely"]
    assert _header_values(mail, "To") == [f"Records <{GATEWAY}>"]


def test_pdf_attachment_is_real_pdf() -> None:
    pdf = pdf_bytes("Hello (PDF) \\ world\nsecond line")
    assert pdf.startswith(b"%PDF-1.4") and pdf.rstrip().endswith(b"%%EOF")
    match = re.search(rb"startxref\n(\d+)", pdf)
    assert match is not None and pdf[int(match.group(1)) :].startswith(b"xref")
    pypdf = pytest.importorskip("pypdf")
    text = pypdf.PdfReader(io.BytesIO(pdf), strict=True).pages[0].extract_text()
    assert "Hello (PDF) \\ world" in text and "second line" in text


def test_request_body_overrides() -> None:
    body = request_body(type="preservation", subjects=None, extra_field="x", free_text="Hi")
    assert body.startswith("type: preservation\ncase_number: 2026-CR-0042\n")
    assert "subjects:" not in body and "extra_field: x\n\nHi\n" in body


# -- refused cases fail for the claimed reason ----------------------------------------


def test_unsigned(mails: dict[str, bytes]) -> None:
    assert b"PGP" not in mails["unsigned"]


def test_smime(mails: dict[str, bytes]) -> None:
    assert b'protocol="application/pkcs7-signature"' in mails["smime_signed"]


@pytest.mark.parametrize("name", ["tampered_body", "signature_over_other_body"])
def test_bad_signature(name: str, verifier: OfficerKeyring, mails: dict[str, bytes]) -> None:
    result = _verify_mail(verifier, mails[name])
    assert result.returncode == 1
    assert result.has("BADSIG") and not result.has("GOODSIG")


def test_unknown_key(scenario: Scenario, verifier: OfficerKeyring, mails: dict[str, bytes]) -> None:
    result = _verify_mail(verifier, mails["unknown_key"])
    assert result.has("NO_PUBKEY") and not result.has("GOODSIG")
    assert result.lines("ERRSIG")[0][5] == "9"  # 9 = missing public key
    # ...and the impersonator claims Alice's user id
    assert scenario.unknown.uid == scenario.officer_a.uid


def test_expired_key(scenario: Scenario, verifier: OfficerKeyring, mails: dict[str, bytes]) -> None:
    result = _verify_mail(verifier, mails["expired_key"])
    assert result.has("EXPKEYSIG") and result.has("KEYEXPIRED") and not result.has("GOODSIG")
    signed_at = int(_validsig(result)[2])
    expired_at = int(result.lines("KEYEXPIRED")[0][0])
    now = int(scenario.now.timestamp())
    assert signed_at < expired_at < now  # signed while valid, expired since
    assert now - signed_at < 3 * 3600  # and the signature is fresh


def test_revoked_key(verifier: OfficerKeyring, mails: dict[str, bytes]) -> None:
    result = _verify_mail(verifier, mails["revoked_key"])
    assert result.has("REVKEYSIG") and result.has("KEYREVOKED") and not result.has("GOODSIG")


def test_expired_signature(verifier: OfficerKeyring, mails: dict[str, bytes]) -> None:
    result = _verify_mail(verifier, mails["expired_signature"])
    assert result.has("EXPSIG") and not result.has("GOODSIG")
    fields = _validsig(result)
    assert 0 < int(fields[3]) < datetime.now().timestamp()  # sig expiry in the past


def test_signature_in_future(
    scenario: Scenario, verifier: OfficerKeyring, mails: dict[str, bytes]
) -> None:
    result = _verify_mail(verifier, mails["signature_in_future"])
    # gpg 2.2 does NOT flag future-dated signatures: GOODSIG, exit 0. The gateway must
    # compare the VALIDSIG timestamp with its own clock.
    assert result.returncode == 0 and result.has("GOODSIG")
    signed_at = int(_validsig(result)[2])
    assert signed_at == int((scenario.now + FUTURE_OFFSET).timestamp())


def test_signature_too_old(
    scenario: Scenario, verifier: OfficerKeyring, mails: dict[str, bytes]
) -> None:
    result = _verify_mail(verifier, mails["signature_too_old"])
    assert result.returncode == 0 and result.has("GOODSIG")
    signed_at = int(_validsig(result)[2])
    assert signed_at == int((scenario.now - TOO_OLD_OFFSET).timestamp())


def test_sha1(verifier: OfficerKeyring, mails: dict[str, bytes]) -> None:
    mail = mails["sha1_digest"]
    assert b"micalg=pgp-sha1" in mail
    result = _verify_mail(verifier, mail)
    # gpg 2.2 still calls an SHA-1 data signature good; the gateway must check the algo.
    assert result.has("GOODSIG")
    assert _validsig(result)[7] == "2"  # hash algo 2 = SHA-1
    assert _validsig(result)[6] == "22"  # made with the Ed25519 key


@pytest.mark.parametrize("name", ["opaque_message_as_signature", "cve_2018_12020_signature_part"])
def test_not_a_detached_signature(
    name: str, verifier: OfficerKeyring, mails: dict[str, bytes]
) -> None:
    _signed, signature = extract_signed_part(mails[name])
    assert b"-----BEGIN PGP MESSAGE-----" in signature
    result = _verify_mail(verifier, mails[name])
    assert result.returncode == 2
    assert b"not a detached signature" in result.stderr
    assert not result.has("GOODSIG") and not result.has("NEWSIG")


def test_opaque_message_alone_would_verify(
    scenario: Scenario, verifier: OfficerKeyring, mails: dict[str, bytes]
) -> None:
    """Why the case matters: verified on its own, the embedded message is a good sig."""
    _signed, signature = extract_signed_part(mails["opaque_message_as_signature"])
    result = verifier.verify_inline_status(signature)
    assert result.has("GOODSIG")
    assert _validsig(result)[0] == scenario.officer_a.fingerprint


def test_two_signatures(verifier: OfficerKeyring, mails: dict[str, bytes]) -> None:
    result = _verify_mail(verifier, mails["two_signatures_one_unknown"])
    assert len(result.lines("NEWSIG")) == 2
    assert len(result.lines("GOODSIG")) == 1 and result.has("NO_PUBKEY")
    assert result.returncode != 0


@pytest.mark.parametrize("name", ["cve_2018_12020_inline", "cve_2018_12020_signature_part"])
def test_cve_2018_12020_payload(
    name: str, scenario: Scenario, verifier: OfficerKeyring, mails: dict[str, bytes]
) -> None:
    mail = mails[name]
    if name.endswith("inline"):
        _head, _sep, armored = split_head(mail)
    else:
        _signed, armored = extract_signed_part(mail)
    packets = scenario.ring.run("--list-packets", input=armored, check=False)
    listing = packets.stdout.decode()
    assert "[GNUPG:] GOODSIG" in listing and scenario.officer_a.keyid in listing
    assert f"keyid {scenario.unknown.keyid}" in listing
    # gpg >= 2.2.8 escapes the name, so no injected line becomes a real status line.
    result = verifier.verify_inline_status(armored)
    assert not result.has("GOODSIG") and result.has("NO_PUBKEY")


def test_from_headers(mails: dict[str, bytes]) -> None:
    assert _header_values(mails["from_mismatch"], "From") == ["alice@police.test"]
    assert _header_values(mails["from_display_name_quoted_address"], "From") == [
        '"bob@police.test" <alice@police.test>'
    ]
    assert _header_values(mails["from_display_name_unquoted_address"], "From") == [
        "bob@police.test <alice@police.test>"
    ]
    assert _header_values(mails["from_two_headers"], "From") == [
        "alice@police.test",
        "bob@police.test",
    ]
    assert _header_values(mails["from_multiple_mailboxes"], "From") == [
        "alice@police.test, bob@police.test"
    ]
    assert _header_values(mails["from_empty"], "From") == [""]
    assert _header_values(mails["from_missing"], "From") == []


@pytest.mark.parametrize(
    ("name", "top_type"),
    [
        ("wrapped_prepended_text", "multipart/mixed"),
        ("wrapped_appended_attachment", "multipart/mixed"),
        ("wrapped_html_alternative", "multipart/alternative"),
        ("forwarded_as_rfc822", "multipart/mixed"),
    ],
)
def test_wrapped_valid_signed_part(
    name: str, top_type: str, verifier: OfficerKeyring, mails: dict[str, bytes]
) -> None:
    """The nested multipart/signed is itself valid; only the wrapping is wrong."""
    mail = mails[name]
    parsed = email.message_from_bytes(mail, policy=email.policy.default)
    assert parsed.get_content_type() == top_type
    nested = _nested_signed_entity(mail)
    if name == "forwarded_as_rfc822":
        nested = mail[mail.index(b"From: alice@police.test", 10) :]
    result = _verify_mail(verifier, nested)
    assert result.has("GOODSIG"), (name, result.status)


@pytest.mark.parametrize(
    ("name", "marker"),
    [
        ("duplicate_content_type", "Content-Type"),
        ("base64_cte_on_multipart_signed", "Content-Transfer-Encoding"),
    ],
)
def test_structure_headers(name: str, marker: str, mails: dict[str, bytes]) -> None:
    values = _header_values(mails[name], marker)
    if marker == "Content-Type":
        assert len(values) == 2 and values[0].startswith("multipart/signed")
    else:
        assert values == ["base64"]


def test_missing_protocol(verifier: OfficerKeyring, mails: dict[str, bytes]) -> None:
    mail = mails["missing_protocol_parameter"]
    (ctype,) = _header_values(mail, "Content-Type")
    assert ctype.startswith("multipart/signed") and "protocol" not in ctype
    assert _verify_mail(verifier, mail).has("GOODSIG")  # only the structure is wrong


@pytest.mark.parametrize(
    ("name", "blocks"),
    [
        ("inline_valid", 1),
        ("inline_text_before_block", 1),
        ("inline_text_after_block", 1),
        ("inline_two_blocks", 2),
    ],
)
def test_inline(name: str, blocks: int, verifier: OfficerKeyring, mails: dict[str, bytes]) -> None:
    mail = mails[name]
    _head, _sep, body = split_head(mail)
    assert body.count(b"-----BEGIN PGP SIGNED MESSAGE-----") == blocks
    case: Case = CASES_BY_NAME[name]
    assert case.inline and case.expected(inline_allowed=False) == ("refuse", "inline_pgp_disabled")
    if blocks == 1:
        assert (body.startswith(b"-----BEGIN")) == (name != "inline_text_before_block")
        assert body.rstrip().endswith(b"-----END PGP SIGNATURE-----") == (
            name != "inline_text_after_block"
        )
        result = verifier.verify_inline_status(body)
        assert result.has("GOODSIG"), result.status


def test_encrypted_unsigned(scenario: Scenario, mails: dict[str, bytes]) -> None:
    mail = mails["encrypted_unsigned"]
    assert b'protocol="application/pgp-encrypted"' in mail and b"Version: 1" in mail
    armored = mail[mail.index(b"-----BEGIN PGP MESSAGE-----") :]
    plaintext, result = scenario.ring.decrypt_with_status(armored)
    assert b"Catalogue case encrypted_unsigned." in plaintext
    assert result.has("DECRYPTION_OKAY") and not result.has("NEWSIG")


def test_replays(scenario: Scenario, mails: dict[str, bytes]) -> None:
    identical = CASES_BY_NAME["replay_identical"]
    assert identical.prior is not None and identical.prior(scenario) == mails["replay_identical"]
    resent = CASES_BY_NAME["replay_new_headers"]
    assert resent.prior is not None
    original = resent.prior(scenario)
    assert extract_signed_part(original) == extract_signed_part(mails["replay_new_headers"])
    assert _header_values(original, "Message-ID") != _header_values(
        mails["replay_new_headers"], "Message-ID"
    )
    assert _header_values(original, "Date") != _header_values(mails["replay_new_headers"], "Date")


def test_keyring_round_trip(scenario: Scenario) -> None:
    """decrypt/verify_detached work for reading the gateway's replies later."""
    ring = scenario.ring
    sig = ring.sign_detached(scenario.officer_b, b"reply body")
    assert ring.verify_detached(sig, b"reply body")
    assert not ring.verify_detached(sig, b"reply body!")
    secret = ring.encrypt_to(scenario.officer_b.public_armored, b"for bob")
    assert ring.decrypt(secret) == b"for bob"


def _is_revoked(ring: OfficerKeyring, armored: bytes) -> bool:
    shown = ring.run("--with-colons", "--import-options", "show-only", "--import", input=armored)
    return any(row.startswith("pub:r:") for row in shown.stdout.decode().splitlines())


def test_revoked_key_public_update(scenario: Scenario) -> None:
    assert _is_revoked(scenario.ring, scenario.revoked_update)
    assert not _is_revoked(scenario.ring, scenario.revoked.public_armored)


def test_time_offsets_sane(scenario: Scenario) -> None:
    assert abs(datetime.now(scenario.now.tzinfo) - scenario.now) < timedelta(minutes=10)
