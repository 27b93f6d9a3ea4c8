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
# the end of the header block: the first empty line (`header_end` finds it without a regex)
BLANK = re.compile(rb"\r?\n\r?\n")
# header lines the parser reads the same way: a non-empty name up to the colon (the parser's
# `headerRE` without "From "), continuation lines; CRLF or LF endings, no lone CR
_PLAIN = re.compile(rb"(?:[\041-\071\073-\176]+:[^\r\n]*\r?\n(?:[\t ][^\r\n]*\r?\n)*)*")
_FIELD = re.compile(rb"^message-id:[\t ]*([^\r\n]*(?:\r?\n[\t ][^\r\n]*)*)", re.IGNORECASE | re.MULTILINE)


def header_message_id(raw: bytes) -> str | None:
    """The first Message-ID, unfolded, without any whitespace, at most 998 characters."""
    head = raw[:HEAD]
    end = header_end(head)
    if end >= 0:
        block = head[:end]
        if block.isascii() and _PLAIN.fullmatch(block):
            found = _FIELD.search(block)
            value = found.group(1).decode("ascii") if found else ""
            return "".join(value.split())[:998] if value else None
    return parsed_message_id(raw)


def header_end(head: bytes) -> int:
    """Where the header block ends with its last line's end (one past the LF before the empty
    line), as `BLANK.search` would place it; -1 without an empty line. Two substring searches:
    the regex, which cannot skip ahead to a literal, cost more than the rest of the function."""
    crlf = head.find(b"\n\r\n")
    lf = head.find(b"\n\n", 0, len(head) if crlf < 0 else crlf + 1)
    first = lf if lf >= 0 else crlf
    return first + 1 if first >= 0 else -1


def parsed_message_id(raw: bytes) -> str | None:
    """The same by the stdlib's parser (any input)."""
    headers = BytesHeaderParser(policy=compat32).parsebytes(raw[:HEAD], headersonly=True)
    value = headers.get("Message-ID")
    return "".join(str(value).split())[:998] if value else None  # unfolded, no whitespace at all
