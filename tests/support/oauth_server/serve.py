"""Serves the test authorization server with waitress (multi-threaded WSGI) on loopback.

    python serve.py --port 0 --port-file PATH [--threads 32]

With `--port 0` the OS picks a free port; the bound port is written to `--port-file` (atomically, once the socket
listens), so the launcher never races another process for a port. The database must already be migrated
(`manage.py migrate`). Stop it with SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from types import FrameType


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", type=Path)
    parser.add_argument("--threads", type=int, default=32)
    args = parser.parse_args(argv)

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "authserver.settings")
    from django.core.wsgi import get_wsgi_application
    from waitress.server import create_server

    application = get_wsgi_application()
    server = create_server(
        application,
        host=args.host,
        port=args.port,
        threads=args.threads,
        connection_limit=512,
        backlog=1024,
        channel_timeout=60,
        asyncore_use_poll=True,
        ident="test-oauth-as",
    )

    def stop(signum: int, frame: FrameType | None) -> None:
        # waitress's run() catches SystemExit, lets the worker threads finish, and closes the sockets.
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)

    port = int(server.effective_port)  # type: ignore[union-attr]
    if args.port_file is not None:
        partial = args.port_file.with_suffix(".partial")
        partial.write_text(str(port))
        partial.replace(args.port_file)
    print(f"test authorization server listening on http://{args.host}:{port}", flush=True)
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
