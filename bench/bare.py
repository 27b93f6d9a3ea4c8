"""The ingress baseline: aiosmtpd that answers 250 to every message and does nothing else.

Run as its own process (`python -m bench.bare --port P`) with the same SMTP options as the gateway's
ingress, so the ratio gateway / bare is the cost of storing before answering, not of aiosmtpd.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from aiosmtpd.smtp import SMTP, Envelope, Session


class Nothing:
    """Accept and forget."""

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return "250 2.0.0 OK"


async def serve(port: int, max_message_bytes: int) -> None:
    handler = Nothing()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, data_size_limit=max_message_bytes, enable_SMTPUTF8=True, decode_data=False,
                     hostname="bare.test", ident="bare-aiosmtpd"),
        host="127.0.0.1", port=port)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-message-bytes", type=int, default=26214400)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.max_message_bytes))


if __name__ == "__main__":
    main()
