#!/usr/bin/env python
"""How fast a Clerk session token is verified, against the cryptographic floor,
PyJWT and the official SDK.

Run on demand (it is not part of the test suite); the SDK is a benchmark-only
dependency::

    pip install -e ".[bench]"
    python benchmarks/bench_tokens.py       # --rounds 200 --per-round 50 --pool 2000

In one interleaved run (each round times every contender, in a shuffled order, so
that a noisy neighbour hurts them all alike), on Clerk-shaped v2 session tokens
(RS256, ``kid`` = instance id, ``cat``, ``azp``, ``sts``, an active organization)
minted by the Clerk simulator with one RSA-2048 key:

floor       one ``public_key.verify(signature, signing_input, PKCS1v15(), SHA256())``
            with ``cryptography``: what any RS256 check must pay.
jwt.decode  PyJWT's ``jwt.decode`` with the key already loaded, RS256, 5 s leeway.
SDK         clerk-backend-api's ``authenticate_request`` networkless
            (``AuthenticateRequestOptions(jwt_key=PEM, authorized_parties=...)``).
first seen  our ``SessionTokenVerifier.verify`` on a token it has not seen: every
            check (RS256 only, cat, kid, signature, exp/nbf/iat with leeway, iss
            pinned, azp allow-list, sts), networkless (``CLERK_JWT_KEY``).
seen again  the same, on a token it verified before (browsers reuse one for ~50 s).
parse only  for reference: the floor plus decoding base64 and parsing the JSON claims
            of a fresh token, no rule checked and nothing cached: what any Python
            verifier that reads the claims pays.

"first seen" gets a token the verifier has not seen each time (all of the same shape,
from a pool of ``--pool`` minted tokens; the verified-token cache is emptied before
each round, outside the timing); the others verify one token over and over. Figures
are microseconds per token: the minimum over rounds (the least disturbed: short
rounds, many of them, so that each contender finds quiet moments on a busy machine)
and the median. Ratios are to the floor's minimum.
"""

import argparse
import base64
import gc
import os
import platform
import random
import statistics
import sys
import time
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

FRONTEND = "http://localhost:3000"
CLAIMS = {
    "sts": "active",
    "o": {
        "id": "org_2acmeCorp0000000000000000",
        "slg": "acme",
        "rol": "admin",
        "per": "manage,read",
        "fpm": "3",
    },
    "fea": "o:reports",
    "pla": "o:pro",
}


def version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--per-round", type=int, default=50)
    parser.add_argument("--pool", type=int, default=2000, help="distinct tokens minted")
    args = parser.parse_args(argv)

    import django
    from django.conf import settings

    from django_clerk_sync.simulator import ClerkSimulator

    with ClerkSimulator(rate_limit=None) as sim:
        settings.configure(
            CLERK_JWT_KEY=sim.public_key_pem,
            CLERK_JWT_ISSUER=sim.issuer,
            CLERK_PUBLISHABLE_KEY=sim.publishable_key,
            CLERK_AUTHORIZED_PARTIES=[FRONTEND],
        )
        django.setup()
        run(sim, args)


