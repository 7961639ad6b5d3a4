"""Which certificates registration accepts: validity period and key strength.

EVE makes its device certificate itself (``pkg/pillar/cmd/tpmmgr`` ``createDeviceCertTemplate``):
self-signed, an ECDSA P-256 key (in the TPM, or in software without one), valid from one day
before it was made for 20 years.  Adam accepts any certificate that parses; what zedcloud checks
is not public.  The controller takes the stricter reading, since a certificate is a device's
identity from then on:

* the device certificate must be valid now, give or take ``clock_skew``: an expired certificate,
  or one not yet valid, is refused.  A device whose clock was far off when it made its
  certificate is refused with a message saying so, rather than registered with a certificate
  that other tools will reject;
* keys: ECDSA on P-256 or P-384 (what EVE's envelope signatures use), or RSA of at least 2048
  bits with an odd public exponent of at least 3.  Anything else (weaker RSA, other curves,
  Ed25519, DSA) is refused.

The onboarding certificate is allow-listed by its hash by the operator, and EVE images carry the
same one for years, so only its key is checked, not its dates.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa


@dataclass(frozen=True)
class CertPolicy:
    """What registration asks of certificates."""

    min_rsa_bits: int = 2048
    """Smallest RSA modulus accepted (NIST SP 800-131A: 2048 bits since 2014)."""
    ec_curves: tuple[str, ...] = ("secp256r1", "secp384r1")
    """Curves accepted for ECDSA keys, by their SEC 2 names (P-256, P-384)."""
    clock_skew: float = 300.0
    """Seconds by which the device's clock may differ from ours at the validity boundaries."""


class CertRefused(ValueError):
    """The certificate does not meet the policy; the message says how."""


def check_key(cert: x509.Certificate, policy: CertPolicy) -> None:
    """Refuse keys weaker than the policy allows; raises CertRefused."""
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:  # e.g. an RSA exponent below 3
        raise CertRefused(f"unusable public key: {exc}") from exc
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < policy.min_rsa_bits:
            raise CertRefused(
                f"RSA key of {key.key_size} bits (at least {policy.min_rsa_bits} required)"
            )
        exponent = key.public_numbers().e
        if exponent < 3 or exponent % 2 == 0:  # cryptography refuses these too; be explicit
            raise CertRefused(f"RSA public exponent {exponent} is not an odd number of at least 3")
        return
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in policy.ec_curves:
            allowed = ", ".join(policy.ec_curves)
            raise CertRefused(f"EC key on curve {key.curve.name} (accepted: {allowed})")
        return
    raise CertRefused(f"{type(key).__name__} keys are not accepted (ECDSA or RSA only)")


def check_validity(cert: x509.Certificate, now: float, policy: CertPolicy) -> None:
    """Refuse a certificate that is expired or not yet valid at ``now`` (Unix time), allowing
    ``policy.clock_skew`` either way; raises CertRefused."""
    moment = dt.datetime.fromtimestamp(now, dt.UTC)
    skew = dt.timedelta(seconds=policy.clock_skew)
    not_before = cert.not_valid_before_utc
    not_after = cert.not_valid_after_utc
    if moment + skew < not_before:
        raise CertRefused(
            f"not valid before {_iso(not_before)} (now {_iso(moment)}; is the device's clock "
            "ahead?)"
        )
    if moment - skew > not_after:
        raise CertRefused(f"expired on {_iso(not_after)} (now {_iso(moment)})")


def check_device_cert(cert: x509.Certificate, now: float, policy: CertPolicy) -> None:
    """Everything registration asks of a device certificate; raises CertRefused."""
    check_key(cert, policy)
    check_validity(cert, now, policy)


def _iso(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
