"""Extract a PDF's text in a process of its own: `python -m gateway.pdftext MAX_PAGES < file.pdf`.

PDFs from outside are parsed, never rendered, and never in the gateway's own process: a PDF that
makes the parser loop or swell is killed at the time limit (and capped in memory) without
touching the gateway. The result is one JSON object on stdout: {"text": ..., "error": ...}.
"""

from __future__ import annotations

import json
import resource
import sys

MEMORY_LIMIT = 1024 * 1024 * 1024  # 1 GiB of address space for the parser


def main() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    from gateway.documents import extract_pdf_text  # after the limit: pypdf loads under it

    max_pages = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    try:
        text, error = extract_pdf_text(sys.stdin.buffer.read(), max_pages=max_pages)
    except MemoryError:
        text, error = None, "the PDF needs too much memory to read"
    json.dump({"text": text, "error": error}, sys.stdout)


if __name__ == "__main__":
    main()
