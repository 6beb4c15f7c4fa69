"""The Clerk simulator, started with this package's settings pointed at it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from .keys import TEST_ORIGIN, _fresh_verifier_override, _test_private_key

if TYPE_CHECKING:
    from ..simulator import ClerkSimulator


def simulator_settings(
    sim: ClerkSimulator, *, authorized_parties: Iterable[str] = (TEST_ORIGIN,)
) -> dict[str, Any]:
    """The settings that point this package at a running ``ClerkSimulator``: the
    Backend API (``CLERK_API_URL``, ``CLERK_SECRET_KEY``), the public JWKS
    (``CLERK_JWKS_URL``), ``CLERK_PUBLISHABLE_KEY``, ``CLERK_JWT_ISSUER`` (named:
    the simulator is ``http://``, the key would say ``https://``),
    ``CLERK_AUTHORIZED_PARTIES``, and ``CLERK_JWT_KEY`` unset (it would win over
    the JWKS)."""
    return {
        "CLERK_API_URL": sim.url,
        "CLERK_SECRET_KEY": sim.secret_key,
        "CLERK_JWKS_URL": sim.jwks_url,
        "CLERK_PUBLISHABLE_KEY": sim.publishable_key,
        "CLERK_JWT_ISSUER": sim.issuer,
        "CLERK_JWT_KEY": None,
        "CLERK_AUTHORIZED_PARTIES": list(authorized_parties),
    }


@contextlib.contextmanager
def clerk_simulator(
    *, authorized_parties: Iterable[str] = (TEST_ORIGIN,), **kwargs: Any
) -> Iterator[ClerkSimulator]:
    """Start a ``ClerkSimulator`` (``kwargs`` are its own), point the settings at it
    (:func:`simulator_settings`) and yield it; on exit the settings are restored,
    every verifier forgotten and the simulator stopped. Its signing key defaults
    to the process's test key, which is quicker than a fresh one."""
    from ..simulator import ClerkSimulator

    kwargs.setdefault("private_key", _test_private_key())
    with ClerkSimulator(**kwargs) as sim:
        values = simulator_settings(sim, authorized_parties=authorized_parties)
        with _fresh_verifier_override()(**values):
            yield sim
