"""The registry of fuzz targets: every parser that takes bytes from outside the process.

A :class:`Target` names a parser, its contract and the errors it declares.  The contract is the
same for all: for ANY input the call returns, or raises one of ``allowed`` (the module's own
error types); anything else (IndexError, KeyError, TypeError, UnicodeDecodeError,
RecursionError, struct.error, a protobuf DecodeError the module does not declare, MemoryError,
a controller ApiError of status 500 or more) is a crash.  Hangs are caught by the runner's time
limit per input.  ``prepare()`` builds the call and its inputs once: valid seeds to mutate and
structure-aware generators (protobuf messages with hostile values, gzip members of hostile
content, re-signed quotes over hostile TPM structures).

The targets are defined in tests/fuzz/agent_targets.py and tests/fuzz/controller_targets.py
(valid inputs in seeds.py, generators in mutate.py, the shared types in base.py).  Used by
tests/unit/test_fuzz_parsers.py (Hypothesis, a few hundred inputs per target) and by
tools/fuzz.py (``make fuzz``: a million inputs).
"""

from __future__ import annotations

from tests.fuzz.agent_targets import AGENT_TARGETS
from tests.fuzz.base import Prepared, Target, check, generate
from tests.fuzz.controller_targets import CONTROLLER_TARGETS

TARGETS: tuple[Target, ...] = AGENT_TARGETS + CONTROLLER_TARGETS
BY_NAME = {t.name: t for t in TARGETS}

__all__ = ["BY_NAME", "TARGETS", "Prepared", "Target", "check", "generate"]
