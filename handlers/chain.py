"""The acceptance rules of DESIGN.md as an ordered chain: structure, signature, identity,
freshness, replay. Each rule returns a `Refusal` or lets the message through; the first refusal
wins. The sender is the signing key's fingerprint, never the From header: From only has to
agree with the key and the officer's record.

A key no officer holds is not refused at once (rule 3): a signed enrolment (its key attached,
checked alone in a scratch keyring) goes to reviewers, and a key certified by a registered
agency's key is accepted in that agency's name. Every other rule applies to them unchanged.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from email import policy
from email.headerregistry import AddressHeader
from email.utils import getaddresses
from functools import lru_cache, partial
from typing import Any, TypeVar

from sqlalchemy import Connection, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from gateway.clock import utcnow
from gateway.config import Settings
from gateway.db import Database
from gateway.metrics import ProcessMetrics
from gateway.mime import (
    DEFAULT_LIMITS,
    DetachedFile,
    InlineSigned,
    MimeLimits,
    PgpMimeEncrypted,
    PgpMimeSigned,
    ReceivedAttachment,
    Refusal,
    SignedContent,
    canonical_line_endings,
    canonical_text_sha256,
    header_problem,
    mime_tree_problem,
    parse_headers,
    read_inline_content,
    read_signed_content,
    split_chat_message,
    split_head_body,
    split_signed,
)
from gateway.models import Agency, Message, Officer
from gateway.pgp import KeyImportError, KeyStatus, OpenPGP, SignatureCheck, trust_signature_domain
from handlers.enrolment_form import attached_keys, purpose_of

# RFC 5322 dot-atom (with RFC 6532's UTF-8): the only local parts officers' addresses use
DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\u0080-\U0010ffff-]+"
                      r"(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~\u0080-\U0010ffff-]+)*")

T = TypeVar("T")

# the structure limits of `MimeLimits`, each refused with its own reason before any signature check
LIMIT_REASONS = frozenset({"headers_too_large", "too_many_headers", "too_many_parts", "too_deeply_nested",
                           "decoded_size_exceeded"})


@dataclass
class Evaluation:
    """What the chain learned about one inbound message, accepted or not."""

    refusal: Refusal | None = None
    check: SignatureCheck | None = None
    content: SignedContent | None = None
    from_address: str | None = None  # the single From addr-spec, when it parsed cleanly
    officer_id: int | None = None  # the officer proven by the signature, when there is one
    officer: Officer | None = None  # that officer's record as rule 3 read it (detached)
    replay_key: str | None = None
    transport: str = "smtp"
    enrolment: bool = False  # a signed enrolment from a key not yet enrolled: for reviewers
    certified_by: int | None = None  # the agency whose key certified the (new) signer's key
    certification: dict[str, Any] | None = None  # what that certification was
    signer_key: KeyStatus | None = None  # the signing key, when no officer holds it yet
    imported_signer: str | None = None  # an unknown signer's attached key, imported by rule 1
    rotation: dict[str, Any] | None = None  # a key rotation's new key, or its problems
    replayed: bool | None = None  # rule 4b's look-up, made with rule 3's (None: not made yet)
    outer_from: str | Refusal | None = None  # the From header as judged once, before the rules

    @property
    def accepted(self) -> bool:
        return self.refusal is None

    @property
    def verified_officer(self) -> bool:
        """The signature proved who sent it, even if a later rule refused the message."""
        return self.officer_id is not None


@dataclass(frozen=True)
class ChainContext:
    settings: Settings
    db: Database
    pgp: OpenPGP
    metrics: ProcessMetrics | None = None

    def verifying(self) -> AbstractContextManager[None]:
        """Time a gpg verification for the `lers_verification_seconds` histogram."""
        return self.metrics.verifying() if self.metrics is not None else nullcontext()


async def evaluate(ctx: ChainContext, raw: bytes, received_at: datetime, message_id: int,
                   transport: str = "smtp") -> Evaluation:
    """Run every rule in order; stop at the first refusal."""
    result = Evaluation(transport=transport)
    outer_from = await parse_safely(outer_from_address, raw, ctx.settings.mime)
    result.outer_from = outer_from
    result.from_address = outer_from if isinstance(outer_from, str) else None
    for rule in (check_signature, check_identity, check_freshness, check_replay):
        refusal = await rule(ctx, raw, received_at, message_id, result)
        if refusal is not None:
            result.refusal = refusal
            break
    if result.refusal is not None and result.imported_signer is not None:
        # the key came with this message and won it nothing: it leaves the keyring again (two
        # messages with the same new key at the same moment may refuse each other: fail closed)
        await ctx.pgp.forget_candidate_key(result.imported_signer)
    return result


async def check_signature(ctx: ChainContext, raw: bytes, received_at: datetime, message_id: int,
                          result: Evaluation) -> Refusal | None:
    """Rules 1 and 2: only what the one good signature covers is read."""
    if result.transport == "chat":  # the chat layer built this container; the content is judged
        structure = await parse_safely(split_chat_message, raw, ctx.settings.mime)
    else:
        structure = await parse_safely(split_signed, raw, allow_inline=ctx.settings.policy.allow_inline_pgp,
                                       limits=ctx.settings.mime)
    if isinstance(structure, Refusal):
        return structure
    if isinstance(structure, PgpMimeEncrypted):
        return await _check_encrypted(ctx, structure, result)
    return await _check_signed(ctx, structure, result)


async def parse_safely(parse: Callable[..., T], *args: Any, **kwargs: Any) -> T | Refusal:
    """Run a parser off the event loop; whatever it chokes on is a malformed message, refused."""
    try:
        return await asyncio.to_thread(parse, *args, **kwargs)
    except (RecursionError, ValueError, LookupError, TypeError, AttributeError, UnicodeError,
            MemoryError) as exc:
        return Refusal("bad_structure", f"the message cannot be parsed ({type(exc).__name__})")


async def _check_signed(ctx: ChainContext, structure: PgpMimeSigned | InlineSigned | DetachedFile,
                        result: Evaluation) -> Refusal | None:
    if isinstance(structure, DetachedFile):
        with ctx.verifying():
            check = await ctx.pgp.verify_detached_signature(structure.data, structure.signature)
        signed_bytes = structure.data
        content: SignedContent | Refusal | None = SignedContent(text="", attachments=(ReceivedAttachment(
            structure.filename, _guess_type(structure.filename), structure.data),))
    elif isinstance(structure, PgpMimeSigned):
        with ctx.verifying():
            check = await ctx.pgp.verify_detached_signature(structure.signed_bytes, structure.signature)
        signed_bytes = structure.signed_bytes
        if check.reason == "unknown_key":
            check = await _check_with_offered_key(ctx, structure, check, result)
            if isinstance(check, Refusal):
                return check
        content = await parse_safely(read_signed_content, signed_bytes) if check.ok else None
    else:
        with ctx.verifying():
            check, plaintext = await ctx.pgp.verify_clearsigned_text(structure.block)
        signed_bytes = plaintext
        content = read_inline_content(plaintext)
    result.check = check
    if not check.ok:
        return Refusal(check.reason or "bad_signature", check.detail)
    if isinstance(content, Refusal):
        return content
    result.content = content
    result.replay_key = _replay_key(check, signed_bytes)
    return None


async def _check_with_offered_key(ctx: ChainContext, structure: PgpMimeSigned,
                                  unknown: SignatureCheck, result: Evaluation) -> SignatureCheck | Refusal:
    """An unknown signer may have attached their key (an enrolment, or an agency-certified key):
    verify with that key alone, in a keyring of its own; only a key that made this very
    signature is kept, as a candidate that counts for nothing until rule 3 says so (and that
    leaves the keyring again if the message is refused, see `evaluate`)."""
    unverified = await parse_safely(read_signed_content, structure.signed_bytes)
    if isinstance(unverified, Refusal):
        return unknown
    offered = attached_keys(unverified)
    if not offered:
        return unknown
    try:
        offered_check = await ctx.pgp.verify_with_offered_keys(structure.signed_bytes, structure.signature,
                                                               b"\n".join(a.data for a in offered))
    except KeyImportError as exc:
        return Refusal("attached_key_mismatch", str(exc))
    if offered_check.check.reason == "unknown_key":
        return Refusal("attached_key_mismatch", f"{unknown.detail}, not by the attached key "
                       f"{', '.join(offered_check.offered) or '(unreadable)'}: sign with the key you attach")
    if offered_check.check.ok and offered_check.signer_key is not None:
        await ctx.pgp.import_public_key(offered_check.signer_key)
        result.imported_signer = offered_check.check.signer_fingerprint
    return offered_check.check


async def _check_encrypted(ctx: ChainContext, structure: PgpMimeEncrypted,
                           result: Evaluation) -> Refusal | None:
    """PGP/MIME encrypted to the gateway: the inside must itself be signed (RFC 3156 6.1 or 6.2)."""
    with ctx.verifying():
        check, plaintext = await ctx.pgp.decrypt_from_officer(structure.ciphertext)
    if plaintext is None:
        return Refusal("bad_structure", "the encrypted part cannot be decrypted with our key, "
                       "or decrypts to more than the size limit")
    inner = canonical_line_endings(plaintext)
    if check is not None:  # signed and encrypted in one OpenPGP message
        result.check = check
        if not check.ok:
            return Refusal(check.reason or "bad_signature", check.detail)
        problem = await parse_safely(mime_tree_problem, inner, ctx.settings.mime)
        if problem is not None:
            return problem
        content = await parse_safely(read_signed_content, inner)
        if isinstance(content, Refusal):
            return content
        result.content = content
        result.replay_key = _replay_key(check, inner)
        return None
    nested = await parse_safely(split_signed, inner, allow_inline=False, limits=ctx.settings.mime)
    if isinstance(nested, Refusal) and nested.reason in LIMIT_REASONS:
        return nested
    if isinstance(nested, PgpMimeSigned):
        return await _check_signed(ctx, nested, result)
    return Refusal("encrypted_unsigned",
                   "the message is encrypted but not signed: sign it, then encrypt it")


async def check_identity(ctx: ChainContext, raw: bytes, received_at: datetime, message_id: int,
                         result: Evaluation) -> Refusal | None:
    """Rule 3: the key belongs to an active officer whose address is the single From."""
    assert result.check is not None and result.content is not None
    outer = result.outer_from  # judged by `evaluate`, once
    assert outer is not None
    if isinstance(outer, Refusal):
        return outer
    from_address = outer
    protected = result.content.protected_headers.get("From")
    if protected is not None:
        inner = single_from_address(protected)
        if isinstance(inner, Refusal):
            return inner
        if inner != outer:
            return Refusal("from_mismatch", "the From inside the signed part differs from the "
                           "message's From header")
        from_address = inner
    protected_headers = result.content.protected_headers
    addressed = protected_headers.get("To", []) + protected_headers.get("Cc", [])
    if protected_headers and not (
            {a.lower() for _, a in getaddresses(addressed)} & ctx.settings.recipients):
        return Refusal("not_addressed_to_us", "the signed message is addressed to someone else "
                       "(its protected To header does not name this gateway)")
    result.from_address = from_address
    fingerprint = result.check.signer_fingerprint
    if fingerprint is None or result.replay_key is None:  # not an assert: checked under -O too
        raise RuntimeError("a good signature without a signer or a replay key")
    officer, result.replayed = await ctx.db.read_sync(partial(
        _identity_lookup, fingerprint=fingerprint, replay_key=result.replay_key, message_id=message_id))
    if officer is None:
        return await check_new_signer(ctx, result, fingerprint, from_address)
    if officer.status != "active":
        return Refusal("officer_suspended", "the officer is suspended"
                       + (f": {officer.status_reason}" if officer.status_reason else ""))
    if officer.agency.status != "active":
        return Refusal("agency_suspended", f"the officer's agency {officer.agency.name} is suspended")
    status = await ctx.pgp.key_status(officer.key_fingerprint)
    if status is None:
        return Refusal("unknown_key", "the officer's key is missing from the keyring")
    if status.revoked:
        return Refusal("revoked_key", "the signing key has been revoked")
    if status.expired:
        return Refusal("expired_key", "the signing key has expired")
    if from_address != officer.email.lower() or from_address not in status.emails:
        return Refusal("from_mismatch", f"the message is From {from_address}, but the signing key "
                       "belongs to a different officer or has no such user ID")
    result.officer_id = officer.id
    result.officer = officer
    return None


async def check_new_signer(ctx: ChainContext, result: Evaluation, fingerprint: str,
                           from_address: str) -> Refusal | None:
    """Rule 3 for a key no officer holds: an enrolment for reviewers to decide, or a key certified
    by a registered agency's key; anything else is refused. The From must be a user ID of the key."""
    assert result.content is not None
    status = await ctx.pgp.key_status(fingerprint)
    if status is None:
        return Refusal("unknown_key", f"signed by a key we do not know ({fingerprint})")
    result.signer_key = status
    if purpose_of(result.content) == "enrolment":
        refusal = await _enrolment_identity(ctx, result, fingerprint, from_address, status.emails)
        if refusal is None:
            result.enrolment = True
        return refusal
    certified = await agency_certification(ctx, fingerprint, from_address)
    if isinstance(certified, Refusal):
        return certified
    if await _is_enrolled(ctx, from_address):
        return Refusal("key_not_registered", f"{from_address} is enrolled with another key; to change "
                       "keys, send a key rotation signed with your current key")
    result.certified_by, result.certification = certified
    return None


