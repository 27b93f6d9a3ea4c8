"""Issue 8, round 2: what the faster paths must still guarantee. A cached key status is never
older than the keyring (a revocation imported by any process, not only ours, is seen at once)."""

from __future__ import annotations

import asyncio
import subprocess

from gateway.pgp import OpenPGP
from tests.support.officer_keys import GPG, OfficerKeyring, TestKey


def _count_listings(pgp: OpenPGP) -> list[int]:
    """Count the `gpg --list-keys` runs of this OpenPGP from now on."""
    calls = [0]
    list_keys = pgp._gpg.list_keys

    def counting(*args: object, **kwargs: object) -> object:
        calls[0] += 1
        return list_keys(*args, **kwargs)
    pgp._gpg.list_keys = counting  # type: ignore[method-assign]
    return calls


async def test_key_status_is_cached_until_the_keyring_changes(gateway, officer_ring: OfficerKeyring) -> None:
    dora = officer_ring.create_key("dora@police.test", "Dora Officer")
    pgp = gateway.core.pgp
    await pgp.import_public_key(dora.public_armored)
    calls = _count_listings(pgp)
    first = await pgp.key_status(dora.fingerprint)
    assert first is not None and not first.revoked and "dora@police.test" in first.emails
    assert await pgp.key_status(dora.fingerprint) == first
    assert calls[0] == 1  # the second answer came from the cache
    # revoked by another process (the operator's gpg, the CLI): the keyring file changes under us
    revocation = officer_ring.revoke(dora)
    await asyncio.to_thread(subprocess.run, [GPG, "--homedir", str(pgp.home), "--batch", "--import"],
                            input=revocation, capture_output=True, check=True)
    revoked = await pgp.key_status(dora.fingerprint)
    assert revoked is not None and revoked.revoked
    assert calls[0] == 2


async def test_a_missing_key_is_found_once_imported(gateway, officer_ring: OfficerKeyring) -> None:
    erin: TestKey = officer_ring.create_key("erin@police.test", "Erin Officer")
    pgp = gateway.core.pgp
    assert await pgp.key_status(erin.fingerprint) is None
    await pgp.import_public_key(erin.public_armored)
    status = await pgp.key_status(erin.fingerprint)
    assert status is not None and status.fingerprint == erin.fingerprint


async def test_replies_leave_the_random_seed_file_alone(gateway, officer_ring: OfficerKeyring) -> None:
    """Two gpg processes that sign or encrypt at once in one keyring queue on the lock of its
    `random_seed` (the loser sleeps 250 ms, then 1 s more): the gateway's gpg never opens it."""
    frank = officer_ring.create_key("frank@police.test", "Frank Officer")
    pgp = gateway.core.pgp
    await pgp.import_public_key(frank.public_armored)
    seed = pgp.home / "random_seed"
    seed.unlink(missing_ok=True)
    replies = await asyncio.gather(*(pgp.sign_and_encrypt_for_officer(b"reply %d\n" % i, frank.fingerprint)
                                     for i in range(4)))
    assert [officer_ring.decrypt(reply) for reply in replies] == [b"reply %d\n" % i for i in range(4)]
    assert not seed.exists()
