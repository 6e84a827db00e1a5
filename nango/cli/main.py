"""`nango up | serve <service> | migrate | keys | init | dryrun | deploy | --version`."""

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
    keys = commands.add_parser("keys", help="encryption keys of stored data")
    key_commands = keys.add_subparsers(dest="keys_command", metavar="<keys command>", required=True)
    key_commands.add_parser("generate", help="print a new random key for NANGO_ENCRYPTION_KEY")
    rotate = key_commands.add_parser(
        "rotate",
        help="re-seal every stored secret with NANGO_ENCRYPTION_KEY (old keys in NANGO_ENCRYPTION_PREVIOUS_KEYS)",
    )
    rotate.add_argument("--batch-size", type=int, default=500)
    init = commands.add_parser("init", help="write an example folder of functions")
    init.add_argument("dir", nargs="?", default="nango-integrations", help="where (default: nango-integrations)")
    init.add_argument("--integration", default="example", help="the integration folder's name (its id)")
    dryrun = commands.add_parser("dryrun", help="run a function once against a connection, writing nothing")
    dryrun.add_argument("function")
    dryrun.add_argument("connection_id")
    dryrun.add_argument("--integration", help="the integration (folder) that defines the function")
    dryrun.add_argument("--input", help="action input, as JSON")
    dryrun.add_argument("--dir", default=".", help="the folder of integrations (default: .)")
    dryrun.add_argument("-e", "--environment", default="dev", help="picks NANGO_SECRET_KEY_<ENV> (default: dev)")
    deploy = commands.add_parser("deploy", help="deploy the functions of DIR/<integration-id>/ to the platform")
    deploy.add_argument("dir", nargs="?", default=".", help="the folder of integrations (default: .)")
    deploy.add_argument("--auto-confirm", action="store_true", help="apply without asking")
    deploy.add_argument("--integration", help="deploy only this integration's folder (deletes nothing)")
    deploy.add_argument("-e", "--environment", default="dev", help="picks NANGO_SECRET_KEY_<ENV> (default: dev)")
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
    if args.command == "keys":
        from nango.cli import keys

        if args.keys_command == "generate":
            return keys.generate()
        return asyncio.run(keys.rotate(args.batch_size))
    if args.command == "init":
        from pathlib import Path

        from nango.cli.init import init

        return init(Path(args.dir), args.integration)
    if args.command == "dryrun":
        from pathlib import Path

        from nango.cli import dryrun

        return asyncio.run(
            dryrun.main(
                args.function,
                args.connection_id,
                directory=Path(args.dir),
                integration=args.integration,
                input_json=args.input,
                environment=args.environment,
            )
        )
    if args.command == "deploy":
        from pathlib import Path

        from nango.cli import deploy

        return asyncio.run(
            deploy.main(
                Path(args.dir),
                integration=args.integration,
                auto_confirm=args.auto_confirm,
                environment=args.environment,
            )
        )
    _parser().print_help()
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
