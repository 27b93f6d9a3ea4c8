"""Officers ask for the status of their requests by signed mail: STATUS, or STATUS REF.

Real SMTP, real gpg: the replies are decrypted with the officer's key and their signature
checked, as the officer's mail client would."""

from __future__ import annotations

import re

from tests.conftest import Harness, Reply
from tests.support.mail_factory import request_body, signed_request_mail, unsigned_mail
from tests.support.officer_keys import TestKey


async def submit(gateway: Harness, officer: TestKey, **fields: str) -> str:
    await gateway.send(signed_request_mail(gateway.ring, officer, from_addr=officer.email,
                                           body=request_body(**fields)))
    await gateway.settle()
    return str((await gateway.requests())[-1]["ref"])


async def ask(gateway: Harness, officer: TestKey, body: str, subject: str = "status") -> Reply:
    """Send a signed query; return the one new reply to this officer."""
    before = len(gateway.replies(to=officer.email))
    await gateway.send(signed_request_mail(gateway.ring, officer, from_addr=officer.email, body=body,
                                           subject=subject))
    await gateway.settle()
    replies = gateway.replies(to=officer.email)
    assert len(replies) == before + 1
    return replies[-1]


def field(text: str, ref: str, name: str) -> str:
    """The value of `name` in the summary block of `ref`."""
    text = text.replace("\r\n", "\n")
    block = text[text.index(f"Reference:    {ref}"):].split("\n\n")[0]
    found = re.search(rf"^{name}:\s+(.*)$", block, re.MULTILINE)
    assert found is not None, block
    return found.group(1)


async def test_status_lists_only_the_officer_s_own_open_requests(
        gateway: Harness, alice: TestKey, bob: TestKey) -> None:
    complete = await submit(gateway, alice, type="preservation", case_number="2026-PR-0201")
    incomplete = await submit(gateway, alice, type="subpoena", case_number="2026-SP-0202")
    bobs = await submit(gateway, bob, type="preservation", case_number="2026-PR-0203")

    reply = await ask(gateway, alice, "STATUS\n\n-- \nAlice, Test Police\n")
    assert reply.signed_by == gateway.core.gateway_fingerprint
    assert reply.subject == "Status of your open requests"
    assert reply.text.startswith("You have 2 open request(s):")
    assert field(reply.text, complete, "Status") == "received"
    assert field(reply.text, complete, "Case number") == "2026-PR-0201"
    assert field(reply.text, complete, "Waiting for") == "review by our legal team"
    assert field(reply.text, complete, "Deadline").endswith(" UTC")
    assert field(reply.text, incomplete, "Status") == "awaiting info"
    assert field(reply.text, incomplete, "Waiting for").startswith(
        "you: the legal document (a PDF of the subpoena)")
    assert bobs not in reply.text and "2026-PR-0203" not in reply.text
    assert reply.outer["In-Reply-To"] is not None  # threaded on the officer's query


async def test_another_officer_s_reference_reads_exactly_like_an_unknown_one(
        gateway: Harness, alice: TestKey, bob: TestKey) -> None:
    bobs = await submit(gateway, bob, type="preservation", case_number="2026-PR-0301")
    unknown = bobs[:-6] + "999999"
    of_bob = await ask(gateway, alice, f"STATUS {bobs}\n")
    of_nobody = await ask(gateway, alice, f"STATUS {unknown}\n")
    assert of_bob.text == of_nobody.text.replace(unknown, bobs)
    assert of_bob.subject == f"Status of {bobs}"
    assert of_bob.text.startswith(f"{bobs} is not one of your requests.")
    assert "2026-PR-0301" not in of_bob.text and "preservation" not in of_bob.text

    own = await ask(gateway, bob, f"STATUS {bobs}\n")
    assert own.text.startswith(f"The status of {bobs}:")
    assert field(own.text, bobs, "Type") == "preservation"


async def test_only_the_signed_body_is_read_never_the_subject(
        gateway: Harness, alice: TestKey, bob: TestKey) -> None:
    bobs = await submit(gateway, bob, type="preservation", case_number="2026-PR-0401")
    # an unsigned Subject asking about bob's request changes nothing: the signed body says STATUS
    reply = await ask(gateway, alice, "STATUS\n", subject=f"STATUS {bobs}")
    assert reply.text.startswith("You have no open requests.")
    assert bobs not in reply.text
    # and a STATUS Subject on a signed request form is a request, not a query
    await ask(gateway, alice, request_body(type="preservation", case_number="2026-PR-0402"),
              subject="STATUS")
    assert (await gateway.requests())[-1]["case_number"] == "2026-PR-0402"


async def test_unsigned_status_gets_no_answer_and_a_bad_query_is_explained(
        gateway: Harness, alice: TestKey) -> None:
    await gateway.send(unsigned_mail(from_addr=alice.email, body="STATUS\n"))
    await gateway.settle()
    assert all(not r.subject.startswith("Status") for r in gateway.replies(to=alice.email))
    [refused] = await gateway.quarantine()
    assert refused["reason"] == "not_signed"

    confused = await ask(gateway, alice, "STATUS of my subpoena please\n")
    assert confused.subject == "Status query not understood"
    assert "STATUS LERS-2026-000123" in confused.text