async def _enrolment_identity(ctx: ChainContext, result: Evaluation, fingerprint: str,
                              from_address: str, key_emails: tuple[str, ...]) -> Refusal | None:
    """An enrolment: the attached key is the signing key, and the From is one of its user IDs."""
    assert result.content is not None
    offered = attached_keys(result.content)
    if offered:
        try:
            fingerprints = await ctx.pgp.keys_in(b"\n".join(a.data for a in offered))
        except KeyImportError as exc:
            return Refusal("attached_key_mismatch", str(exc))
        if fingerprints != [fingerprint]:
            return Refusal("attached_key_mismatch", f"the message is signed by key {fingerprint}, but "
                           f"the attached key is {', '.join(fingerprints) or '(unreadable)'}: attach "
                           "the key that signs the message")
    if from_address not in key_emails:
        return Refusal("from_mismatch", f"the message is From {from_address}, but the attached key "
                       "has no user ID with that address")
    if await _is_enrolled(ctx, from_address):
        return Refusal("key_not_registered", f"{from_address} is already enrolled with another key; "
                       "to change keys, send a key rotation signed with your current key")
    return None


async def _is_enrolled(ctx: ChainContext, address: str) -> bool:
    async with ctx.db.reading() as session:
        return await session.scalar(select(Officer.id).where(Officer.email == address)) is not None


