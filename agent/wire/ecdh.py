"""ECDH on P-256 as EVE uses it: the full shared point (x, y) and EVE's key derivation.

TPM2_ECDH_ZGen returns the whole point, and EVE's KDF (``Sha256FromECPoint``) hashes both
coordinates; OpenSSL's ECDH returns x only.  :func:`shared_point` recovers y without doing any
arithmetic with the private scalar in Python (it stays inside OpenSSL; see below).  Used by the
controller, the software (no-TPM) ECDH key and the fake TPM.
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.asymmetric import ec


def point_key(point: tuple[int, int], coordinate_size: int = 32) -> bytes:
    """EVE's KDF on an ECDH point (``Sha256FromECPoint``): SHA-256(x || y), each coordinate
    big-endian, left-padded to ``coordinate_size`` bytes.  ValueError for an oversized one."""
    x, y = point
    try:
        raw = x.to_bytes(coordinate_size, "big") + y.to_bytes(coordinate_size, "big")
    except OverflowError as exc:
        raise ValueError("ECDH point coordinate larger than the curve") from exc
    return hashlib.sha256(raw).digest()


# OpenSSL's ECDH returns x only, and EVE's KDF hashes x and y.  y is one of the two square roots
# of x^3 + ax + b; the right one is found without doing secret scalar arithmetic in Python: with
# R = d*Q the shared point and D = d*G our public key, d*(Q + G) = R + D, so the candidate whose
# sum with D has the x that OpenSSL computes for d*(Q + G) is R.  Only public points and the
# shared point are handled here; the private scalar stays inside OpenSSL.

_P256_P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
_P256_A = _P256_P - 3
_P256_B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
_P256_G = (
    0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296,
    0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5,
)

_Point = tuple[int, int]


def _add(p1: _Point, p2: _Point) -> _Point | None:
    p = _P256_P
    x1, y1 = p1
    x2, y2 = p2
    if x1 == x2 and (y1 + y2) % p == 0:
        return None
    if p1 == p2:
        slope = (3 * x1 * x1 + _P256_A) * pow(2 * y1, -1, p) % p
    else:
        slope = (y2 - y1) * pow(x2 - x1, -1, p) % p
    x3 = (slope * slope - x1 - x2) % p
    return x3, (slope * (x1 - x3) - y1) % p


def _exchange_x(private_key: ec.EllipticCurvePrivateKey, point: _Point) -> int:
    peer = ec.EllipticCurvePublicNumbers(point[0], point[1], ec.SECP256R1()).public_key()
    return int.from_bytes(private_key.exchange(ec.ECDH(), peer), "big")


def shared_point(
    private_key: ec.EllipticCurvePrivateKey, peer: ec.EllipticCurvePublicKey
) -> tuple[int, int]:
    """The ECDH shared point d * Q on P-256 (what TPM2_ECDH_ZGen returns), in software."""
    if not isinstance(peer.curve, ec.SECP256R1) or not isinstance(private_key.curve, ec.SECP256R1):
        raise ValueError("ECDH needs P-256 keys")
    p = _P256_P
    q = (peer.public_numbers().x, peer.public_numbers().y)
    x = _exchange_x(private_key, q)
    y = pow((x * x * x + _P256_A * x + _P256_B) % p, (p + 1) // 4, p)  # p = 3 mod 4
    q_plus_g = _add(q, _P256_G)
    own = private_key.public_key().public_numbers()
    if q_plus_g is None:
        raise ValueError("degenerate ECDH peer")
    target = _exchange_x(private_key, q_plus_g)
    for candidate in ((x, y), (x, (p - y) % p)):
        total = _add(candidate, (own.x, own.y))
        if total is not None and total[0] == target:
            return candidate
    raise ValueError("ECDH point could not be recovered")
