"""The Message-ID header of an inbound message, for display and threading hints only (outer
headers are not covered by the signature).

The stdlib's header parser is the reference; it cost more per message at SMTP ingress than
aiosmtpd's whole transaction, so a header block of plain ASCII header lines (what mail servers
send) is read with two regular expressions instead, and anything else goes to the parser.
"""

from __future__ import annotations

import re
from email.parser import BytesHeaderParser
from email.policy import compat32

HEAD = 65536  # the parser is given this much, as before
# the end of the header block: the first empty line
_BLANK = re.compile(rb"\r?\n\r?\n")
# header lines the parser reads the same way: a non-empty name up to the colon (the parser's
# `headerRE` without "From "), continuation lines; CRLF or LF endings, no lone CR
_PLAIN = re.compile(rb"(?:[\041-\071\073-\176]+:[^\r\n]*\r?\n(?:[\t ][^\r\n]*\r?\n)*)*")
_FIELD = re.compile(rb"^message-id:[\t ]*([^\r\n]*(?:\r?\n[\t ][^\r\n]*)*)", re.IGNORECASE | re.MULTILINE)


def header_message_id(raw: bytes) -> str | None:
    """The first Message-ID, unfolded, without any whitespace, at most 998 characters."""
    head = raw[:HEAD]
    blank = _BLANK.search(head)
    if blank is not None:
        block = head[:blank.start() + (2 if head[blank.start()] == 13 else 1)]  # with its line end
        if block.isascii() and _PLAIN.fullmatch(block):
            found = _FIELD.search(block)
            value = found.group(1).decode("ascii") if found else ""
            return "".join(value.split())[:998] if value else None
    return parsed_message_id(raw)


def parsed_message_id(raw: bytes) -> str | None:
    """The same by the stdlib's parser (any input)."""
    headers = BytesHeaderParser(policy=compat32).parsebytes(raw[:HEAD], headersonly=True)
    value = headers.get("Message-ID")
    return "".join(str(value).split())[:998] if value else None  # unfolded, no whitespace at all
