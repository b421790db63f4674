"""``python -m bench.otlp_sink --port N``: an OTLP/HTTP collector stand-in for the tracing
round of ``make bench``. Reads each request and answers 200 with an empty body (an empty
``ExportTraceServiceResponse``); counts the requests and bytes it got, on SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal

_counts = {"requests": 0, "bytes": 0}


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            _counts["requests"] += 1
            _counts["bytes"] += length
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\n"
                b"content-length: 0\r\n\r\n"
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def _main(port: int) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    server = await asyncio.start_server(_handle, "127.0.0.1", port)
    async with server:
        await stop.wait()
    print(f"otlp_sink: {_counts['requests']} exports, {_counts['bytes']} bytes", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(_main(parser.parse_args().port))