async def agency_certification(ctx: ChainContext, fingerprint: str, from_address: str,
                               ) -> tuple[int, dict[str, Any]] | Refusal:
    """A valid certification of the user ID `from_address` by a registered, active agency's
    primary key, itself neither revoked nor expired; a trust signature's domain must hold the
    address. Fails closed: anything not understood is a refusal that says what was found."""
    certifications = [c for c in await ctx.pgp.certifications_of(fingerprint)
                      if c.uid_email == from_address]
    if not certifications:
        return Refusal("key_not_registered",
                       f"the signing key {fingerprint} is not registered to an enrolled officer")
    async with ctx.db.reading() as session:
        agencies = {a.key_fingerprint: a for a in await session.scalars(
            select(Agency).where(Agency.key_fingerprint.in_([c.issuer_fingerprint
                                                             for c in certifications])))}
    now, reasons = utcnow(), []
    for cert in certifications:
        agency = agencies.get(cert.issuer_fingerprint)
        if agency is None:
            reasons.append(f"certified by {cert.issuer_fingerprint}, which is no registered agency's key")
            continue
        why_not = await _agency_cannot_certify(ctx, agency, cert.trust_depth, cert.trust_regexp,
                                               from_address)
        if why_not is None and not cert.valid_at(now):
            why_not = f"{agency.name}'s certification is revoked or expired"
        if why_not is not None:
            reasons.append(why_not)
            continue
        return agency.id, {"agency": agency.name, "agency_key": agency.key_fingerprint,
                           "certified_at": cert.created_at.isoformat() if cert.created_at else None,
                           "trust_signature": cert.trust_depth > 0, "scope": cert.trust_regexp}
    return Refusal("key_not_registered", f"the signing key {fingerprint} is not registered to an "
                   f"enrolled officer ({'; '.join(reasons)})")


