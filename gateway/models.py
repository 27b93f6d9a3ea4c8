"""The tables. One module so that the whole data model reads in one sitting (DESIGN.md)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from gateway.clock import utcnow
from gateway.vault import PreSealedBytes, SealedBytes, SealedJSON, SealedText


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive values)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)

    @staticmethod
    def sqlite_bind(value: datetime | None) -> str | None:
        """`process_bind_param`, then the text SQLite's DATETIME stores, in one step (for
        gateway/driverinsert.py: SQLAlchemy's two steps cost more than the writing)."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        if value.tzinfo is not UTC:
            value = value.astimezone(UTC)
        return value.replace(tzinfo=None).isoformat(" ", "microseconds")


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON,
    }


class Agency(Base):
    __tablename__ = "agencies"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    domain: Mapped[str] = mapped_column(String(255))
    country: Mapped[str | None] = mapped_column(String(2))
    key_fingerprint: Mapped[str | None] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(20), default="active")
    status_reason: Mapped[str | None] = mapped_column(Text)  # why it was suspended
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Officer(Base):
    __tablename__ = "officers"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str | None] = mapped_column(String(200))
    agency_id: Mapped[int] = mapped_column(ForeignKey("agencies.id"))
    status: Mapped[str] = mapped_column(String(20), default="active")
    key_fingerprint: Mapped[str] = mapped_column(String(64), index=True)  # who signed: every message
    telegram_id: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    last_impersonation_warning_at: Mapped[datetime | None]
    # operator (lers officer add) | enrolment (reviewers decided in chat) | agency (certified key)
    enrolled_via: Mapped[str] = mapped_column(String(20), default="operator")
    status_reason: Mapped[str | None] = mapped_column(Text)  # why it was suspended
    key_expiry_warned_at: Mapped[datetime | None]  # for the current key; cleared on rotation
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    agency: Mapped[Agency] = relationship(lazy="joined")

    @property
    def active(self) -> bool:
        """Both the officer and their agency are active: only then may they ask, or be answered."""
        return self.status == "active" and self.agency.status == "active"


class Enrolment(Base):
    """An officer's signed request to be enrolled: pending until reviewers decide in chat."""

    __tablename__ = "enrolments"
    id: Mapped[int] = mapped_column(primary_key=True)
    status: Mapped[str] = mapped_column(String(20), default="pending")  # pending | enrolled | refused
    email: Mapped[str] = mapped_column(String(320), index=True)
    key_fingerprint: Mapped[str] = mapped_column(String(64))
    form: Mapped[dict[str, Any]] = mapped_column(SealedJSON("enrolments.form"), default=dict)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"), index=True)
    officer_id: Mapped[int | None] = mapped_column(ForeignKey("officers.id"))
    decision_text: Mapped[str | None] = mapped_column(Text)
    decided_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    documents: Mapped[list[EnrolmentDocument]] = relationship(
        lazy="selectin", order_by="EnrolmentDocument.id", cascade="all, delete-orphan")


class EnrolmentDocument(Base):
    """An official document (warrant card, letter of authority) sent with an enrolment."""

    __tablename__ = "enrolment_documents"
    id: Mapped[int] = mapped_column(primary_key=True)
    enrolment_id: Mapped[int] = mapped_column(ForeignKey("enrolments.id"), index=True)
    original_filename: Mapped[str | None] = mapped_column(SealedText("enrolment_documents.original_filename"))
    stored_name: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(SealedBytes("enrolment_documents.data"))
    extracted_text: Mapped[str | None] = mapped_column(SealedText("enrolment_documents.extracted_text"))
    extraction_error: Mapped[str | None] = mapped_column(Text)


