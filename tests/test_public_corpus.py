"""Replay the "Johnny, You Are Fired!" signature-spoofing corpus (USENIX Security 2019) through
real SMTP. Only the manager is an enrolled officer; Eve's key is in the keyring but not
registered. The verdicts are those of ../shared/corpus/README.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import GatewayFactory, Harness

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "johnny-you-are-fired"
MANAGER = "manager@bigcorporation.de"
ACCEPTED_WHEN_INLINE_ALLOWED = {"assets/valid-signed/manager-pgp-inline.eml"}
ACCEPTED_ALWAYS = {"assets/valid-signed/manager-pgp-mime.eml"}


def corpus_mails() -> list[str]:
    if not CORPUS.is_dir():
        pytest.fail(f"the public corpus is missing: {CORPUS} (CI clones ../shared beside the repo)")
    return sorted(str(p.relative_to(CORPUS)) for p in CORPUS.rglob("*.eml"))


async def replay_corpus(make_gateway: GatewayFactory, *, allow_inline: bool) -> dict[str, str | None]:
    """Send every corpus mail; return {file: refusal reason, or None when accepted}."""
    harness: Harness = await make_gateway(**{
        "policy.max_signature_age_hours": "0",  # signed in 2019
        "policy.allow_inline_pgp": "true" if allow_inline else "false",
        "policy.impersonation_warning_hours": "0",
    })
    manager_key = (CORPUS / "assets/public-keys/manager@bigcorporation.asc").read_bytes()
    eve_key = (CORPUS / "assets/public-keys/eve@bigcorporation.asc").read_bytes()
    from handlers.enrolment import add_agency, add_officer
    await add_agency(harness.core, "Big Corporation", "bigcorporation.de", "DE")
    await add_officer(harness.core, MANAGER, "Big Corporation", manager_key, "The Manager")
    await harness.import_key(eve_key)
    ids = {}
    for name in corpus_mails():
        code, text = await harness.send((CORPUS / name).read_bytes())
        assert code == 250, (name, text)
        ids[name] = int(text.rsplit(" ", 1)[1])
    await harness.settle(within=120)
    verdicts = {}
    for name, message_id in ids.items():
        message = await harness.message(message_id)
        verified = message.officer_id is not None and message.reason in (None, "invalid_request_form")
        verdicts[name] = None if verified else message.reason
    return verdicts


@pytest.mark.parametrize("allow_inline", [False, True], ids=["pgp-mime-only", "inline-allowed"])
async def test_public_corpus_verdicts(make_gateway: GatewayFactory, allow_inline: bool) -> None:
    verdicts = await replay_corpus(make_gateway, allow_inline=allow_inline)
    expected_accepted = ACCEPTED_ALWAYS | (ACCEPTED_WHEN_INLINE_ALLOWED if allow_inline else set())
    accepted = {name for name, reason in verdicts.items() if reason is None}
    assert accepted == expected_accepted, {n: verdicts[n] for n in accepted ^ expected_accepted}
    assert len(verdicts) > 50
    # refusals carry the specific reason an operator needs
    assert verdicts["05-ui/u1-ui-redressing/u1-generic.eml"] == "not_signed"
    assert verdicts["assets/valid-signed/eve-pgp-mime.eml"] == "key_not_registered"
    assert verdicts["04-id/i1-sender-signer-checks/i1-from-unequals-signer-pgp-mime.eml"] in (
        "key_not_registered", "from_mismatch")
    assert verdicts["assets/valid-signed/manager-smime.eml"] == "smime_not_accepted"
    for name, reason in verdicts.items():
        if name.startswith("03-mime/") and "smime" not in name:
            assert reason in ("unsigned_content", "inline_text_outside_block", "inline_pgp_disabled",
                              "not_signed"), (name, reason)