async def _agency_cannot_certify(ctx: ChainContext, agency: Agency, depth: int, regexp: str | None,
                                 address: str) -> str | None:
    if agency.status != "active":
        return f"certified by {agency.name}, which is suspended"
    assert agency.key_fingerprint is not None
    key = await ctx.pgp.key_status(agency.key_fingerprint)
    if key is None or key.revoked or key.expired:
        state = "missing" if key is None else ("revoked" if key.revoked else "expired")
        return f"certified by {agency.name}'s key, which is {state}"
    if depth > 0 and regexp:
        domain = trust_signature_domain(regexp)
        if domain is None:
            return f"{agency.name}'s trust signature has a scope we do not understand ({regexp[:80]})"
        mail_domain = address.rpartition("@")[2]
        if mail_domain != domain and not mail_domain.endswith("." + domain):
            return f"{agency.name}'s trust signature is limited to {domain}, and {address} is outside it"
    return None


async def check_freshness(ctx: ChainContext, raw: bytes, received_at: datetime, message_id: int,
                          result: Evaluation) -> Refusal | None:
    """Rule 4a: the signature was made recently, and not in the future."""
    assert result.check is not None
    signed_at = result.check.signed_at
    if signed_at is None:
        return Refusal("bad_signature", "the signature carries no creation time")
    policy_ = ctx.settings.policy
    if signed_at > received_at + timedelta(minutes=policy_.max_clock_skew_minutes):
        return Refusal("signature_in_future", f"the signature is dated {signed_at:%Y-%m-%d %H:%M} "
                       "UTC, in the future: check your computer's clock")
    max_age = policy_.max_signature_age_hours
    if max_age and received_at - signed_at > timedelta(hours=max_age):
        return Refusal("signature_too_old", f"the signature was made {signed_at:%Y-%m-%d %H:%M} "
                       f"UTC, more than {max_age:g} hours before it arrived: sign and send it again")
    return None


