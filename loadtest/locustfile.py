"""Flash-sale scenarios for locust. Each lives in a module named after what it plays.

Run: ``bash loadtest/run.sh`` (``make loadtest``), or by hand:
``uv run locust -f loadtest/locustfile.py --headless -u 200 -r 50 -t 60s
--host http://127.0.0.1:8000``. Pick scenarios by class name on the command line.
"""

from loadtest.best_available import BestAvailableBuyer
from loadtest.browse import Browser
from loadtest.hold_and_buy import HoldAndBuyBuyer
from loadtest.hot_seats import HotSeatFan
from loadtest.scalper import Scalper

__all__ = ["BestAvailableBuyer", "Browser", "HoldAndBuyBuyer", "HotSeatFan", "Scalper"]
