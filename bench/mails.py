"""The mail the benchmark sends, built and signed before any clock starts.

Signing costs a gpg process per mail, so the signed sets are built once per benchmark and reused by
every run: each run talks to a fresh gateway (fresh database), where they are new requests again.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.support.mail_factory import (
    Attachment,
    extract_signed_part,
    pdf_bytes,
    request_body,
    signed_request_mail,
    unsigned_mail,
)
from tests.support.officer_keys import OfficerKeyring, TestKey

GATEWAY_ADDRESS = "lers@gateway.test"
OFFICER_EMAIL = "bench.officer@police.test"
OFFICER_NAME = "Bench Officer"
AGENCY = "Bench Police"
AGENCY_DOMAIN = "police.test"
INGRESS_TEMPLATE_ID = "<bench-ingress-template@police.test>"

# A mail set on disk: (Message-ID, raw bytes) pairs, loaded by the load process before timing.
MailSet = list[tuple[str, bytes]]


def message_id(tag: str, index: int) -> str:
    """Distinct per mail: the gateway threads its acknowledgement on it (In-Reply-To)."""
    return f"<bench-{tag}-{index:05d}@police.test>"


def request_mail(ring: OfficerKeyring, key: TestKey, tag: str, index: int,
                 attachments: Sequence[Attachment] = ()) -> tuple[str, bytes]:
    """One signed preservation request; the case number makes its signed content unique (no replay)."""
    mid = message_id(tag, index)
    body = request_body(type="preservation", case_number=f"BENCH-{tag}-{index:05d}",
                        legal_basis="18 U.S.C. 2703(f)")
    raw = signed_request_mail(ring, key, from_addr=key.email, body=body, attachments=attachments,
                              message_id=mid, subject=f"Preservation request {tag}-{index}")
    return mid, raw


def signed_set(ring: OfficerKeyring, key: TestKey, tag: str, count: int,
               attachments: Sequence[Attachment] = (), threads: int = 4) -> MailSet:
    """`count` distinct signed requests; gpg runs as its own process, so threads overlap its start-up."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(lambda i: request_mail(ring, key, tag, i, attachments), range(count)))


def small_pdf() -> Attachment:
    """A one-page PDF, so warm-up mails take the document path (pypdf) before anything is measured."""
    return Attachment("order.pdf", "application/pdf", pdf_bytes("Preservation order\nBench run"))


def big_pdf(size: int) -> Attachment:
    """A valid PDF of about `size` bytes, most of it one incompressible image stream, like a scan.

    The page draws the image, so a reader walks the real structure; text extraction skips images.
    """
    image = os.urandom(size)
    content = b"BT /F1 12 Tf 72 720 Td (Scanned court order) Tj ET\nq 612 0 0 792 0 0 cm /Im1 Do Q\n"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 4 0 R >>"
        b" /XObject << /Im1 6 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"endstream",
        b"<< /Type /XObject /Subtype /Image /Width 2480 /Height 3508 /ColorSpace /DeviceRGB"
        b" /BitsPerComponent 8 /Filter /DCTDecode /Length %d >>\nstream\n" % len(image) + image
        + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref_at = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f\r\n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n\r\n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref_at)
    return Attachment("scanned-order.pdf", "application/pdf", bytes(out))


def ingress_template(ring: OfficerKeyring, key: TestKey) -> bytes:
    """One real signed request whose Message-ID the load process rewrites to make each copy distinct.

    Ingress runs against a gateway with only the `smtp` role, so copies are never verified; distinct
    bytes keep the gateway from answering them as retransmissions (same sha256 is stored once).
    """
    raw = signed_request_mail(ring, key, from_addr=key.email, message_id=INGRESS_TEMPLATE_ID,
                              body=request_body(type="preservation", case_number="BENCH-INGRESS"))
    if raw.count(INGRESS_TEMPLATE_ID.encode()) != 1:
        raise RuntimeError("the ingress template must name its Message-ID exactly once")
    return raw


def floor_inputs(mails: MailSet) -> list[tuple[bytes, bytes]]:
    """(signed part, detached signature) of each mail: what the floor verifies, byte for byte."""
    return [extract_signed_part(raw) for _mid, raw in mails]


def save(mails: MailSet, path: Path) -> Path:
    """Hand a set to the load process by file: large sets would be slow through a pipe."""
    with open(path, "wb") as handle:
        pickle.dump(mails, handle, protocol=pickle.HIGHEST_PROTOCOL)
    return path


def load(path: Path) -> MailSet:
    with open(path, "rb") as handle:
        mails: MailSet = pickle.load(handle)
    return mails


FLOOD_TEMPLATE_ID = "<bench-flood-template@police.test>"
ATTACKER_EMAIL = "mallory@attacker.test"


def flood_templates(ring: OfficerKeyring, officer: TestKey, attacker: TestKey) -> list[bytes]:
    """What a flood of forged mail in an officer's name looks like, one template per kind; the
    load process makes each copy distinct through its Message-ID.

    - unsigned: plain text From the officer (anyone can write a From header);
    - malformed: multipart/signed whose signature part is no OpenPGP signature at all;
    - forged: correctly signed, but by the attacker's own key, From the officer.
    None of them may cost the real officer's requests their place in the queue.
    """
    body = request_body(type="emergency_disclosure", case_number="FLOOD-0001",
                        legal_basis="urgent", emergency_justification="life at risk",
                        supervisor="Sgt. Nobody")
    unsigned = unsigned_mail(from_addr=officer.email, body=body, message_id=FLOOD_TEMPLATE_ID,
                             subject="URGENT emergency disclosure")
    forged = signed_request_mail(ring, attacker, from_addr=officer.email, body=body,
                                 message_id=FLOOD_TEMPLATE_ID, subject="URGENT emergency disclosure")
    signature_at = forged.rfind(b"-----BEGIN PGP SIGNATURE-----")
    end = b"-----END PGP SIGNATURE-----"
    signature_end = forged.find(end, signature_at) + len(end)
    malformed = forged[:signature_at] + b"this is not a signature" + forged[signature_end:]
    templates = [unsigned, malformed, forged]
    for raw in templates:
        if raw.count(FLOOD_TEMPLATE_ID.encode()) != 1:
            raise RuntimeError("a flood template must name its Message-ID exactly once")
    return templates