# rule 3's officer and rule 4b's look-up in one statement, built once (executed with parameters)
EARLIER = (select(Message.id).where(Message.replay_key == bindparam("replay_key"),
                                    Message.id != bindparam("message_id"))
           .limit(1).scalar_subquery())
IDENTITY = select(Officer, EARLIER).where(Officer.key_fingerprint == bindparam("fingerprint"))


def _identity_lookup(conn: Connection, fingerprint: str, replay_key: str,
                     message_id: int) -> tuple[Officer | None, bool | None]:
    """(the officer holding the key, detached with their agency; whether another message carries
    the replay key), from one snapshot. No officer: no row, and the replay look-up is left to
    rule 4b (None)."""
    with Session(bind=conn) as session:
        row = session.execute(IDENTITY, {"fingerprint": fingerprint, "replay_key": replay_key,
                                         "message_id": message_id}).first()
    if row is None:
        return None, None
    return row[0], row[1] is not None


# rule 3 once more, inside the write transaction that records an officer's message: gpg and PDF
# text take time, and a suspension committed meanwhile must still stop the message. Not FOR
# SHARE: a transaction holding the audit lock may be about to update the officer's row (the
# impersonation warning), and this one takes the audit lock after the check, so the two would
# deadlock; a suspension committed while this transaction runs is simply concurrent with it
STILL_ACTIVE = (select(Officer.id).join(Agency, Agency.id == Officer.agency_id)
                .where(Officer.id == bindparam("officer_id"), Officer.status == "active",
                       Agency.status == "active"))


class SuspendedMeanwhile(Exception):
    """The officer or their agency was suspended after rule 3 passed them: nothing of this run
    stays, and the job runs again, where rule 3 refuses the message."""


def still_active(conn: Connection, officer_id: int) -> None:
    """Raise SuspendedMeanwhile unless the officer and their agency are active now."""
    if conn.execute(STILL_ACTIVE, {"officer_id": officer_id}).first() is None:
        raise SuspendedMeanwhile(f"officer {officer_id} or their agency was suspended while the "
                                 "message was being checked: it is checked again")


async def check_replay(ctx: ChainContext, raw: bytes, received_at: datetime, message_id: int,
                       result: Evaluation) -> Refusal | None:
    """Rule 4b: the same signed content is accepted once."""
    if result.replayed is None:
        async with ctx.db.reading() as session:
            result.replayed = await _seen_before(session, result.replay_key, message_id)
    if result.replayed:
        return Refusal("replay", "this signed message was already received; a copy is not "
                       "processed twice")
    return None


