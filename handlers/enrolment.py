"""Registering agencies and officers (operator acts from the CLI; enrolment by signed mail is in
handlers/onboarding.py, the reviewers' decision in handlers/enrolment_review.py).

An officer is bound to exactly one key, and that key must carry a user ID with the officer's
address, be usable for signing and encryption, and be neither expired nor revoked.
"""

from __future__ import annotations

from sqlalchemy import select

from gateway import audit
from gateway.app import Core
from gateway.models import Agency, Key, Officer, Reviewer
from handlers.onboarding import bind_officer, record_key
from handlers.review import ROLES


class EnrolmentError(Exception):
    """The operator asked for something that cannot be done; the message says why."""


async def add_agency(core: Core, name: str, domain: str, country: str | None = None,
                     key_data: bytes | None = None, actor: str = "operator") -> Agency:
    domain = domain.strip().lower()
    if not domain or "." not in domain or "@" in domain:
        raise EnrolmentError(f"--domain must be a mail domain such as police.example, got {domain!r}")
    if country is not None and not (len(country) == 2 and country.isalpha()):
        raise EnrolmentError(f"--country must be a two-letter ISO 3166 code, got {country!r}")
    fingerprint = await _usable_agency_key(core, key_data) if key_data is not None else None
    async with core.db.transaction() as session:
        if await session.scalar(select(Agency).where(Agency.name == name)):
            raise EnrolmentError(f"an agency named {name!r} already exists")
        agency = Agency(name=name, domain=domain, country=country.upper() if country else None,
                        key_fingerprint=fingerprint)
        session.add(agency)
        await session.flush()
        if fingerprint:
            session.add(Key(fingerprint=fingerprint, owner_type="agency", owner_id=agency.id))
        await audit.record(session, actor, "agency.added", name, domain=domain,
                           country=agency.country, key=fingerprint)
        return agency


async def set_agency_key(core: Core, name: str, key_data: bytes,
                         actor: str = "operator") -> tuple[Agency, str | None]:
    """Give an agency its certifying key, or replace it (returns the previous fingerprint).
    From then on only the new key's certifications enrol officers; officers already enrolled
    keep their own keys, so replacing the agency key does not touch them."""
    fingerprint = await _usable_agency_key(core, key_data)
    async with core.db.transaction() as session:
        agency = await session.scalar(select(Agency).where(Agency.name == name))
        if agency is None:
            raise EnrolmentError(f"no agency named {name!r} (see `lers agency add`)")
        previous = agency.key_fingerprint
        if previous == fingerprint:
            raise EnrolmentError(f"{fingerprint} is already {name}'s agency key")
        owner = await session.get(Key, fingerprint)
        if owner is not None and not (owner.owner_type == "agency" and owner.owner_id == agency.id):
            raise EnrolmentError(f"the key {fingerprint} already belongs to another "
                                 f"{owner.owner_type}")
        agency.key_fingerprint = fingerprint
        if owner is None:
            session.add(Key(fingerprint=fingerprint, owner_type="agency", owner_id=agency.id))
        await audit.record(session, actor, "agency.key_set", name, key=fingerprint, previous=previous)
        return agency, previous


async def _usable_agency_key(core: Core, key_data: bytes) -> str:
    """Import an agency key file holding exactly one key that is neither revoked nor expired."""
    fingerprints = await core.pgp.import_public_key(key_data)
    if len(fingerprints) != 1:
        raise EnrolmentError("the agency key file must hold exactly one key")
    status = await core.pgp.key_status(fingerprints[0])
    if status is None or status.revoked or status.expired:
        raise EnrolmentError(f"the agency key {fingerprints[0]} is "
                             f"{'missing' if status is None else 'revoked or expired'}")
    return fingerprints[0]


