"""Schemathesis hooks of the contract test (tests/api/contract.rs).

The contract (openapi/openapi.json) states what the server checks, so every schema-valid request
is accepted and every schema-invalid one refused. A few rules cannot be stated by any schema,
because they depend on what the server has stored or compare two values with each other;
schemathesis, generating requests from the schema alone, breaks them by chance. The one hook
below drops exactly those refusals of schema-valid requests, recognised by the error the server
answers, and nothing else. Every other failure of every check fails the test.
See docs/adr/0018-the-contract-states-what-the-server-checks.md.
"""

import ast
import itertools
import os
import re
import threading
from collections.abc import MutableMapping

import schemathesis

# `ast.parse` one thread at a time. CPython before 3.13 keeps the AST constructor's recursion
# counter in interpreter-wide state, so two threads parsing at once (hypothesis parses source to
# describe a strategy's lambdas, and the test runs two workers) can fail one of them with
# "SystemError: AST constructor recursion depth mismatch" (python/cpython#106905), a runtime
# error of the tool that says nothing about the server. Re-entrant, so that a parse started
# from inside a parse on the same thread (a warning or a finalizer that parses) cannot wait on
# itself.
_ast_parse = ast.parse
_ast_lock = threading.RLock()


def _serial_ast_parse(*args, **kwargs):
    with _ast_lock:
        return _ast_parse(*args, **kwargs)


ast.parse = _serial_ast_parse

# The contract's If-Match pattern (src/http/schema.rs, `if_match`).
IF_MATCH = re.compile(r'^(\*|"(0|[1-9][0-9]{0,18})")$')

# Where each dropped failure is recorded (its reason, one line each), for the test to report.
DROPPED_LOG = os.environ.get("KEYLEDGER_CONTRACT_DROPPED")


def _error(response):
    try:
        body = response.json()
    except Exception:
        return {}
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def _state_dependent(case, code, param, message):
    """Why the server refused a schema-valid request for a reason no schema can state."""
    # An idempotency key is used once per request: a key this run already sent with another
    # request is refused. Generated keys repeat ("0", "00"…) across requests.
    if code == "idempotency_key_reused":
        return "idempotency key reused"
    # The Idempotency-Key header and the idempotency_key body field, when both are given, must
    # be the same key: a relation between two values, which a schema cannot state.
    if code == "invalid_parameter" and param == "idempotency_key" and "differ" in message:
        return "idempotency key header and field differ"
    # Cursors are opaque and minted by the server; a generated one was never issued. Real ones
    # reach the next request through the `next_page` links.
    if code == "invalid_query" and param == "cursor":
        return "cursor not issued by the server"
    # Which of base_url, declared_region and credentials an update takes depends on the stored
    # credential's provider, which the update body does not name.
    if (
        case.method.upper() == "PATCH"
        and case.operation.path == "/v1/byok/update/{id}"
        and code == "invalid_parameter"
        and (param in ("base_url", "declared_region", "credentials") or param.startswith("credentials."))
    ):
        return "update field not taken by this credential's provider"
    # A model in blacklisted_models cannot be a key of model_map: a relation between two fields
    # (on update, between the body and the stored credential).
    if code == "invalid_parameter" and (
        (param.startswith("model_map.") and "blacklisted_models" in message)
        or (param == "blacklisted_models" and "model_map" in message)
    ):
        return "model_map key denied by blacklisted_models"
    # The coverage phase sends an optional header with values outside its declared pattern and
    # still counts the request as schema-valid; an If-Match the pattern refuses is refused here.
    if code == "invalid_header" and param == "If-Match":
        value = (case.headers or {}).get("If-Match")
        if value is not None and not IF_MATCH.match(value):
            return "If-Match outside its declared pattern, sent as schema-valid"
    # Money is whole micro-dollars: at most 6 decimals. JSON Schema's multipleOf cannot state a
    # decimal precision of a binary float (3 × 0.000001 is not a float multiple of 0.000001), so
    # the schema gives the range and the description the precision.
    if code == "invalid_parameter" and param == "spend_limit_usd" and "6 decimals" in message:
        return "an amount of dollars with more than 6 decimals"
    # A service-account key file is a JSON document inside a string (contentMediaType and
    # contentSchema); schemathesis fills such strings with arbitrary JSON, ignoring contentSchema.
    if code == "invalid_parameter" and param == "credentials.service_account_json":
        return "service-account key file generated without its contentSchema"
    # Whether a webhook URL may be reached depends on where its name resolves, on the network the
    # server runs in (docs/adr/0029): a schema-valid URL whose name does not resolve, or resolves
    # to a private address, is refused.
    if (
        case.operation.path.startswith("/v1/webhooks")
        and code == "invalid_parameter"
        and param == "url"
        and "is refused" in message
    ):
        return "webhook URL refused by the outbound policy on this network"
    return None