class EnrolmentAct(Base):
    """One reviewer act on an enrolment: an approval (of two), the enrolment, or a refusal."""

    __tablename__ = "enrolment_acts"
    id: Mapped[int] = mapped_column(primary_key=True)
    enrolment_id: Mapped[int] = mapped_column(ForeignKey("enrolments.id"), index=True)
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("reviewers.id"))
    action: Mapped[str] = mapped_column(String(20))  # approve | enrol | refuse
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    reviewer: Mapped[Reviewer] = relationship(lazy="joined")


class Key(Base):
    """A public key we hold, and what we know of it (gpg's keyring is the source of truth)."""

    __tablename__ = "keys"
    fingerprint: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner_type: Mapped[str] = mapped_column(String(20))  # officer | agency | gateway
    owner_id: Mapped[int | None]
    user_ids: Mapped[list[Any]] = mapped_column(default=list)
    expires_at: Mapped[datetime | None]
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Message(Base):
    """Every message in or out, raw bytes kept: the evidence a court may ask for."""

    __tablename__ = "messages"
    id: Mapped[int] = mapped_column(primary_key=True)
    direction: Mapped[str] = mapped_column(String(10))  # inbound | outbound
    transport: Mapped[str] = mapped_column(String(20))  # smtp | imap | chat | cli
    sha256: Mapped[str] = mapped_column(String(64))  # looked up with direction: uq_message_sha256
    raw: Mapped[bytes] = mapped_column(SealedBytes("messages.raw"))  # b"" when held in chunks
    size: Mapped[int] = mapped_column(Integer)
    # a large message's raw bytes are in message_chunks (gateway/chunks.py), this many
    chunks: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    header_message_id: Mapped[str | None] = mapped_column(String(998))
    peer: Mapped[str | None] = mapped_column(String(200))
    envelope_from: Mapped[str | None] = mapped_column(String(320))
    envelope_to: Mapped[list[Any]] = mapped_column(SealedJSON("messages.envelope_to"), default=list)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    state: Mapped[str] = mapped_column(String(20), default="received")
    reason: Mapped[str | None] = mapped_column(String(64))
    reason_detail: Mapped[str | None] = mapped_column(SealedText("messages.reason_detail"))
    # the From a refused message claimed (unverified): reviewers see spoofs of an officer's address
    claimed_from: Mapped[str | None] = mapped_column(String(320))
    signer_fingerprint: Mapped[str | None] = mapped_column(String(64))
    # signer + signature time + digest of the signed bytes: the same signed content seen twice.
    replay_key: Mapped[str | None] = mapped_column(String(64), unique=True)
    signed_at: Mapped[datetime | None]
    verification: Mapped[dict[str, Any] | None]
    officer_id: Mapped[int | None] = mapped_column(ForeignKey("officers.id"))
    request_id: Mapped[int | None] = mapped_column(ForeignKey("requests.id"), index=True)
    # refused mail that claimed an officer's address lately (handlers/reputation.py): without it,
    # SQLite chose the (direction, sha256) index and read every inbound message, forged floods
    # too; messages by state and age: the quarantine purge and the accepted count of the metrics
    __table_args__ = (UniqueConstraint("direction", "sha256", name="uq_message_sha256"),
                      Index("ix_messages_claimed_from_state", "claimed_from", "state", "received_at"),
                      Index("ix_messages_state_received_at", "state", "received_at"))


class MessageChunk(Base):
    """One piece of a large message's raw bytes, sealed with its message and place as associated
    data (gateway/chunks.py): pieces cannot be swapped, moved or dropped unnoticed."""

    __tablename__ = "message_chunks"
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    data: Mapped[bytes] = mapped_column(PreSealedBytes())


