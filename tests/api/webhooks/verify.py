"""Verifies webhook deliveries with the Standard Webhooks reference library (`standardwebhooks`),
not with anything of keyledger's. Reads a JSON list of cases from the file named by argv[1]:
{"name", "secret", "headers", "body", "clock_offset" (seconds added to the verifier's clock),
"expect": true|false}. Prints one line per case and exits 1 when any case is not as expected."""

import datetime as real_datetime
import json
import sys

import standardwebhooks.webhooks as library
from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def with_clock(offset):
    """The library reads `datetime.now` for its ±5 minute tolerance: shift it by `offset`."""

    class Shifted(real_datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return real_datetime.datetime.now(tz) + real_datetime.timedelta(seconds=offset)

    library.datetime = Shifted


def main():
    cases = json.load(open(sys.argv[1]))
    failures = 0
    for case in cases:
        with_clock(case.get("clock_offset", 0))
        try:
            Webhook(case["secret"]).verify(case["body"], case["headers"])
            verified = True
        except (WebhookVerificationError, ValueError) as error:
            verified = False
            reason = str(error)
        ok = verified == case["expect"]
        failures += not ok
        detail = "" if verified else f" ({reason})"
        print(f"{'ok' if ok else 'UNEXPECTED'} {case['name']}: verified={verified}{detail}")
    sys.exit(1 if failures else 0)


main()
