"""What every fuzz target is made of (:class:`Target`, :class:`Prepared`), the helpers the
target modules share, and the two things the runners do with a target: :func:`check` one input
against its contract, :func:`generate` one input."""

from __future__ import annotations

import atexit
import base64
import random
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding
from google.protobuf.message import Message

from agent.wire import pki
from controller.api.common import ApiError
from tests.fuzz.mutate import hostile_message, mutate, nested_message

Generator = Callable[[random.Random], bytes]


class ContractViolation(AssertionError):
    """A call broke its contract without an exception of its own (a 5xx ApiError, say)."""


@dataclass(frozen=True)
class Prepared:
    """A target's call and inputs, built once."""

    call: Callable[[bytes], object]
    seeds: tuple[bytes, ...]
    generators: tuple[Generator, ...] = ()


@dataclass(frozen=True)
class Target:
    name: str
    #: What the parser promises, in one line (docs/development.md lists these).
    contract: str
    #: The errors the parser declares; any other exception is a crash.
    allowed: tuple[type[BaseException], ...]
    prepare: Callable[[], Prepared] = field(repr=False)


def proto_generators(message_type: type[Message]) -> tuple[Generator, ...]:
    return (
        lambda rng: hostile_message(message_type, rng),
        lambda rng: nested_message(message_type, rng),
    )


def client_error(call: Callable[[bytes], object]) -> Callable[[bytes], object]:
    """``call`` with a controller ApiError of status 500 or more turned into a violation: an
    endpoint answers a bad payload with a 4xx, a 5xx is always a controller bug."""

    def wrapped(data: bytes) -> object:
        try:
            return call(data)
        except ApiError as exc:
            if exc.status >= 500:
                raise ContractViolation(f"ApiError {exc.status}: {exc.reason}") from exc
            raise

    return wrapped


def pem_of(der: bytes) -> bytes:
    """``der`` armoured as a PEM certificate, whatever it holds."""
    body = base64.encodebytes(der)
    return b"-----BEGIN CERTIFICATE-----\n" + body + b"-----END CERTIFICATE-----\n"


def der_of(pem: bytes) -> bytes:
    return pki.load_cert(pem).public_bytes(Encoding.DER)


def sometimes(generator: Generator, seeds: Sequence[bytes], share: float) -> Generator:
    """``generator`` for ``share`` of the inputs, mutated seeds for the rest (a slow generator:
    deep YAML takes the parser most of a second)."""
    return lambda rng: generator(rng) if rng.random() < share else mutate(seeds, rng)


def scratch_dir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="eve-fuzz-"))
    atexit.register(shutil.rmtree, path, True)
    return path


def check(target: Target, prepared: Prepared, data: bytes) -> BaseException | None:
    """Run one input; the exception that breaks the contract, or None."""
    try:
        prepared.call(data)
    except target.allowed:
        return None
    except Exception as exc:  # noqa: BLE001 - every other exception is the finding
        return exc
    return None


def generate(prepared: Prepared, rng: random.Random) -> bytes:
    """One input: mostly a mutated seed, else a structure-aware generator or random bytes."""
    roll = rng.random()
    if roll < 0.55 or (roll < 0.9 and not prepared.generators):
        return mutate(prepared.seeds, rng)
    if roll < 0.9:
        return rng.choice(prepared.generators)(rng)
    if roll < 0.95:
        return rng.choice(prepared.seeds)
    return rng.randbytes(rng.choice((0, 1, 2, 4, 16, 100, 1000)))