def run(sim, args):
    import jwt
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    from django_clerk_sync.tokens import build_verifier

    try:
        from clerk_backend_api.security import authenticate_request
        from clerk_backend_api.security.types import (
            AuthenticateRequestOptions,
            AuthStatus,
        )
    except ImportError:
        authenticate_request = None

    rounds, per_round = args.rounds, args.per_round
    print(f"Minting {args.pool + 1} Clerk-shaped session tokens...", flush=True)

    def mint():
        return sim.mint_session_token("user_2benchmarkUser0000000000000", claims=CLAIMS)  # noqa: E731

    token = mint()
    pool = [mint() for _ in range(args.pool)]
    public_key = sim.public_key
    pem = sim.public_key_pem
    header_b64, payload_b64, signature_b64 = token.split(".")
    signing_input = f"{header_b64}.{payload_b64}".encode()
    signature = base64.urlsafe_b64decode(
        signature_b64 + "=" * (-len(signature_b64) % 4)
    )

    verifier = build_verifier()
    cached = build_verifier()
    cached.verify(token)

    class Request:  # what the SDK calls "Requestish"
        headers = {"Authorization": f"Bearer {token}"}

    sdk_options = None
    if authenticate_request is not None:
        sdk_options = AuthenticateRequestOptions(
            jwt_key=pem, authorized_parties=[FRONTEND]
        )
        state = authenticate_request(Request(), sdk_options)
        assert state.status == AuthStatus.SIGNED_IN, state.reason

    def floor(n, _):
        for _ in range(n):
            public_key.verify(
                signature, signing_input, padding.PKCS1v15(), hashes.SHA256()
            )

    def pyjwt(n, _):
        for _ in range(n):
            jwt.decode(
                token,
                public_key,
                algorithms=["RS256"],
                leeway=5,
                options={"verify_aud": False},
            )

    def sdk(n, _):
        request = Request()
        for _ in range(n):
            authenticate_request(request, sdk_options)

    def first_seen(n, batch):
        for t in batch:
            verifier.verify(t)

    def fresh_batch(r):
        """``per_round`` tokens the verifier has not seen, as new string objects
        (whose hash is not computed yet, as for a token read from a request)."""
        verifier.forget_tokens()
        start = (r * per_round) % (len(pool) - per_round)
        return [t[:-1] + t[-1] for t in pool[start : start + per_round]]

    from django_clerk_sync.tokens import _SCAN, _TO_STANDARD_B64, decode_base64

    def parse_only(n, batch):
        # What any Python code that reads the claims pays: the signature check, the
        # base64 and the JSON, with no rule checked and nothing kept.
        for t in batch:
            raw = t.encode("ascii")
            header, payload, sig = raw.translate(_TO_STANDARD_B64).split(b".")
            public_key.verify(
                decode_base64(sig),
                raw[: len(header) + 1 + len(payload)],
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
            _SCAN(decode_base64(payload).decode("utf-8"), 0)

    def seen_again(n, _):
        for _ in range(n):
            cached.verify(token)

    contenders = {
        "floor (cryptography verify)": floor,
        "jwt.decode (PyJWT)": pyjwt,
        "SDK authenticate_request": sdk if sdk_options is not None else None,
        "verify + base64 + JSON only": parse_only,
        "ours, first seen": first_seen,
        "ours, seen again (cached)": seen_again,
    }
    contenders = {k: v for k, v in contenders.items() if v is not None}
    # Sanity: every contender accepts the token.
    assert verifier.verify(pool[0]).user_id and jwt.decode(
        token, public_key, algorithms=["RS256"], options={"verify_aud": False}
    )

    samples = {name: [] for name in contenders}
    order = list(contenders)
    for r in range(rounds):
        random.shuffle(order)
        batch = fresh_batch(r)
        for name in order:
            n = per_round * (20 if "cached" in name else 1)
            gc.collect()
            started = time.perf_counter()
            contenders[name](n, batch)
            samples[name].append((time.perf_counter() - started) / n * 1e6)

    floor_min = min(samples["floor (cryptography verify)"])
    cpus = os.cpu_count()
    print()
    print(
        f"Machine: {platform.system()} {platform.machine()}, {cpus} CPUs, "
        f"{platform.processor() or 'unknown processor'}"
    )
    print(
        f"Python {platform.python_version()}, cryptography {version('cryptography')}, "
        f"PyJWT {version('PyJWT')}, clerk-backend-api {version('clerk-backend-api')}"
    )
    print(
        f"Token: {len(token)} characters; {rounds} rounds x {per_round} verifications "
        "each, interleaved"
    )
    print()
    print(f"{'':30} {'min µs':>9} {'median µs':>10} {'x floor':>8}")
    for name in contenders:
        values = samples[name]
        low, mid = min(values), statistics.median(values)
        print(f"{name:30} {low:9.2f} {mid:10.2f} {low / floor_min:8.2f}")
    first = min(samples["ours, first seen"]) / floor_min
    print()
    print(f"First seen / floor = {first:.2f} (goal: 1.5 or less)")
    if "SDK authenticate_request" in samples:
        sdk_ratio = min(samples["SDK authenticate_request"]) / min(
            samples["ours, first seen"]
        )
        print(f"SDK / ours first seen = {sdk_ratio:.1f}x")


if __name__ == "__main__":
    main()
