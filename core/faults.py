"""Fault points: places where a test makes a process die on purpose.

Each point is one boolean setting ``TB_FAULTS_<POINT>`` (all off by default). Only the
test suite turns them on; ``load_settings`` refuses any of them when ``TB_ENV=prod``.
A point that is on ends the process at once (``os._exit``, no cleanup, no reply), which
is what a crash or an OOM kill of the pod does.

Points of the purchase path (``api/orders/service.py``):

- ``crash_after_confirm``: the hold is confirmed in Redis (seats sold-pending under the
  order id), the buyer's pending record is not written yet;
- ``crash_after_pending_record``: the pending record is written, ``OrderPlaced`` is not
  published yet;
- ``crash_before_reply``: ``OrderPlaced`` is published, the 202 is not sent yet.
"""

from __future__ import annotations

import logging
import os
from typing import Final, Literal

import msgspec

FaultPoint = Literal["crash_after_confirm", "crash_after_pending_record", "crash_before_reply"]

# The exit code of a process that a fault point ended (sysexits' EX_SOFTWARE).
CRASH_EXIT_CODE: Final = 70

log = logging.getLogger("ticketbuster.faults")


class FaultSettings(msgspec.Struct, frozen=True):
    crash_after_confirm: bool = False
    crash_after_pending_record: bool = False
    crash_before_reply: bool = False

    def enabled(self) -> list[str]:
        """The names of the points that are on."""
        return [name for name in self.__struct_fields__ if getattr(self, name)]


def reach(faults: FaultSettings, point: FaultPoint) -> None:
    """Die here if ``point`` is on; a no-op otherwise."""
    if getattr(faults, point):
        log.critical("fault point %s reached: the process ends now", point)
        logging.shutdown()
        os._exit(CRASH_EXIT_CODE)
