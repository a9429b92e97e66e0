"""One shape for things that start and stop: ``async with`` calls ``start`` and ``stop``."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class StartStop:
    """Mixin: subclasses define ``start`` and ``stop``; ``async with`` brackets them."""

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
