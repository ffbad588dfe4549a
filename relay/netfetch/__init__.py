"""The SSRF-safe HTTP fetcher (relay.netfetch.fetcher) and its address policy
(relay.netfetch.addresses). Below relay.chat in the layers: anything that must reach a URL a
user chose (link previews, embed images, Web Push) goes through `fetch`."""

from relay.netfetch.fetcher import (
    Fetched,
    FetchError,
    FetchPolicy,
    Limits,
    Resolver,
    fetch,
    system_resolver,
)

__all__ = ["FetchError", "FetchPolicy", "Fetched", "Limits", "Resolver", "fetch", "system_resolver"]