class AttachmentChunk(Base):
    """One piece of a large attachment, sealed like a MessageChunk."""

    __tablename__ = "attachment_chunks"
    attachment_id: Mapped[int] = mapped_column(ForeignKey("attachments.id"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    data: Mapped[bytes] = mapped_column(PreSealedBytes())


class RefCounter(Base):
    """The next reference number per year: gap-free and never reused."""

    __tablename__ = "ref_counters"
    year: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    last: Mapped[int] = mapped_column(Integer, default=0)


class Request(Base):
    __tablename__ = "requests"
    id: Mapped[int] = mapped_column(primary_key=True)
    ref: Mapped[str] = mapped_column(String(20), unique=True)
    type: Mapped[str | None] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(30))
    emergency: Mapped[bool] = mapped_column(Boolean, default=False)
    case_number: Mapped[str | None] = mapped_column(Text)
    legal_basis: Mapped[str | None] = mapped_column(Text)
    data_categories: Mapped[list[Any]] = mapped_column(default=list)
    date_from: Mapped[date | None] = mapped_column(Date)
    date_to: Mapped[date | None] = mapped_column(Date)
    nondisclosure_until: Mapped[date | None] = mapped_column(Date)
    nondisclosure_indefinite: Mapped[bool] = mapped_column(Boolean, default=False)
    emergency_justification: Mapped[str | None] = mapped_column(
        SealedText("requests.emergency_justification"))
    supervisor: Mapped[str | None] = mapped_column(Text)
    investigation_status: Mapped[str | None] = mapped_column(Text)
    missing_fields: Mapped[list[Any]] = mapped_column(default=list)
    body_text: Mapped[str | None] = mapped_column(SealedText("requests.body_text"))
    officer_id: Mapped[int] = mapped_column(ForeignKey("officers.id"))
    agency_id: Mapped[int] = mapped_column(ForeignKey("agencies.id"))
    thread_message_id: Mapped[str] = mapped_column(String(998))
    thread_references: Mapped[list[Any]] = mapped_column(default=list)
    deadline: Mapped[datetime | None]
    deadline_warned_at: Mapped[datetime | None]
    assigned_reviewer_id: Mapped[int | None] = mapped_column(ForeignKey("reviewers.id"))
    decided_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    officer: Mapped[Officer] = relationship(lazy="joined")
    assigned_reviewer: Mapped[Reviewer | None] = relationship(lazy="joined")
    subjects: Mapped[list[RequestSubject]] = relationship(
        lazy="selectin", order_by="RequestSubject.id", cascade="all, delete-orphan"
    )
    attachments: Mapped[list[Attachment]] = relationship(
        lazy="selectin", order_by="Attachment.id", cascade="all, delete-orphan"
    )
    # the reviewers' notice counts an officer's earlier requests by status and the agency's
    # (handlers/reputation.py), in the transaction that records each new request; the open-state
    # lists, the overdue checks and the metrics look up by status: none of them reads every request
    __table_args__ = (Index("ix_requests_officer_status", "officer_id", "status"),
                      Index("ix_requests_agency_id", "agency_id"),
                      Index("ix_requests_status_deadline", "status", "deadline"))


class RequestTally(Base):
    """How many requests each officer, and each agency, has in each status: the reviewers' notice
    of every new request reads these few rows in the transaction that records the request,
    where counting the requests themselves grew with a large agency's every request (issue 8).

    Kept by the database, not by our code: triggers on `requests` (migration 0011) count every
    insert, change of status, officer or agency, and delete, whichever statement makes it. A
    later migration that rebuilds `requests` on SQLite (batch mode copies the table) drops them
    with the old table: it must create them again (tests/test_notice_history.py fails without).
    Derived data: `lers db copy` leaves it to the target's triggers."""

    __tablename__ = "request_tallies"
    scope: Mapped[str] = mapped_column(String(10), primary_key=True)  # officer | agency
    owner_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)  # its id
    status: Mapped[str] = mapped_column(String(30), primary_key=True)
    total: Mapped[int]
    __table_args__: ClassVar[dict[str, Any]] = {"info": {"derived": True}}


