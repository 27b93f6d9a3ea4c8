"""Send the README's example request to a running gateway and print the acknowledgement.

    make demo            (or: .venv/bin/python examples/send_request.py)

It plays both outside parties: an officer (a demo key kept in data/demo-officer/, enrolled on
first use with the Demo Police agency) and the smarthost (it listens on [outbound] host:port
for the gateway's reply, decrypts it with the officer's key and prints it). Start the gateway
first with the same configuration, e.g. `make run`. If [outbound] port is 25 and you are not
root, run both with LERS_OUTBOUND__PORT=2525.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email
import io
import sys
import tempfile
import uuid
import zipfile
from email.utils import format_datetime, make_msgid
from pathlib import Path

import aiosmtplib
import gnupg
from aiosmtpd.smtp import SMTP, Envelope, Session

from gateway.app import open_core
from gateway.clock import utcnow
from gateway.config import Settings, config_path, load_settings
from handlers.enrolment import EnrolmentError, add_agency, add_officer

OFFICER = "demo.officer@police.example"
AGENCY = "Demo Police"
REQUEST = """\
type: preservation
case_number: DEMO-2026-001
legal_basis: 18 U.S.C. 2703(f)
subjects: account_id:42, wallet_address:bc1qdemo0000000000000000000000000000000
data_categories: subscriber_information, login_ip_addresses, transaction_history
date_from: 2026-01-01
date_to: 2026-06-30
nondisclosure_until: 2027-01-31

