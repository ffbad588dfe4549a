"""Runtime: the explicit dependencies that routes and listeners are built with.

Created by `create_app` before the server runs; `services.run` fills in the parts that need
I/O (the store, the account service, the actor registry) during start-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from actors import Registry
    from relay.accounts import Accounts
    from relay.config import Settings
    from relay.storage.db import Store


class NotStarted(RuntimeError):
    """A route ran before start-up finished (it cannot, under hypercorn's lifespan)."""


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._store: Store | None = None
        self._accounts: Accounts | None = None
        self._registry: Registry[Any] | None = None

    def attach(self, store: Store, accounts: Accounts, registry: Registry[Any]) -> None:
        self._store, self._accounts, self._registry = store, accounts, registry

    def detach(self) -> None:
        self._store = self._accounts = self._registry = None

    @property
    def ready(self) -> bool:
        return self._store is not None

    @property
    def store(self) -> Store:
        if self._store is None:
            raise NotStarted("the store is not open")
        return self._store

    @property
    def accounts(self) -> Accounts:
        if self._accounts is None:
            raise NotStarted("the account service is not running")
        return self._accounts

    @property
    def registry(self) -> Registry[Any]:
        if self._registry is None:
            raise NotStarted("the actor registry is not running")
        return self._registry
