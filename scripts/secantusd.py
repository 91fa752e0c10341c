"""Starts SecantusDB (the MongoDB-wire test server) with its retryable-write bookkeeping
made O(1) per write; the arguments are secantusd-py's own.

SecantusDB keeps the reply of every retryable write (drivers send each write with a
txnNumber, so that is every write) for 30 minutes, capped at 10,000 records, and prunes
that map on every write: a scan of all of it, and once the cap is reached a sort of all
of it. Past 10,000 writes, which the test suite reaches early, each write then costs
about 20 ms of the server's one Python interpreter (0.8 ms before), and a multi-process
test is bound by it. Here the prune runs at most once a second and the records live two
minutes, longer than any driver retry (a retry follows within one server selection,
seconds). Replies and their replay are untouched, so retryable writes behave as they do
on mongod.

Usage: python scripts/secantusd.py --host 127.0.0.1 --port 27017 --storage-path :memory:
"""

import sys
import time

from secantus import transactions
from secantus.cli import main

transactions._RETRYABLE_RECORD_LIFETIME_SECONDS = 120.0

_prune = transactions.TransactionRegistry._prune_retryable_locked
_PRUNE_EVERY_SECONDS = 1.0


def _prune_at_most_once_a_second(self):
    now = time.monotonic()
    if now - getattr(self, "_last_retryable_prune", 0.0) >= _PRUNE_EVERY_SECONDS:
        self._last_retryable_prune = now
        _prune(self)


transactions.TransactionRegistry._prune_retryable_locked = _prune_at_most_once_a_second

if __name__ == "__main__":
    sys.argv[0] = "secantusd-py"
    sys.exit(main())