async def add_officer(core: Core, email: str, agency_name: str, key_data: bytes,
                      name: str | None = None, actor: str = "operator",
                      telegram_id: int | None = None) -> Officer:
    email = email.strip().lower()
    if email.count("@") != 1 or " " in email:
        raise EnrolmentError(f"{email!r} is not an email address")
    fingerprints = await core.pgp.import_public_key(key_data)
    if len(fingerprints) != 1:
        raise EnrolmentError(f"the key file must hold exactly one key, it holds {len(fingerprints)}")
    fingerprint = fingerprints[0]
    status = await core.pgp.key_status(fingerprint)
    if status is None:
        raise EnrolmentError("the key could not be read back from the keyring")
    if email not in status.emails:
        raise EnrolmentError(f"the key {fingerprint} has no user ID for {email} "
                             f"(it has: {', '.join(status.user_ids) or 'none'})")
    if status.revoked:
        raise EnrolmentError(f"the key {fingerprint} is revoked")
    if status.expired:
        raise EnrolmentError(f"the key {fingerprint} has expired")
    if not status.can_encrypt:
        raise EnrolmentError(f"the key {fingerprint} cannot encrypt, so replies could not be sent")
    async with core.db.transaction() as session:
        agency = await session.scalar(select(Agency).where(Agency.name == agency_name))
        if agency is None:
            raise EnrolmentError(f"no agency named {agency_name!r}; add it first with "
                                 "`lers agency add`")
        if await session.scalar(select(Officer).where(Officer.email == email)):
            raise EnrolmentError(f"an officer with address {email} is already enrolled")
        if await session.scalar(select(Officer).where(Officer.key_fingerprint == fingerprint)):
            raise EnrolmentError(f"the key {fingerprint} is already registered to another officer")
        if telegram_id is not None and await session.scalar(
                select(Officer).where(Officer.telegram_id == telegram_id)):
            raise EnrolmentError(f"Telegram user {telegram_id} is already an officer's chat account")
        officer = bind_officer(session, email=email, agency=agency, key=status, name=name, via="operator",
                               telegram_id=telegram_id)
        await record_key(session, officer, status)
        await audit.record(session, actor, "officer.enrolled", email, agency=agency_name,
                           key=fingerprint, telegram_id=telegram_id)
        return officer


async def add_reviewer(core: Core, telegram_id: int, name: str, role: str,
                       actor: str = "operator") -> Reviewer:
    if role not in ROLES:
        raise EnrolmentError(f"--role must be one of {', '.join(ROLES)}, got {role!r}")
    if telegram_id <= 0:
        raise EnrolmentError("a Telegram user id is a positive number (ask @userinfobot for yours)")
    async with core.db.transaction() as session:
        reviewer = await session.scalar(select(Reviewer).where(Reviewer.telegram_id == telegram_id))
        if reviewer is not None and reviewer.active:
            raise EnrolmentError(f"Telegram user {telegram_id} is already a reviewer ({reviewer.name})")
        if reviewer is None:
            reviewer = Reviewer(telegram_id=telegram_id, name=name, role=role)
            session.add(reviewer)
        else:  # re-activating someone removed earlier keeps their history
            reviewer.name, reviewer.role, reviewer.active = name, role, True
        await audit.record(session, actor, "reviewer.added", str(telegram_id), name=name, role=role)
        return reviewer


async def list_reviewers(core: Core) -> list[Reviewer]:
    async with core.db.transaction() as session:
        return list(await session.scalars(select(Reviewer).order_by(Reviewer.id)))


async def remove_reviewer(core: Core, telegram_id: int, actor: str = "operator") -> Reviewer:
    async with core.db.transaction() as session:
        reviewer = await session.scalar(select(Reviewer).where(Reviewer.telegram_id == telegram_id,
                                                                Reviewer.active.is_(True)))
        if reviewer is None:
            raise EnrolmentError(f"no active reviewer with Telegram id {telegram_id}")
        reviewer.active = False
        await audit.record(session, actor, "reviewer.removed", str(telegram_id), name=reviewer.name)
        return reviewer
