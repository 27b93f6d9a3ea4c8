"""Secrets at rest: a copy of the database file reveals no personal data.

The whole lifecycle runs on a real gateway (signed request with a PDF, a reviewer's note, two
approvals, the production from the demo data source, the user's notice, a refused mail); then
the SQLite file and its WAL are read as bytes, the way someone holding a copy would, and none of
the identifiers, documents, texts or produced data may appear in them. The gateway itself still
reads everything back through its vault.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from gateway.models import Request
from gateway.pgp import OpenPGPError
from gateway.records import show_request
from gateway.vault import MAGIC, Vault, VaultError, new_data_key
from handlers.enrolment import add_reviewer
from handlers.review import ReviewContext, add_note, decide
from tests.conftest import Harness
from tests.support.mail_factory import (
    Attachment,
    pdf_bytes,
    request_body,
    signed_request_mail,
    unsigned_mail,
)
from tests.support.officer_keys import TestKey

MARKERS = {
    "subject email": "suspect@example.com",
    "subject wallet": "bc1qxyexample",
    "produced name": "Sam Suspect",  # from the demo exchange's subscriber data
    "produced ip": "203.0.113.",  # login history
    "document text": "WARRANT-TEXT-9931",
    "officer's free text": "FREETEXT-7730",
    "reviewer's note": "NOTE-5521",
    "refused mail": "QUARANTINE-PLAIN-3318",
}


@pytest.mark.sqlite_only  # reads the SQLite file's bytes
async def test_a_copy_of_the_database_file_holds_no_personal_data(
        gateway: Harness, alice: TestKey) -> None:
    body = request_body(type="court_order",
                        subjects="email:suspect@example.com, wallet_address:bc1qxyexample",
                        free_text="FREETEXT-7730 the suspect moved funds on 2026-03-02.")
    mail = signed_request_mail(gateway.ring, alice, from_addr=alice.email, body=body, attachments=[
        Attachment("warrant.pdf", "application/pdf", pdf_bytes("WARRANT-TEXT-9931"))])
    assert (await gateway.send(mail))[0] == 250
    assert (await gateway.send(unsigned_mail(from_addr="x@example.org",
                                             body="QUARANTINE-PLAIN-3318")))[0] == 250
    await gateway.settle()
    ref = str((await gateway.requests())[0]["ref"])
    ctx = ReviewContext(gateway.settings, gateway.core.db)
    anna = await add_reviewer(gateway.core, 3001, "Anna", "approver")
    bert = await add_reviewer(gateway.core, 3002, "Bert", "approver")
    await add_note(ctx, anna, ref, "NOTE-5521 called the court")
    await decide(ctx, anna, ref, "approve", "")
    await decide(ctx, bert, ref, "approve", "")
    await gateway.settle()
    await gateway.gateway.scheduler.run_once()
    await gateway.settle()
    assert gateway.notices(to="suspect@example.com")  # the lifecycle really ran to the end
    production = [r for r in gateway.replies(to=alice.email) if "Data production" in r.subject]
    assert production

    # the gateway reads it all back
    shown: dict[str, Any] = await show_request(gateway.core.db, ref)
    assert {"type": "email", "value": "suspect@example.com"} in shown["subjects"]
    assert shown["documents"][0]["filename"] == "warrant.pdf"
    async with gateway.core.db.transaction() as session:
        request = await session.scalar(select(Request))
        assert request is not None and "FREETEXT-7730" in (request.body_text or "")

    data = gateway.settings.data_dir
    copy = b"".join(path.read_bytes() for path in (data / "lers.db", data / "lers.db-wal") if path.exists())
    assert len(copy) > 100_000
    found = {what: marker for what, marker in MARKERS.items() if marker.encode() in copy}
    assert found == {}, f"plaintext in the database file: {found}"
    assert copy.count(MAGIC) > 10  # the values are there, sealed


def test_a_sealed_value_cannot_be_altered_moved_or_opened_with_another_key() -> None:
    key_id, key = new_data_key()
    vault = Vault({key_id: key}, key_id)
    sealed = vault.seal(b"account 42", "messages.raw")
    assert vault.open(sealed, "messages.raw") == b"account 42"
    assert b"account 42" not in sealed
    with pytest.raises(VaultError, match="altered or belongs elsewhere"):
        vault.open(sealed, "attachments.data")  # moved to another column
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(VaultError, match="altered"):
        vault.open(tampered, "messages.raw")
    other_id, other_key = new_data_key()
    with pytest.raises(VaultError, match="which this gateway does not have"):
        Vault({other_id: other_key}, other_id).open(sealed, "messages.raw")
    with pytest.raises(VaultError, match="not sealed"):
        vault.open(b"plain bytes", "messages.raw")
    text = vault.seal_text("suspect@example.com", "notices.email")
    assert text is not None and "suspect" not in text
    assert vault.open_text(text, "notices.email") == "suspect@example.com"


async def test_a_storage_key_the_keyring_cannot_use_stops_the_start(make_gateway: Any) -> None:
    with pytest.raises(OpenPGPError, match="could not encrypt the data key to the storage key"):
        await make_gateway(storage__encryption_key="0123456789ABCDEF0123456789ABCDEF01234567")


async def test_restarting_keeps_the_data_readable(make_gateway: Any, alice: TestKey, tmp_path: Path) -> None:
    first: Harness = await make_gateway(gateway__data_dir=str(tmp_path / "data"))
    await first.enrol(alice)
    await first.send(signed_request_mail(first.ring, alice, from_addr=alice.email,
                                         body=request_body(type="preservation")))
    await first.settle()
    ref = str((await first.requests())[0]["ref"])
    await first.gateway.stop()
    await first.core.close()
    again: Harness = await make_gateway(gateway__data_dir=str(tmp_path / "data"),
                                        storage__url=first.settings.storage.url)
    shown = await show_request(again.core.db, ref)
    assert {"type": "account_id", "value": "42"} in shown["subjects"]
