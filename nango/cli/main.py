"""`nango up | serve <service> | migrate | --version`."""

from __future__ import annotations

import argparse
import asyncio
import runpy
import sys

from nango import __version__

SERVICES = ("server", "orchestrator", "jobs", "runner", "persist")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nango", description="Self-hosted integrations platform (Nango-compatible).")
    parser.add_argument("--version", action="version", version=f"nango {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="<command>")
    commands.add_parser("up", help="run the whole platform on this machine (embedded defaults)")
    serve = commands.add_parser("serve", help="run one service in the foreground (for containers)")
    serve.add_argument("service", choices=SERVICES)
    commands.add_parser("migrate", help="apply database migrations of every service, then exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "up":
        from nango.launcher import main as up

        return up()
    if args.command == "serve":
        sys.argv = [f"nango serve {args.service}"]
        try:
            runpy.run_module(f"nango.{args.service}", run_name="__main__", alter_sys=True)
        except SystemExit as exc:
            return int(exc.code or 0)
        return 0
    if args.command == "migrate":
        from nango.cli.migrate import migrate_all

        return asyncio.run(migrate_all())
    _parser().print_help()
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
