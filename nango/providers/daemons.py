"""Background reload of the provider catalog from `PROVIDERS_URL`."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from nango.providers.catalog import CatalogRef, load_catalog
from nango.providers.errors import InvalidProvidersFile
from nango.providers.settings import ProvidersSettings

log = logging.getLogger(__name__)

_MAX_BYTES = 32 * 1024 * 1024


class _FetchFailed(Exception):
    pass


def _display_url(url: str) -> str:
    # The URL may carry a token in its user-info or query; logs get scheme, host and path only.
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.hostname or "", parts.path, "", ""))


class CatalogReloader:
    """Fetches a providers file every `interval_seconds` and swaps it into `ref` when it validates.

    A fetch that fails, or a file that does not parse or validate, keeps the current catalog and
    logs a warning; the loop never stops on a bad file. An unchanged body is not parsed again.
    """

    def __init__(
        self,
        ref: CatalogRef,
        url: str,
        *,
        interval_seconds: float,
        extra_file: Path | None = None,
        timeout_seconds: float = 30.0,
        max_bytes: int = _MAX_BYTES,
    ) -> None:
        self._ref = ref
        self._url = url
        self._interval = interval_seconds
        self._extra_file = extra_file
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._max_bytes = max_bytes
        self._applied_digest: str | None = None
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(cls, settings: ProvidersSettings, ref: CatalogRef) -> CatalogReloader | None:
        """The reloader `PROVIDERS_URL` asks for, or None when it is not set."""
        if settings.providers_url is None:
            return None
        return cls(
            ref,
            settings.providers_url,
            interval_seconds=settings.reload_interval_seconds,
            extra_file=settings.providers_file,
        )

    async def start(self) -> None:
        """Loads the remote file once (so a service starts with it when it is reachable), then loops."""
        if self._task is not None:
            return
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        await self._reload_logged()
        self._task = asyncio.create_task(self._loop(), name="providers-reload")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def reload_once(self) -> bool:
        """One fetch; True when a new catalog was swapped in."""
        try:
            text = await self._fetch()
        except (aiohttp.ClientError, TimeoutError, _FetchFailed) as exc:
            log.warning(
                "could not fetch the providers file, keeping the current catalog",
                extra={"url": _display_url(self._url), "error": str(exc) or type(exc).__name__},
            )
            return False
        digest = hashlib.sha256(text.encode()).hexdigest()
        if digest == self._applied_digest:
            return False
        try:
            catalog = await asyncio.to_thread(
                load_catalog, self._extra_file, text, extra_yaml_source=_display_url(self._url)
            )
        except InvalidProvidersFile as exc:
            log.warning(
                "the providers file is invalid, keeping the current catalog",
                extra={"url": _display_url(self._url), "error": exc.message},
            )
            return False
        self._ref.swap(catalog)
        self._applied_digest = digest
        log.info("provider catalog reloaded", extra={"url": _display_url(self._url), "providers": len(catalog)})
        return True

    async def _fetch(self) -> str:
        if self._session is None:
            raise _FetchFailed("the reloader is not started")
        async with self._session.get(self._url) as response:
            if response.status != 200:
                raise _FetchFailed(f"HTTP {response.status}")
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.content.iter_chunked(64 * 1024):
                size += len(chunk)
                if size > self._max_bytes:
                    raise _FetchFailed(f"larger than {self._max_bytes} bytes")
                chunks.append(chunk)
        try:
            return b"".join(chunks).decode("utf-8")
        except UnicodeDecodeError:
            raise _FetchFailed("not UTF-8 text") from None

    async def _reload_logged(self) -> None:
        try:
            await self.reload_once()
        except Exception:
            # A bug in one reload must neither stop the service starting nor end reloading for good.
            log.exception("provider catalog reload failed", extra={"url": _display_url(self._url)})

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self._reload_logged()


__all__ = ["CatalogReloader"]
