"""`lers audit export REF`: a bundle a court can check offline with gpg and sha256sum alone."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.custody import ExportError, export_request
from handlers.enrolment import add_reviewer
from handlers.review import ReviewContext, decide
from tests.conftest import Harness, short_tempdir
from tests.support.mail_factory import Attachment, pdf_bytes, request_body, signed_request_mail
from tests.support.officer_keys import TestKey


async def subpoena(gateway: Harness, alice: TestKey) -> tuple[str, bytes]:
    """The officer's signed subpoena, received and registered: (reference, the mail as sent)."""
    mail = signed_request_mail(gateway.ring, alice, from_addr=alice.email, body=request_body(),
                               attachments=[Attachment("subpoena.pdf", "application/pdf", pdf_bytes("S"))])
    await gateway.send(mail)
    await gateway.settle()
    [request] = await gateway.requests()
    return str(request["ref"]), mail


async def test_the_bundle_verifies_offline_with_the_documented_commands(
        gateway: Harness, alice: TestKey) -> None:
    ref, mail = await subpoena(gateway, alice)
    anna = await add_reviewer(gateway.core, 7, "Anna", "approver")
    await decide(ReviewContext(gateway.settings, gateway.core.db), anna, ref, "reject", "outside scope")
    await gateway.settle()

    out = short_tempdir("custody-") / "bundle"
    try:
        files = await export_request(gateway.core, ref, out)
        assert {"request.json", "verification.json", "audit.jsonl", "gateway.asc", "SHA256SUMS",
                "SHA256SUMS.asc"} <= set(files)
        raw_files = sorted((out / "messages").iterdir())
        assert (out / "messages" / raw_files[0].name).read_bytes().rstrip(b"\r\n") == mail.rstrip(b"\r\n")
        assert any(name.endswith("-outbound.eml") for name in (p.name for p in raw_files))
        record = json.loads((out / "request.json").read_text())
        assert record["reviews"][0]["action"] == "reject" and record["reviews"][0]["reviewer"] == "Anna"
        actions = [json.loads(line)["action"] for line in (out / "audit.jsonl").read_text().splitlines()]
        assert "request.created" in actions and "review.reject" in actions

        # the documented offline check, in a keyring that has never seen the gateway
        home = short_tempdir("court-")
        env = {**os.environ, "GNUPGHOME": str(home)}
        command = ("gpg --batch --import gateway.asc && gpg --batch --verify SHA256SUMS.asc SHA256SUMS"
                   " && sha256sum -c SHA256SUMS")
        check = await asyncio.to_thread(subprocess.run, ["sh", "-c", command], cwd=out, env=env,
                                        capture_output=True, text=True, timeout=60, check=False)
        assert check.returncode == 0, check.stderr
        assert "Good signature" in check.stderr
        (out / "request.json").write_text("{}")  # tampering is caught
        tampered = await asyncio.to_thread(subprocess.run, ["sh", "-c", command], cwd=out, env=env,
                                           capture_output=True, text=True, timeout=60, check=False)
        assert tampered.returncode != 0 and "request.json: FAILED" in tampered.stdout
        await asyncio.to_thread(subprocess.run, ["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"],
                                check=False, capture_output=True)
        with pytest.raises(ExportError, match="not empty"):
            await export_request(gateway.core, ref, out)
        with pytest.raises(ExportError, match="no request LERS-2026-999999"):
            await export_request(gateway.core, "LERS-2026-999999", Path(str(out) + "-2"))
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)


async def test_the_bundle_holds_the_production_manifest_the_officer_received(
        gateway: Harness, alice: TestKey) -> None:
    ref, _ = await subpoena(gateway, alice)
    ctx = ReviewContext(gateway.settings, gateway.core.db)
    for telegram_id, name in ((7, "Anna"), (8, "Bert")):  # a subpoena needs two approvers
        await decide(ctx, await add_reviewer(gateway.core, telegram_id, name, "approver"), ref, "approve", "")
    await gateway.settle()
    [production] = [r for r in gateway.replies(to=alice.email) if "Data production" in r.subject]
    sent = {part.get_filename(): part.get_payload(decode=True) for part in production.inner.walk()
            if part.get_filename()}

    out = short_tempdir("custody-") / "bundle"
    try:
        files = await export_request(gateway.core, ref, out)
        assert {"production/manifest.json", "production/manifest.json.asc"} <= set(files)
        exported = (out / "production" / "manifest.json").read_bytes()
        assert exported == sent["manifest.json"]  # byte for byte what the officer received
        assert gateway.ring.verify_detached((out / "production" / "manifest.json.asc").read_bytes(), exported)
        assert json.loads(exported)["request"] == ref
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)
