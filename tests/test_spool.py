"""Large mail is spooled while it arrives and stored in sealed chunks (issue 8, item 5): what
the officer and an exported custody bundle get is still the message, byte for byte."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import pytest
from sqlalchemy import select, update

from gateway.chunks import raw_bytes
from gateway.custody import export_request
from gateway.mime import read_signed_content
from gateway.models import Message, MessageChunk
from gateway.spool import CHUNK, SPOOL_DIR, Spool
from gateway.vault import VaultError
from handlers.enrolment import add_reviewer
from handlers.review import ReviewContext, send_documents
from tests.conftest import GatewayFactory, Harness, short_tempdir
from tests.support.mail_factory import Attachment, pdf_bytes, request_body, signed_request_mail
from tests.support.officer_keys import TestKey

MARKER = b"SPOOL-PLAIN-6142 "


def _large_request(gateway: Harness, alice: TestKey, records: bytes = b"", free_text: str = "") -> bytes:
    files = [Attachment("subpoena.pdf", "application/pdf", pdf_bytes("SUBPOENA")),
             Attachment("records.bin", "application/octet-stream", records or os.urandom(3 * CHUNK))]
    return signed_request_mail(gateway.ring, alice, from_addr=alice.email,
                               body=request_body(type="subpoena", free_text=free_text), attachments=files)


async def _inbound(gateway: Harness) -> Message:
    async with gateway.core.db.transaction() as session:
        found = await session.scalar(select(Message).where(Message.direction == "inbound"))
        assert found is not None
        return found


async def test_a_large_request_is_accepted_and_exported_byte_for_byte(gateway: Harness,
                                                                      alice: TestKey) -> None:
    records = os.urandom(3 * CHUNK)
    mail = _large_request(gateway, alice, records)
    assert (await gateway.send(mail))[0] == 250
    code, text = await gateway.send(mail)  # a retransmission: the same message, not a new one
    assert code == 250 and text.endswith(f"message {(await _inbound(gateway)).id}")
    await gateway.settle()
    requests = await gateway.requests()
    assert len(requests) == 1
    assert any(requests[0]["ref"] in reply.subject for reply in gateway.replies(to=alice.email))
    stored = await _inbound(gateway)
    assert stored.chunks > 3 and stored.raw == b""
    ctx = ReviewContext(gateway.settings, gateway.core.db)
    anna = await add_reviewer(gateway.core, 4001, "Anna", "approver")
    sent = (await send_documents(ctx, anna, str(requests[0]["ref"]))).documents
    assert [(name.endswith("records.bin"), bytes(data)) for name, data, _ in sent][1] == (True, records)

    out = short_tempdir("spool-") / "bundle"
    await export_request(gateway.core, str(requests[0]["ref"]), out)
    exported = next((out / "messages").glob("*-inbound.eml")).read_bytes()
    assert exported.rstrip(b"\r\n") == mail.rstrip(b"\r\n")
    assert hashlib.sha256(exported).hexdigest() == stored.sha256


@pytest.mark.sqlite_only  # reads the SQLite file's bytes
async def test_a_large_message_and_its_files_are_sealed_in_the_database_file(gateway: Harness,
                                                                            alice: TestKey) -> None:
    plain = MARKER * (2 * CHUNK // len(MARKER))  # a file that is all marker, and the text too
    mail = _large_request(gateway, alice, records=plain, free_text=MARKER.decode())
    assert (await gateway.send(mail))[0] == 250
    await gateway.settle()
    assert len(await gateway.requests()) == 1
    data = gateway.settings.data_dir
    copy = b"".join(path.read_bytes() for path in (data / "lers.db", data / "lers.db-wal") if path.exists())
    assert len(copy) > 2 * CHUNK and MARKER.strip() not in copy
    assert base64.b64encode(plain[:3000])[:64] not in copy  # nor the file as the mail carried it
    assert not list((data / "spool").iterdir())


async def test_chunks_cannot_be_swapped_or_cut_off(make_gateway: GatewayFactory, alice: TestKey) -> None:
    gateway = await make_gateway()
    await gateway.stop_workers()  # judged or not, only the stored bytes matter here
    assert (await gateway.send(_large_request(gateway, alice)))[0] == 250
    stored = await _inbound(gateway)
    async with gateway.core.db.transaction() as session:
        first, second = (await session.scalars(select(MessageChunk.data).where(
            MessageChunk.message_id == stored.id, MessageChunk.seq < 2).order_by(MessageChunk.seq))).all()
        await session.execute(update(MessageChunk).where(MessageChunk.message_id == stored.id,
                                                         MessageChunk.seq == 0).values(data=second))
        with pytest.raises(VaultError):
            await raw_bytes(session, stored)
        await session.execute(update(MessageChunk).where(MessageChunk.message_id == stored.id,
                                                         MessageChunk.seq == 0).values(data=first))
        assert len(await raw_bytes(session, stored)) == stored.size
        stored.chunks -= 1  # the last chunk dropped: the one before it does not say it is the last
        with pytest.raises(VaultError):
            await raw_bytes(session, stored)
        stored.chunks += 1


async def test_the_spool_file_holds_no_plaintext(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    data = MARKER * (3 * CHUNK // len(MARKER))
    for at in range(0, len(data), 1000):
        if spool.write(data[at:at + 1000]):
            await spool.flush()
    try:
        assert spool.spooled and not list((tmp_path / "spool").iterdir())  # unlinked at once
        on_disk = _open_files_under(tmp_path / "spool")
        assert len(on_disk) >= 2 * CHUNK and MARKER not in on_disk
        assert b"".join(spool.chunks()) == data
        assert spool.digest == hashlib.sha256(data).hexdigest() and spool.size == len(data)
        assert spool.head == data[:len(spool.head)] and spool.tail == data[-len(spool.tail):]
    finally:
        spool.close()


def _open_files_under(directory: Path) -> bytes:
    """The bytes of this process's open files under `directory`: what anyone reading the disk
    could find (the spool file has no name any more)."""
    found = b""
    for fd in os.listdir("/proc/self/fd"):
        link = Path(f"/proc/self/fd/{fd}")
        if link.is_symlink() and os.readlink(link).startswith(str(directory)):
            found += link.read_bytes()
    return found


async def test_a_small_message_never_reaches_the_spool(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    assert not spool.write(b"Subject: hi\r\n\r\nhello\r\n")
    assert spool.inline == b"Subject: hi\r\n\r\nhello\r\n" and not (tmp_path / "spool").exists()


async def test_a_mail_under_a_chunk_is_stored_whole_even_if_spooled(gateway: Harness,
                                                                   alice: TestKey) -> None:
    mail = _large_request(gateway, alice, records=os.urandom(CHUNK // 2))  # spooled: over 64 KiB
    assert (await gateway.send(mail))[0] == 250
    stored = await _inbound(gateway)
    assert stored.chunks == 0 and stored.raw.rstrip(b"\r\n") == mail.rstrip(b"\r\n")


def test_a_large_attachment_is_decoded_into_a_sealed_spool(tmp_path: Path) -> None:
    """While its message is judged, a large file is never whole in memory, and on disk it is
    ciphertext: what is read back (whole, in pieces, its digest) is the file as sent."""
    data = MARKER * (3 * CHUNK // len(MARKER)) + os.urandom(1000)
    signed = (b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n"
              b"hello\r\n--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; "
              b"filename=x.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
              + base64.encodebytes(data).replace(b"\n", b"\r\n") + b"\r\n--b--\r\n")
    token = SPOOL_DIR.set(tmp_path / "spool")
    try:
        (attachment,) = read_signed_content(memoryview(signed)).attachments
    finally:
        SPOOL_DIR.reset(token)
    assert isinstance(attachment.content, Spool) and attachment.content.spooled
    assert not list((tmp_path / "spool").iterdir())  # unlinked at once
    on_disk = _open_files_under(tmp_path / "spool")
    assert len(on_disk) >= 3 * CHUNK and MARKER not in on_disk
    assert attachment.size == len(data) and attachment.sha256 == hashlib.sha256(data).hexdigest()
    assert attachment.head == data[:len(attachment.head)] and len(attachment.head) >= 64 * 1024
    assert b"".join(attachment.pieces()) == data and attachment.data == data
    assert all(len(piece) == CHUNK for piece in list(attachment.pieces())[:-1])