def _dropped(case, reason):
    if DROPPED_LOG:
        with open(DROPPED_LOG, "a", encoding="utf-8") as log:
            log.write(f"{case.method.upper()} {case.operation.path}: {reason}\n")


@schemathesis.hook
def filter_failure(context, failure, case, response):
    # The HTTP layer answers a bare 408, without a body, when a request's headers have not
    # arrived within 5 seconds (docs/errors.md): no handler ran, so the answer says nothing of
    # the contract. On the suite's loaded 2 cores a request can wait that long; each one is
    # reported with the dropped failures.
    if response is not None and response.status_code == 408 and not response.content:
        _dropped(case, "bare 408 of the HTTP layer: the headers took over 5 s to arrive")
        return False
    # Only refusals of schema-valid requests (positive_data_acceptance) are ever dropped.
    if getattr(failure, "code", None) != "ST202":
        return True
    error = _error(response)
    code = str(error.get("code", ""))
    param = str(error.get("param", ""))
    message = str(error.get("message", ""))
    reason = _state_dependent(case, code, param, message)
    if reason is None:
        return True
    _dropped(case, reason)
    return False


# The feeds' long poll waits up to `wait` seconds (at most 30) for an event that, in this run,
# may never come. Waits of 2 to 30 seconds are shortened to 1 second, which is as valid: the
# run stays bounded in time, and waits outside 0 to 30 still reach the server as generated.
FEEDS = ("/v1/events", "/v1/byok/events/{id}")


# An idempotency key names one request: generated keys repeat ("0", "00"…), and a key sent
# again with another request is refused, so most schema-valid mutations would be answered that
# refusal and never run. In schema-valid cases each key gets its end replaced by a counter (a
# key shorter than the counter is lengthened to hold it: still 1 to 255 printable characters),
# so that it names this request only; a key in both the header and the body is the same in
# both, as the description of `idempotency_key` asks.
_SERIAL = itertools.count(1)


def _fresh(key):
    if not isinstance(key, str) or not key:
        return key
    tag = "." + format(next(_SERIAL), "x")
    return key[: max(len(key) - len(tag), 1)] + tag


def _unique_idempotency_keys(case):
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return
    headers = case.headers if isinstance(case.headers, MutableMapping) else {}
    body = case.body if isinstance(case.body, MutableMapping) else {}
    header = headers.get("Idempotency-Key")
    field = body.get("idempotency_key")
    if isinstance(header, str):
        headers["Idempotency-Key"] = _fresh(header)
    if isinstance(field, str):
        body["idempotency_key"] = headers["Idempotency-Key"] if isinstance(header, str) else _fresh(field)


@schemathesis.hook
def before_call(context, case, kwargs):
    query = case.query
    if case.operation.path in FEEDS and isinstance(query, MutableMapping):
        wait = query.get("wait")
        if isinstance(wait, int) and not isinstance(wait, bool) and 2 <= wait <= 30:
            query["wait"] = 1
    _unique_idempotency_keys(case)
