"""Cheap triage at ingress: does a message even look signed by a key we hold?

Only a priority, never a verdict: every message is stored and judged by the full chain
(handlers/chain.py) all the same. A flood of unsigned, malformed or stranger-signed mail in an
officer's name must not make real requests wait, so such mail is queued behind mail that looks
signed by a known key (issue 8, item 4). Mail whose signer only costlier work can tell (encrypted
to us, or carrying its own key: an enrolment, an agency-certified officer) comes between the two:
anyone can add an armored block to forged mail, and each such mail costs a decryption or a check
against its attached key, so it must not stand beside mail from known keys. A wrong guess only
delays a message: a key that reached the keyring a moment ago costs its first messages their place.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator

NORMAL = 0  # Job.priority (lowest first) of mail whose signature names a key in the keyring
UNPROVEN = 1  # encrypted, or carrying a key: only decryption or the attached key can tell
SUSPECT = 2  # nothing verifiable by a key we hold: unsigned, malformed, a stranger's signature
ARMORED_SIGNATURE = re.compile(rb"-----BEGIN PGP SIGNATURE-----\r?\n(.*?)-----END PGP SIGNATURE-----",
                               re.DOTALL)
BEGIN_SIGNATURE, END_SIGNATURE = b"-----BEGIN PGP SIGNATURE-----", b"-----END PGP SIGNATURE-----"
ENCRYPTED = b"-----BEGIN PGP MESSAGE-----"  # whose signer only decryption can tell
ATTACHED_KEY = re.compile(rb"-----BEGIN PGP PUBLIC KEY BLOCK-----|application/pgp-keys", re.IGNORECASE)


def priority(raw: bytes, known: frozenset[str]) -> int:
    """NORMAL if a signature's issuer (key id or fingerprint, upper-case hex) is in `known`;
    else UNPROVEN if the mail is encrypted or carries a key; SUSPECT otherwise."""
    for body in armored_signatures(raw):
        if issuers(body) & known:
            return NORMAL
    if ENCRYPTED in raw or carries_key(raw):  # a key file is usually base64: its type tells
        return UNPROVEN
    return SUSPECT


def carries_key(raw: bytes) -> bool:
    """`ATTACHED_KEY.search(raw)`, as substring searches in a lower-cased copy (bytes patterns
    ignore only ASCII case, as `bytes.lower` does): the regex, which cannot skip ahead when it
    ignores case, cost about 0.9 ms on a 64 KiB head, on every mail not signed by a known key."""
    lowered = raw.lower()
    return b"-----begin pgp public key block-----" in lowered or b"application/pgp-keys" in lowered


def armored_signatures(raw: bytes) -> Iterator[bytes]:
    """The bodies `ARMORED_SIGNATURE.finditer` finds, in the same order, with substring searches
    (the regex cost a third of triage): a BEGIN line and the first END after it; a BEGIN not
    followed by a line end is skipped, and the search goes on one byte after it, as the regex's."""
    at = 0
    while (begin := raw.find(BEGIN_SIGNATURE, at)) >= 0:
        start = begin + len(BEGIN_SIGNATURE)
        if raw[start:start + 1] == b"\n":
            start += 1
        elif raw[start:start + 2] == b"\r\n":
            start += 2
        else:
            at = begin + 1
            continue
        end = raw.find(END_SIGNATURE, start)
        if end < 0:
            return  # no END after this BEGIN, so none after a later one either
        yield raw[start:end]
        at = end + len(END_SIGNATURE)


def issuers(armored_body: bytes) -> set[str]:
    """Issuer key ids and fingerprints named by the signature packets in an armor body
    (RFC 4880 5.2.3, RFC 9580 5.2.3.35); an empty set for anything not understood."""
    lines = armored_body.replace(b"\r\n", b"\n").split(b"\n")
    if b"" in lines:  # armor headers (Version:, Comment:) end at the first blank line
        lines = lines[lines.index(b"") + 1:]
    data = b"".join(line.strip() for line in lines if line.strip() and not line.startswith(b"="))
    try:
        packets = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return set()
    found: set[str] = set()
    at = 0
    while at < len(packets):
        parsed = _packet(packets, at)
        if parsed is None:
            break
        tag, body, at = parsed
        if tag == 2 and len(body) > 6 and body[0] in (4, 5, 6):
            _subpacket_issuers(body, found)
    return found


def _packet(data: bytes, at: int) -> tuple[int, bytes, int] | None:
    first = data[at]
    if not first & 0x80:
        return None
    if first & 0x40:  # new format
        tag, at = first & 0x3F, at + 1
        if at >= len(data):
            return None
        octet = data[at]
        if octet < 192:
            length, at = octet, at + 1
        elif octet < 224 and at + 1 < len(data):
            length, at = ((octet - 192) << 8) + data[at + 1] + 192, at + 2
        elif octet == 255 and at + 4 < len(data):
            length, at = int.from_bytes(data[at + 1:at + 5], "big"), at + 5
        else:
            return None  # partial lengths are not used for signatures
    else:
        tag, kind, at = (first >> 2) & 0x0F, first & 0x03, at + 1
        size = {0: 1, 1: 2, 2: 4}.get(kind)
        if size is None or at + size > len(data):
            return None
        length, at = int.from_bytes(data[at:at + size], "big"), at + size
    if at + length > len(data):
        return None
    return tag, data[at:at + length], at + length


def _subpacket_issuers(body: bytes, found: set[str]) -> None:
    """Version 4 signature: version, type, algorithms, then hashed and unhashed subpackets (each
    area's length is 2 octets; 4 in version 6)."""
    width = 4 if body[0] == 6 else 2
    at = 4
    for _area in range(2):
        if at + width > len(body):
            return
        size = int.from_bytes(body[at:at + width], "big")
        area, at = body[at + width:at + width + size], at + width + size
        i = 0
        while i < len(area):
            octet = area[i]
            if octet < 192:
                length, i = octet, i + 1
            elif octet < 255 and i + 1 < len(area):
                length, i = ((octet - 192) << 8) + area[i + 1] + 192, i + 2
            elif i + 4 < len(area):
                length, i = int.from_bytes(area[i + 1:i + 5], "big"), i + 5
            else:
                return
            if length == 0 or i + length > len(area):
                return
            kind, value = area[i] & 0x7F, area[i + 1:i + length]
            if kind == 16 and len(value) == 8:  # issuer key id
                found.add(value.hex().upper())
            elif kind == 33 and len(value) > 1:  # issuer fingerprint, after its key version
                found.add(value[1:].hex().upper())
            i += length
