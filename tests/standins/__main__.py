"""``python -m tests.standins [--host H] [--port N]``: serve the stand-ins until SIGTERM.

Prints the bound URL (``http://127.0.0.1:N``) as its first stdout line once it listens;
``--port 0`` (the default) picks a free port.
"""

from __future__ import annotations

import argparse
import asyncio

from tests.standins.server import free_port, serve_forever


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.standins", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    args = parser.parse_args(argv)
    port = args.port or free_port(args.host)
    try:
        import uvloop  # optional speed-up, as in ``ipaas serve``
    except ImportError:
        asyncio.run(serve_forever(args.host, port))
    else:
        uvloop.run(serve_forever(args.host, port))


if __name__ == "__main__":
    main()
