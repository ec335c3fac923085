"""Page sizes and page tokens (AIP-158).

A page token is opaque to clients: the last key of the page, bound to the
request's other fields and signed, so a forged or reused-with-other-filters
token is refused with INVALID_ARGUMENT instead of returning wrong pages.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from brewmesh.errors import Violations
from brewmesh.storage import Store, Tx

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
MAX_PAGE_TOKEN_CHARS = 1000
"""Longer than any token this server issues: refused before it is hashed."""


@dataclass(frozen=True)
class PageTokens:
    """Signs and checks page tokens with a server secret."""

    secret: bytes

    def encode(self, last_key: str, query: str) -> str:
        body = json.dumps({"k": last_key, "q": _fingerprint(query)}, separators=(",", ":")).encode()
        payload = base64.urlsafe_b64encode(body).decode().rstrip("=")
        return f"{payload}.{self._sign(payload)}"

    def decode(self, v: Violations, token: str, query: str, field: str = "page_token") -> str | None:
        """The last key of the previous page, '' for the first page, None if invalid."""
        if not token:
            return ""
        if len(token) > MAX_PAGE_TOKEN_CHARS:
            v.add(field, f"is {len(token)} characters, not a page token: pass next_page_token unchanged")
            return None
        payload, _, signature = token.partition(".")
        # Bytes, not str: compare_digest refuses non-ASCII text, and a forged token may have some.
        if not hmac.compare_digest(signature.encode(), self._sign(payload).encode()):
            v.add(field, "is not a page token this server issued: pass next_page_token unchanged")
            return None
        body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        if body["q"] != _fingerprint(query):
            v.add(field, "was issued for a request with other fields: keep them the same while paging")
            return None
        return str(body["k"])

    def _sign(self, payload: str) -> str:
        mac = hmac.new(self.secret, payload.encode(), hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")


@dataclass(frozen=True)
class Page:
    """One page of a list: its size, the key it starts after, and the query it is bound to."""

    size: int
    after: str
    query: str

    @property
    def limit(self) -> int:
        """How many rows to fetch: one more than the page, to tell whether another page follows."""
        return self.size + 1

    def finish(self, found: Sequence[T], key: Callable[[T], str], tokens: PageTokens) -> tuple[list[T], str]:
        """The page's items (from up to `limit` found) and the next page token ('' on the last page)."""
        shown = list(found[: self.size])
        more = len(found) > self.size
        return shown, tokens.encode(key(shown[-1]), self.query) if more and shown else ""


class PagedRequest(Protocol):
    """A List request (AIP-158): its page size and token."""

    @property
    def page_size(self) -> int: ...

    @property
    def page_token(self) -> str: ...


async def read_page(
    v: Violations,
    store: Store,
    tokens: PageTokens,
    request: PagedRequest,
    query: str,
    read: Callable[[Tx, str, int], Sequence[T]],
    key: Callable[[T], str],
) -> tuple[list[T], str]:
    """The steps of every List method: check the page (then fail on any violation so far),
    `read(tx, after, limit)` one row more than the page, and make the next page token."""
    page = check_page(v, tokens, request.page_size, request.page_token, query)
    v.raise_if_any()
    found = await store.read(lambda tx: read(tx, page.after, page.limit))
    return page.finish(found, key, tokens)


def paging_query(method: str, **filters: str) -> str:
    """What a page token is bound to: the method and every filter of the request."""
    return json.dumps([method, filters], sort_keys=True)


def check_page(v: Violations, tokens: PageTokens, page_size: int, page_token: str, query: str) -> Page:
    """The page a List request asks for; `query` binds the token to the request's other fields."""
    size = check_page_size(v, page_size)
    return Page(size, tokens.decode(v, page_token, query) or "", query)


def check_page_size(v: Violations, page_size: int, field: str = "page_size") -> int:
    if page_size < 0:
        v.add(field, f"is {page_size}: use 0 for the default ({DEFAULT_PAGE_SIZE}) or 1 to {MAX_PAGE_SIZE}")
        return DEFAULT_PAGE_SIZE
    if page_size == 0:
        return DEFAULT_PAGE_SIZE
    return min(page_size, MAX_PAGE_SIZE)


def _fingerprint(query: str) -> str:
    return hashlib.sha256(query.encode()).hexdigest()[:16]
