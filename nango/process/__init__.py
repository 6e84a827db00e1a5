"""How a service process lives and dies: settings once, logging, uvloop, signals, exit codes.

`serve()` is what every `python -m nango.<service>` calls. SIGTERM or SIGINT sets the `stop` event
the service waits on; the service then stops accepting work, finishes what is in flight and
returns. A second signal exits at once. Exit codes: 0 clean stop, 1 failure, 2 bad settings.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

from nango.config import ProcessSettings, SettingsError, load
from nango.errors import NangoError
from nango.telemetry import configure_logging, configure_tracing, register_secret

log = logging.getLogger(__name__)

S = TypeVar("S", bound=ProcessSettings)


# by then a service has imported and built everything it keeps for its lifetime
SETTLE_SECONDS = 5.0


def settle_garbage_collector() -> None:
    """Move what start-up built (catalogs, models, modules) out of the collector's sight, and collect
    less often: a full collection over that heap costs tens of milliseconds of every request's p99."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


def install_event_loop_policy() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported platform
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def serve(name: str, settings_cls: type[S], run: Callable[[S, asyncio.Event], Awaitable[None]]) -> int:
    """Load settings, then run `run(settings, stop)` until it returns. Returns the exit code."""
    try:
        settings = load(settings_cls)
    except SettingsError as exc:
        print(f"nango {name}: {exc}", file=sys.stderr)
        return SettingsError.exit_code
    configure_logging(name, settings.log_level, settings.log_format)
    register_secret(settings.internal_token.get_secret_value())
    stop_tracing = configure_tracing(name)
    install_event_loop_policy()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal(signum: int) -> None:
            if stop.is_set():
                log.warning("second signal, exiting now", extra={"signal": signal.Signals(signum).name})
                os._exit(130)
            log.info("stopping", extra={"signal": signal.Signals(signum).name})
            stop.set()

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)
        loop.call_later(SETTLE_SECONDS, settle_garbage_collector)
        await run(settings, stop)

    try:
        asyncio.run(main())
    except SettingsError as exc:
        log.error(str(exc))
        return SettingsError.exit_code
    except NangoError as exc:
        log.error("service failed", extra={"code": exc.instance_code, "error": exc.message})
        return 1
    except Exception:
        log.exception("service crashed")
        return 1
    finally:
        if stop_tracing is not None:
            stop_tracing()  # the spans still batched are sent
    log.info("stopped")
    return 0


__all__ = ["install_event_loop_policy", "serve"]
