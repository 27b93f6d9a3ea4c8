"""Agency keys certifying officers' keys, made with the real gpg in the agency's own keyring.

An agency certifies an officer the way its operators would: import the officer's public key,
`--quick-sign-key` (a plain certification) or `--edit-key ... tsign` (a trust signature,
optionally limited to a mail domain), then export the officer's key with the certification.
"""

from __future__ import annotations

from .officer_keys import OfficerKeyring, TestKey


def certify(agency_ring: OfficerKeyring, agency: TestKey, officer_public: bytes, officer: TestKey,
            *, trust_domain: str | None = None) -> bytes:
    """The officer's public key carrying a certification by `agency` on their user ID.

    With `trust_domain`, a trust signature (depth 1, full trust) limited to that mail domain,
    answered to gpg's own prompts through --command-fd.
    """
    agency_ring.import_key(officer_public)
    signer = ["--local-user", f"{agency.fingerprint}!"]
    if trust_domain is None:
        agency_ring.run(*signer, "--quick-sign-key", officer.fingerprint, officer.uid)
    else:
        # uid 1 / tsign / trust 2 = full / depth 1 / domain / sign? y / save
        answers = f"uid 1\ntsign\n2\n1\n{trust_domain}\ny\nsave\n".encode()
        agency_ring.run(*signer, "--command-fd", "0", "--edit-key", officer.fingerprint, input=answers)
    return agency_ring.public_key_by_fingerprint(officer.fingerprint)


def revocation_certificate(ring: OfficerKeyring, key: TestKey) -> bytes:
    """The revocation certificate gpg wrote when it made the key (openpgp-revocs.d), made
    importable (gpg prefixes its armor line with ':' against accidental use)."""
    text = (ring.home / "openpgp-revocs.d" / f"{key.fingerprint}.rev").read_text()
    armor = "-----BEGIN PGP PUBLIC KEY BLOCK-----"
    return text.replace(":" + armor, armor).encode()