Please preserve the records above pending a court order.
"""


def officer_keyring(settings: Settings) -> tuple[gnupg.GPG, str]:
    home = settings.data_dir / "demo-officer"
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    gpg = gnupg.GPG(gnupghome=str(home))
    for key in gpg.list_keys(secret=True):
        return gpg, key["fingerprint"]
    batch = "\n".join(["Key-Type: EDDSA", "Key-Curve: ed25519", "Key-Usage: sign",
                       "Subkey-Type: ECDH", "Subkey-Curve: cv25519", "Subkey-Usage: encrypt",
                       "Name-Real: Demo Officer", f"Name-Email: {OFFICER}", "Expire-Date: 1y",
                       "%no-protection", "%commit", ""])
    return gpg, str(gpg.gen_key(batch).fingerprint)


async def enrol(settings: Settings, gpg: gnupg.GPG, fingerprint: str) -> str:
    core = await open_core(settings)
    try:
        with contextlib.suppress(EnrolmentError):  # already there from an earlier run
            await add_agency(core, AGENCY, "police.example", "XX")
        try:
            await add_officer(core, OFFICER, AGENCY, gpg.export_keys(fingerprint).encode(), "Demo Officer")
        except EnrolmentError as exc:
            if "already enrolled" not in str(exc):
                raise
        return await core.pgp.export_gateway_public_key()
    finally:
        await core.close()


def signed_mail(gpg: gnupg.GPG, fingerprint: str, settings: Settings) -> bytes:
    """PGP/MIME (RFC 3156): a detached signature over the exact bytes of the first part."""
    part = (b'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n'
            + REQUEST.replace("\n", "\r\n").encode())
    signature = gpg.sign(part, keyid=fingerprint, detach=True, binary=False,
                         extra_args=["--digest-algo", "SHA256"])
    boundary = f"demo-{uuid.uuid4().hex}"
    headers = [f"From: Demo Officer <{OFFICER}>", f"To: {settings.gateway.address}",
               "Subject: Preservation request DEMO-2026-001", f"Date: {format_datetime(utcnow())}",
               f"Message-ID: {make_msgid(domain='police.example')}", "MIME-Version: 1.0",
               f'Content-Type: multipart/signed; micalg=pgp-sha256; '
               f'protocol="application/pgp-signature"; boundary="{boundary}"']
    return b"\r\n".join([
        *(h.encode() for h in headers), b"", f"--{boundary}".encode(), part,
        f"--{boundary}".encode(), b'Content-Type: application/pgp-signature; name="signature.asc"', b"",
        str(signature).replace("\n", "\r\n").encode().rstrip(), f"--{boundary}--".encode(), b"",
    ])


class ReplyCatcher:
    def __init__(self) -> None:
        self.replies: asyncio.Queue[bytes] = asyncio.Queue()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await self.replies.put(envelope.original_content or b"")
        return "250 OK"


def show(gpg: gnupg.GPG, raw: bytes) -> None:
    """A reply as the officer's mail client shows it; a production's files listed and checked."""
    outer = email.message_from_bytes(raw)
    encrypted = outer.get_payload()[1].get_payload(decode=True)  # type: ignore[index,union-attr]
    clear = gpg.decrypt(encrypted)
    inner = email.message_from_bytes(clear.data)
    print(f"\nSubject: {outer['Subject']}")
    print(f"Signed by the gateway key: {clear.valid} ({clear.fingerprint})\n")
    files: dict[str, bytes] = {}
    for part in inner.walk():
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        if part.get_filename():
            files[part.get_filename() or ""] = payload
        elif part.get_content_type() == "text/plain":
            print(payload.decode())
    if "manifest.json" in files:
        with tempfile.TemporaryDirectory() as scratch:
            (Path(scratch) / "manifest.json").write_bytes(files["manifest.json"])
            (Path(scratch) / "manifest.json.asc").write_bytes(files["manifest.json.asc"])
            with open(Path(scratch) / "manifest.json.asc", "rb") as signature:
                verified = gpg.verify_file(signature, str(Path(scratch) / "manifest.json"))
        print(f"manifest.json signed by the gateway: {verified.valid}")
    for name, data in files.items():
        print(f"attachment {name}: {len(data)} bytes")
        if name == "production.zip":
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                for entry in archive.infolist():
                    print(f"  {entry.filename}: {len(archive.read(entry).splitlines()) - 1} rows")


async def listen(settings: Settings, gpg: gnupg.GPG, seconds: float, count: int = 0) -> int:
    """Play the smarthost only, printing each reply, e.g. after a reviewer's decision."""
    catcher = ReplyCatcher()
    server = await asyncio.get_running_loop().create_server(
        lambda: SMTP(catcher), settings.outbound.host, settings.outbound.port)
    print(f"listening on {settings.outbound.host}:{settings.outbound.port} for {seconds:.0f} s...",
          flush=True)
    shown = 0
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while not count or shown < count:
                    show(gpg, await catcher.replies.get())
                    shown += 1
    finally:
        server.close()
    return 0


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config")
    parser.add_argument("--listen", type=float, metavar="SECONDS",
                        help="send nothing: print every reply the gateway sends for this long")
    parser.add_argument("--count", type=int, default=0, metavar="N",
                        help="with --listen: stop after N replies")
    args = parser.parse_args()
    settings = load_settings(config_path(args.config))
    gpg, fingerprint = officer_keyring(settings)
    if args.listen:
        return await listen(settings, gpg, args.listen, args.count)
    gpg.import_keys(await enrol(settings, gpg, fingerprint))
    catcher = ReplyCatcher()
    try:
        server = await asyncio.get_running_loop().create_server(
            lambda: SMTP(catcher), settings.outbound.host, settings.outbound.port)
    except OSError as exc:
        print(f"cannot listen on {settings.outbound.host}:{settings.outbound.port} for the reply: {exc}\n"
              "run the gateway and this script with LERS_OUTBOUND__PORT=2525", file=sys.stderr)
        return 1
    try:
        mail = signed_mail(gpg, fingerprint, settings)
        await aiosmtplib.send(mail, sender=OFFICER, recipients=[settings.gateway.address],
                              hostname=settings.smtp.host, port=settings.smtp.port)
        print(f"sent the example request to {settings.smtp.host}:{settings.smtp.port}; "
              "waiting for the reply...")
        raw = await asyncio.wait_for(catcher.replies.get(), timeout=60)
    except (OSError, aiosmtplib.SMTPException) as exc:
        print(f"could not send to the gateway at {settings.smtp.host}:{settings.smtp.port}: {exc}\n"
              "is it running (make run)?", file=sys.stderr)
        return 1
    except TimeoutError:
        print("no reply within 60 s: see `lers requests list` and the gateway's log", file=sys.stderr)
        return 1
    finally:
        server.close()
    show(gpg, raw)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