class Reviewer(Base):
    """A member of the platform's legal team, known by Telegram user id."""

    __tablename__ = "reviewers"
    id: Mapped[int] = mapped_column(primary_key=True)
    telegram_id: Mapped[int] = mapped_column(BigInteger, unique=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))  # reviewer | approver | admin
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Review(Base):
    """One reviewer act on a request: approve, reject, partial, ask, note, assign."""

    __tablename__ = "reviews"
    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("requests.id"), index=True)
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("reviewers.id"))
    action: Mapped[str] = mapped_column(String(20))
    text: Mapped[str | None] = mapped_column(SealedText("reviews.text"))
    # for approvals: what may be disclosed (categories, subjects, dates); see handlers/scope.py
    scope: Mapped[dict[str, Any] | None] = mapped_column(SealedJSON("reviews.scope"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    reviewer: Mapped[Reviewer] = relationship(lazy="joined")


class RequestSubject(Base):
    __tablename__ = "request_subjects"
    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("requests.id"), index=True)
    type: Mapped[str] = mapped_column(String(30))
    value: Mapped[str] = mapped_column(SealedText("request_subjects.value"))


class Attachment(Base):
    __tablename__ = "attachments"
    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("requests.id"), index=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"), index=True)
    original_filename: Mapped[str | None] = mapped_column(SealedText("attachments.original_filename"))
    stored_name: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(SealedBytes("attachments.data"))  # b"" when held in chunks
    # a large file's bytes are in attachment_chunks (gateway/chunks.py), this many
    chunks: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    extracted_text: Mapped[str | None] = mapped_column(SealedText("attachments.extracted_text"))
    extraction_error: Mapped[str | None] = mapped_column(Text)


class Job(Base):
    """Work to do. A crash at any point leaves the job to be claimed again."""

    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id"), index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(SealedJSON("jobs.payload"), default=dict)
    state: Mapped[str] = mapped_column(String(20), default="queued")
    # 0 first; 1: inbound mail that does not look signed by a key we hold (gateway/triage.py)
    priority: Mapped[int] = mapped_column(SmallInteger, default=0, server_default="0")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    run_after: Mapped[datetime] = mapped_column(default=utcnow)
    lease_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    # the claim reads runnable jobs by state and kind in the order it takes them (priority, then
    # age: gateway/queue.py), the first few only; the metrics count them by state and kind
    __table_args__ = (Index("ix_jobs_state_kind_priority", "state", "kind", "priority", "id"),)


class Outbox(Base):
    """A reply waiting for the smarthost. It is signed and encrypted when sent, so a key revoked
    meanwhile stops it; after sending, the exact bytes sent are kept as an outbound message."""

    __tablename__ = "outbox"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    request_id: Mapped[int | None] = mapped_column(ForeignKey("requests.id"), index=True)
    in_reply_to_message: Mapped[int | None] = mapped_column(ForeignKey("messages.id"), index=True)
    # an officer's address; for a notice to a user, NOTICE_RECIPIENT (theirs is in the sealed content)
    recipient: Mapped[str] = mapped_column(Text)
    recipient_fingerprint: Mapped[str | None] = mapped_column(String(64))
    sender: Mapped[str] = mapped_column(String(320))
    header_message_id: Mapped[str] = mapped_column(String(998), unique=True)
    subject: Mapped[str] = mapped_column(Text)
    in_reply_to: Mapped[str | None] = mapped_column(String(998))
    references: Mapped[list[Any]] = mapped_column(default=list)
    content: Mapped[bytes] = mapped_column(SealedBytes("outbox.content"))  # the inner MIME entity
    # no longer written: what the smarthost got is kept as the outbound message (messages.raw)
    sent_raw: Mapped[bytes | None] = mapped_column(SealedBytes("outbox.sent_raw"))
    state: Mapped[str] = mapped_column(String(20), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]


class AuditEntry(Base):
    """Append-only and hash-chained: each entry's hash covers the previous entry's hash."""

    __tablename__ = "audit"
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(60))
    subject: Mapped[str | None] = mapped_column(String(200))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class ImapState(Base):
    """Where the poller of one IMAP account stands, for restarts and `lers imap status`."""

    __tablename__ = "imap_state"
    account: Mapped[str] = mapped_column(String(100), primary_key=True)
    uidvalidity: Mapped[int | None] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger, default=0)
    connected: Mapped[bool] = mapped_column(Boolean, default=False)
    backlog: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None]
    last_poll_at: Mapped[datetime | None]
    messages_ingested: Mapped[int] = mapped_column(Integer, default=0)


