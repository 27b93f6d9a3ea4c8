"""Legal documents attached to requests: hashed, named safely, text extracted for reviewers."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import sys
import unicodedata
from dataclasses import dataclass

from pypdf import PdfReader
from pypdf.errors import PyPdfError

from gateway.mime import ReceivedAttachment

logging.getLogger("pypdf").setLevel(logging.ERROR)

MAX_PAGES = 200
MAX_TEXT_CHARS = 200_000
SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Document:
    attachment: ReceivedAttachment
    stored_name: str
    sha256: str
    text: str | None
    error: str | None

    @property
    def is_pdf(self) -> bool:
        return is_pdf(self.attachment)


def is_pdf(attachment: ReceivedAttachment) -> bool:
    return attachment.content_type == "application/pdf" or (
        (attachment.filename or "").lower().endswith(".pdf")
    )


# Archives are never unpacked, and refused (archive_attachment): what is inside cannot be hashed,
# shown or checked for reviewers, and nested archives are the classic decompression bomb.
ARCHIVE_SUFFIXES = (".zip", ".rar", ".7z", ".tar", ".gz", ".tgz", ".bz2", ".tbz2", ".xz", ".txz", ".zst",
                    ".lz", ".lzma", ".z", ".cab", ".arj", ".lzh", ".ace", ".iso", ".jar")
ARCHIVE_TYPES = {"application/zip", "application/x-zip-compressed", "application/x-rar-compressed",
                 "application/vnd.rar", "application/x-7z-compressed", "application/x-tar",
                 "application/gzip", "application/x-gzip", "application/x-bzip2", "application/x-xz",
                 "application/zstd", "application/x-compress", "application/vnd.ms-cab-compressed",
                 "application/x-iso9660-image", "application/java-archive"}
ARCHIVE_MAGIC = {b"PK\x03\x04": "ZIP", b"PK\x05\x06": "ZIP", b"Rar!\x1a\x07": "RAR",
                 b"7z\xbc\xaf\x27\x1c": "7z", b"\x1f\x8b": "gzip", b"BZh": "bzip2",
                 b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd", b"MSCF": "CAB", b"\x1f\x9d": "compress"}
# Office documents are ZIP files inside; named as such they are kept as opaque documents
OFFICE_SUFFIXES = (".docx", ".xlsx", ".pptx", ".odt", ".ods", ".odp")


def archive_kind(attachment: ReceivedAttachment) -> str | None:
    """The archive format an attachment is in (by its bytes, its name or its declared type), or None.

    The bytes decide first, so an archive named order.pdf is still an archive."""
    name = (attachment.filename or "").lower().rstrip(". ")
    head = attachment.head
    for magic, kind in ARCHIVE_MAGIC.items():
        if head.startswith(magic) and not (kind == "ZIP" and name.endswith(OFFICE_SUFFIXES)):
            return kind
    if head[257:262] == b"ustar":
        return "tar"
    if name.endswith(ARCHIVE_SUFFIXES):
        return name.rsplit(".", 1)[-1]
    if attachment.content_type.lower() in ARCHIVE_TYPES:
        return attachment.content_type.lower()
    return None


def display_name(filename: str | None, limit: int = 120) -> str:
    """An officer's file name as it may be shown to people: line breaks, control and direction
    characters (which can fake a caption or reverse an extension) replaced, length bounded; the
    exact original stays in the record."""
    shown = "".join("?" if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c
                    for c in filename or "")
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def safe_name(filename: str | None, index: int, sha256: str) -> str:
    """A name with no path, control characters or surprises; the original is kept as metadata."""
    base = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = SAFE_NAME.sub("_", base).strip("._")
    stem, dot, suffix = base.rpartition(".")
    if len(base) > 80 and dot and stem and len(suffix) <= 10:  # shortened, keeping the extension
        base = f"{stem[:69].rstrip('._')}.{suffix}"
    return f"{index:02d}-{sha256[:12]}-{base[:80] or 'attachment'}"


def extract_pdf_text(data: bytes, max_pages: int = MAX_PAGES) -> tuple[str | None, str | None]:
    """(text, None) or (None, why not). Never renders; bounded in pages and characters.
    Runs inside `gateway.pdftext`'s process, never in the gateway's own."""
    if not data.startswith(b"%PDF-"):
        return None, "not a PDF file"
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            return None, "the PDF is encrypted"
        chunks: list[str] = []
        total = 0
        for number, page in enumerate(reader.pages):
            if number >= max_pages:
                chunks.append(f"[text extraction stopped after {max_pages} pages]")
                break
            text = page.extract_text() or ""
            chunks.append(text)
            total += len(text)
            if total > MAX_TEXT_CHARS:
                break
        return "\n".join(chunks)[:MAX_TEXT_CHARS], None
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        return None, f"the PDF cannot be read: {type(exc).__name__}"


async def extract_in_subprocess(data: bytes | ReceivedAttachment, seconds: float,
                                max_pages: int) -> tuple[str | None, str | None]:
    """Run `gateway.pdftext` on the bytes (an attachment's fed a chunk at a time, so a spooled
    file is never whole in this process); kill it at the time limit."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.pdftext", str(max_pages), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    attachment = data if isinstance(data, ReceivedAttachment) else ReceivedAttachment(None, "", data)

    async def run() -> bytes:
        assert process.stdout is not None
        output, _ = await asyncio.gather(process.stdout.read(), _feed(process, attachment))
        await process.wait()
        return output

    try:
        output = await asyncio.wait_for(run(), timeout=seconds)
    except TimeoutError:
        process.kill()
        await process.wait()
        return None, f"text extraction took longer than {seconds:g} s and was stopped"
    try:
        result = json.loads(output)
        return result.get("text"), result.get("error")
    except (ValueError, AttributeError):
        return None, f"text extraction failed (exit status {process.returncode})"


async def _feed(process: asyncio.subprocess.Process, attachment: ReceivedAttachment) -> None:
    """Write the file to the extractor's stdin a chunk at a time, then close it; an extractor
    that stopped reading (not a PDF) ends the feeding, not the extraction."""
    assert process.stdin is not None
    pieces = attachment.pieces()
    try:
        while (piece := await asyncio.to_thread(next, pieces, None)) is not None:
            process.stdin.write(piece)
            await process.stdin.drain()
        process.stdin.close()
        await process.stdin.wait_closed()
    except (BrokenPipeError, ConnectionResetError):
        pass


async def prepare_documents(attachments: tuple[ReceivedAttachment, ...], *, seconds: float = 30.0,
                            max_pages: int = MAX_PAGES) -> list[Document]:
    """Hash every attachment (off the event loop) and extract PDF text (in a killable process)."""
    documents = []
    for index, attachment in enumerate(attachments, start=1):
        digest = await asyncio.to_thread(lambda attachment=attachment: attachment.sha256)
        text, error = (None, None)
        if is_pdf(attachment):
            text, error = await extract_in_subprocess(attachment, seconds, max_pages)
        documents.append(Document(attachment, safe_name(attachment.filename, index, digest),
                                  digest, text, error))
    return documents