async def _seen_before(session: AsyncSession, replay_key: str | None, message_id: int) -> bool:
    earlier = await session.scalar(select(Message.id).where(Message.replay_key == replay_key,
                                                            Message.id != message_id).limit(1))
    return earlier is not None


def _guess_type(filename: str) -> str:
    lowered = filename.lower()
    if lowered.endswith(".pdf"):
        return "application/pdf"
    if lowered.endswith((".toml", ".json", ".txt")):
        return "text/plain"
    return "application/octet-stream"


def _replay_key(check: SignatureCheck, signed_bytes: bytes) -> str:
    """Signer, signature time and signed bytes: unaffected by re-armoring or unhashed packets."""
    signed_at = check.signed_at.isoformat() if check.signed_at else ""
    material = f"{check.signer_fingerprint}|{signed_at}|".encode() + canonical_text_sha256(signed_bytes)
    return hashlib.sha256(material).hexdigest()


def outer_from_address(raw: bytes, limits: MimeLimits = DEFAULT_LIMITS) -> str | Refusal:
    """The message's own From header, judged strictly (it is what mail clients show)."""
    head = outer_head(raw)
    problem = header_problem(head, limits)
    if problem:
        return Refusal("bad_from", problem.detail)
    values = parse_headers(head).get_all("From") or []
    return single_from_address([str(v) for v in values])


def outer_head(raw: bytes) -> bytes:
    """The message's header block, CRLF, without copying the body (which may be tens of MB).

    Any empty line, in any mix of CR, LF and CRLF, contains LF LF, CR CR or LF CR; the header block
    ends within 4 bytes after the first of them, so canonicalising up to there finds the same head
    as canonicalising the whole message."""
    ends = [i for i in (raw.find(b"\n\n"), raw.find(b"\r\r"), raw.find(b"\n\r")) if i >= 0]
    cut = min(ends) + 4 if ends else len(raw)
    head, _ = split_head_body(canonical_line_endings(raw[:cut]))
    return head


def single_from_address(values: list[str]) -> str | Refusal:
    """Exactly one From with exactly one mailbox, no parse defects, no address in the name.

    An officer's From is the same on every request, and policy.default's address parser is the
    costliest part of reading it: the verdict on a short value is kept (`_from_verdict` is pure)."""
    if len(values) == 1 and type(values[0]) is str and len(values[0]) <= CACHED_FROM_CHARS:
        return _cached_from_verdict(values[0])
    return _from_verdict(values)


CACHED_FROM_CHARS = 512  # longer From values (no honest one) are judged each time, not kept


@lru_cache(maxsize=256)
def _cached_from_verdict(value: str) -> str | Refusal:
    return _from_verdict([value])


def _from_verdict(values: list[str]) -> str | Refusal:
    if len(values) != 1:
        return Refusal("bad_from", "the message must have exactly one From header, "
                       f"it has {len(values)}")
    try:
        header = policy.default.header_factory("from", values[0])
    except Exception:
        return Refusal("bad_from", "the From header cannot be parsed")
    if not isinstance(header, AddressHeader):
        return Refusal("bad_from", "the From header cannot be parsed")
    if header.defects:
        return Refusal("bad_from", "the From header is malformed: "
                       + "; ".join(str(d) for d in header.defects)[:200])
    if len(header.groups) != 1 or header.groups[0].display_name is not None:
        return Refusal("bad_from", "the From header must name exactly one mailbox")
    addresses = header.addresses
    if len(addresses) != 1:
        return Refusal("bad_from", f"the From header names {len(addresses)} mailboxes, not one")
    address = addresses[0]
    if not address.username or not address.domain:
        return Refusal("bad_from", "the From header has no complete address")
    if "@" in address.display_name or "<" in address.display_name:
        return Refusal("bad_from", "the From header's display name contains an address")
    if not DOT_ATOM.fullmatch(address.username):
        # a quoted local part such as ".alice" would come back unquoted, not an address at all
        return Refusal("bad_from", "the From address's local part must be a plain dot-atom")
    return address.addr_spec.lower()