class Lease(Base):
    """Who runs a one-at-a-time duty (scheduler, chat poller, an IMAP account) until when."""

    __tablename__ = "leases"
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime]


class Production(Base):
    """The data disclosed for one approved request: what went out, with its hashes and manifest."""

    __tablename__ = "productions"
    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("requests.id"), unique=True)
    outcome: Mapped[str] = mapped_column(String(20))  # data | no_data
    scope: Mapped[dict[str, Any]] = mapped_column(SealedJSON("productions.scope"), default=dict)
    manifest: Mapped[dict[str, Any]] = mapped_column(SealedJSON("productions.manifest"), default=dict)
    manifest_signature: Mapped[str] = mapped_column(Text)
    zip_sha256: Mapped[str] = mapped_column(String(64))
    zip_bytes: Mapped[int] = mapped_column(Integer)
    parts: Mapped[int] = mapped_column(Integer)
    rows: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Hold(Base):
    """A preservation or an asset freeze: a decision that lasts until it expires or is released."""

    __tablename__ = "holds"
    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("requests.id"), unique=True)
    kind: Mapped[str] = mapped_column(String(20))  # preservation | freeze
    state: Mapped[str] = mapped_column(String(20), default="active")  # active | expired | released
    subjects: Mapped[list[Any]] = mapped_column(SealedJSON("holds.subjects"), default=list)
    starts_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    extensions: Mapped[int] = mapped_column(Integer, default=0)
    warned_at: Mapped[datetime | None]
    released_by_request_id: Mapped[int | None] = mapped_column(ForeignKey("requests.id"))
    ended_at: Mapped[datetime | None]
    # the scheduler's expiry warnings and ends, every tick
    __table_args__ = (Index("ix_holds_state_expires_at", "state", "expires_at"),)


class Notice(Base):
    """A notice to a user that a request concerned their account; held while an NDO runs."""

    __tablename__ = "notices"
    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("requests.id"), index=True)
    email: Mapped[str] = mapped_column(SealedText("notices.email"))
    subject_type: Mapped[str] = mapped_column(String(30))
    subject_value: Mapped[str] = mapped_column(SealedText("notices.subject_value"))
    language: Mapped[str] = mapped_column(String(10))
    decision: Mapped[str] = mapped_column(String(30))  # approve | partial | reject
    state: Mapped[str] = mapped_column(String(20), default="held", index=True)  # held|sent|cancelled
    # why it waits: ndo | ndo_indefinite | emergency | none; not_before is when it may go (None:
    # until a reviewer releases it)
    hold: Mapped[str] = mapped_column(String(20))
    not_before: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]
    outbox_id: Mapped[int | None] = mapped_column(ForeignKey("outbox.id"))
    __table_args__ = (UniqueConstraint("request_id", "email", name="uq_notice_request_email"),
                      # a request's held notices (withdrawal, /ndo): SQLite chose the state index alone
                      Index("ix_notices_request_state", "request_id", "state"))


class ScheduleMark(Base):
    """When a periodic scheduler task last ran (the daily overdue report), across restarts."""

    __tablename__ = "schedule_marks"
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    last_at: Mapped[datetime]


class VaultKey(Base):
    """A data key of the vault (gateway/vault.py), stored only wrapped by OpenPGP to the storage key."""

    __tablename__ = "vault_keys"
    id: Mapped[str] = mapped_column(String(16), primary_key=True)  # hex of the key id
    storage_fingerprint: Mapped[str] = mapped_column(String(64))
    wrapped: Mapped[str] = mapped_column(Text)  # armored OpenPGP message
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
