"""Gateway keys: clients send ``Authorization: Bearer <key>``; the config holds only sha256 digests.

A key's id is the first 12 hex characters of its digest: enough to tell keys apart in spans and the
trace store, useless for guessing the key. With no digests configured the proxy is open.
"""

from __future__ import annotations

import hashlib

from gateway.llm.errors import AuthenticationError
from gateway.llm.routes_config import AuthSettings

KEY_ID_CHARS = 12


def key_id(digest: str) -> str:
    return digest[:KEY_ID_CHARS]


class GatewayKeys:
    """Checks the ``Authorization`` header of a request against the configured digests."""

    def __init__(self, settings: AuthSettings) -> None:
        self._digests = settings.key_hashes

    def authenticate(self, authorization: str | None) -> str | None:
        """The key id of a valid key, None when auth is off; AuthenticationError (401) otherwise."""
        if not self._digests:
            return None
        if not authorization:
            raise AuthenticationError(
                "Missing gateway key: send the header 'Authorization: Bearer <key>'.", code="missing_api_key"
            )
        scheme, _, key = authorization.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise AuthenticationError(
                "Malformed Authorization header: expected 'Bearer <key>'.", code="invalid_api_key"
            )
        # Comparing digests (not keys) in a set: the lookup time says nothing about the key.
        digest = hashlib.sha256(key.encode()).hexdigest()
        if digest not in self._digests:
            raise AuthenticationError("Invalid gateway key.", code="invalid_api_key")
        return key_id(digest)
