"""Drives keyledger's whole lifecycle through a client generated from openapi/openapi.json.

Run by tests/api/client.rs as `python client_lifecycle.py BASE_URL ADMIN_TOKEN`, with the
generated package `keyledger_client` on PYTHONPATH (openapi-python-client, `--meta none`). It
imports nothing but that package and the standard library, uses the generated models for every
request and answer, and exits non-zero on the first mismatch.
"""

import sys
from http import HTTPStatus

from keyledger_client import AuthenticatedClient
from keyledger_client.api.accounts import create_account, get_account
from keyledger_client.api.byok import (
    disable_credential,
    enable_credential,
    get_credential,
    list_credentials,
    list_providers,
    register_credential,
    revoke_credential,
    update_credential,
)
from keyledger_client.api.events import list_credential_events
from keyledger_client.api.keys import create_api_key, list_api_keys, revoke_api_key
from keyledger_client.models import (
    Account,
    AccountCreate,
    AccountCreated,
    ApiKey,
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyList,
    ByokConfig,
    ByokKey,
    ByokList,
    ByokRegisterApiKey,
    ByokRegisterApiKeyProvider,
    ByokRegisterOpenai,
    ByokRegisterOpenaiCredentials,
    ByokRegisterOpenaiProvider,
    ByokUpdate,
    CredentialState,
    ErrorEnvelope,
    ErrorType,
    Event,
    EventPage,
    IdempotencyOptions,
    ProviderList,
    Scope,
)
from keyledger_client.types import Unset

OPENAI_SECRET = "sk-client-test-0123456789abcdefWXYZ"
ANTHROPIC_SECRET = "sk-ant-client-test-0123456789abcdefQRST"


class Mismatch(Exception):
    pass


def check(condition, what):
    if not condition:
        raise Mismatch(what)


def expect(response, status, model):
    """Checks a generated `Response`: its status, its parsed model, and the request id header."""
    check(
        response.status_code == status,
        f"expected {status}, got {response.status_code}: {response.content!r}",
    )
    check(
        isinstance(response.parsed, model),
        f"expected a {model.__name__}, got {type(response.parsed).__name__}",
    )
    check(
        response.headers.get("x-request-id", "").startswith("req_"),
        "no X-Request-ID header",
    )
    return response.parsed


def expect_error(response, status, error_type, code):
    """Checks that an error answers the documented envelope, parsed into the generated models."""
    envelope = expect(response, status, ErrorEnvelope)
    error = envelope.error
    check(error.type_ == error_type, f"error type {error.type_!r}, want {error_type!r}")
    check(error.code == code, f"error code {error.code!r}, want {code!r}")
    check(bool(error.message), "empty error message")
    check(
        error.request_id == response.headers["x-request-id"],
        "the envelope's request_id differs from X-Request-ID",
    )
    return error


def etag(revision):
    return f'"{revision}"'


def expect_config(response, status=HTTPStatus.OK):
    config = expect(response, status, ByokConfig)
    check(isinstance(config.revision, int), "revision is not an int")
    # Mutations and reads alike answer the revision in ETag.
    check(
        response.headers.get("etag") == etag(config.revision),
        f"ETag {response.headers.get('etag')!r} for revision {config.revision}",
    )
    for secret in (OPENAI_SECRET, ANTHROPIC_SECRET):
        check(secret.encode() not in response.content, "a secret came back")
    return config


def main(base_url, admin_token):
    admin = AuthenticatedClient(
        base_url=base_url, token=admin_token, raise_on_unexpected_status=True
    )

    # Account, with the admin token; its first key is shown once.
    created = expect(
        create_account.sync_detailed(
            client=admin, body=AccountCreate(email="generated-client@example.com")
        ),
        HTTPStatus.CREATED,
        AccountCreated,
    )
    check(created.account_id.startswith("acct_"), f"account id {created.account_id}")
    check(created.shown_once is True, "shown_once")
    check(created.api_key.startswith("kl_"), "api_key")
    check(isinstance(created.key, ApiKey), "key is not an ApiKey")
    check(
        created.key.scopes == [Scope.ADMIN, Scope.WRITE, Scope.READ], f"scopes {created.key.scopes}"
    )
    check(created.key.prefix == created.api_key[:12], "prefix")
    check(created.key.revoked_at is None, "a new key is revoked")

    account = AuthenticatedClient(
        base_url=base_url, token=created.api_key, raise_on_unexpected_status=True
    )
    me = expect(get_account.sync_detailed(client=account), HTTPStatus.OK, Account)
    check(me.account_id == created.account_id, "GET /v1/account answers another account")
    check(me.email == "generated-client@example.com", f"email {me.email}")

    # The admin token only creates accounts.
    expect_error(
        get_account.sync_detailed(client=admin),
        HTTPStatus.FORBIDDEN,
        ErrorType.PERMISSION_ERROR,
        "insufficient_scope",
    )

    # Mint a key, then list.
    minted = expect(
        create_api_key.sync_detailed(
            client=account, body=ApiKeyCreate(name="ci deploys", scopes=[Scope.WRITE])
        ),
        HTTPStatus.CREATED,
        ApiKeyCreated,
    )
    check(minted.scopes == [Scope.WRITE], f"minted scopes {minted.scopes}")
    check(minted.prefix == minted.api_key[:12], "minted prefix")
    check(minted.shown_once is True, "minted shown_once")
    check(minted.revoked_at is None, "minted revoked_at")

    keys = expect(list_api_keys.sync_detailed(client=account), HTTPStatus.OK, ApiKeyList)
    check(
        [k.id for k in keys.items] == [created.key.id, minted.id],
        f"listed keys {[k.id for k in keys.items]}",
    )
    check(all(isinstance(k, ApiKey) for k in keys.items), "list items are not ApiKey")

    # The provider catalog.
    providers = expect(list_providers.sync_detailed(client=account), HTTPStatus.OK, ProviderList)
    openai = [p for p in providers.items if p.id == "openai"]
    check(len(openai) == 1, "openai is not in the catalog")
    check("api_key" in openai[0].secret_fields, "openai's api_key is not secret")

    # Register an openai credential (and an anthropic one, for the provider filter).
    # The body is the provider's own variant of the register schema.
    credentials = ByokRegisterOpenaiCredentials(organization="org-client-test")
    registered = register_credential.sync_detailed(
        client=account,
        body=ByokRegisterOpenai(
            provider=ByokRegisterOpenaiProvider.OPENAI,
            alias="prod-eu",
            api_key=OPENAI_SECRET,
            credentials=credentials,
            label="Production, EU traffic",
            models=["gpt-4o", "gpt-4o-mini"],
            weight=100,
            capability="chat",
        ),
    )
    key = expect(registered, HTTPStatus.CREATED, ByokKey)
    check(key.byok_id.startswith("byok_"), f"byok id {key.byok_id}")
    check(key.provider == "openai" and key.alias == "prod-eu", "register answer")
    check(key.state == CredentialState.ACTIVE, f"state {key.state}")
    check(
        registered.headers.get("etag") == etag(1), f"register ETag {registered.headers.get('etag')}"
    )
    check(OPENAI_SECRET.encode() not in registered.content, "register echoed the secret")

    other = expect(
        register_credential.sync_detailed(
            client=account,
            body=ByokRegisterApiKey(
                provider=ByokRegisterApiKeyProvider.ANTHROPIC,
                alias="claude",
                api_key=ANTHROPIC_SECRET,
                capability="chat",
            ),
        ),
        HTTPStatus.CREATED,
        ByokKey,
    )

    # Get it: every field as registered, no secret.
    config = expect_config(get_credential.sync_detailed(key.byok_id, client=account))
    check(config.byok_id == key.byok_id, "byok_id")
    check(config.provider == "openai", "provider")
    check(config.alias == "prod-eu", "alias")
    check(config.label == "Production, EU traffic", f"label {config.label!r}")
    check(config.state == CredentialState.ACTIVE, "state")
    check(config.secret_version == 1, f"secret_version {config.secret_version}")
    check(config.revision == 1, f"revision {config.revision}")
    check(config.secret_hint == OPENAI_SECRET[-4:], f"secret_hint {config.secret_hint!r}")
    check(
        config.settings.to_dict() == {"organization": "org-client-test"},
        f"settings {config.settings.to_dict()}",
    )
    check(config.models == ["gpt-4o", "gpt-4o-mini"], f"models {config.models}")
    check(config.blacklisted_models == [], "blacklisted_models")
    check(config.weight == 100, f"weight {config.weight}")
    check(len(config.bindings) == 1 and config.bindings[0].capability == "chat", "bindings")
    check(
        config.base_url is None or isinstance(config.base_url, Unset),
        f"base_url {config.base_url!r}",
    )
    check(config.created_at == config.updated_at, "created_at and updated_at differ")
    check(config.created_at.tzinfo is not None, "created_at is not timezone-aware")

    # List, whole and filtered by provider.
    everything = expect(list_credentials.sync_detailed(client=account), HTTPStatus.OK, ByokList)
    check([c.byok_id for c in everything.items] == [key.byok_id, other.byok_id], "list order")
    check(all(isinstance(c, ByokConfig) for c in everything.items), "list items are not ByokConfig")
    only_openai = expect(
        list_credentials.sync_detailed(client=account, provider="openai"), HTTPStatus.OK, ByokList
    )
    check([c.byok_id for c in only_openai.items] == [key.byok_id], "provider filter")
    check(not only_openai.next_cursor, f"next_cursor {only_openai.next_cursor!r} on the last page")

    # Update the label, conditional on the revision just read.
    updated = expect_config(
        update_credential.sync_detailed(
            key.byok_id,
            client=account,
            body=ByokUpdate(label="Production, EU and US"),
            if_match=etag(config.revision),
        )
    )
    check(updated.label == "Production, EU and US", f"updated label {updated.label!r}")
    check(updated.revision == config.revision + 1, f"revision after update {updated.revision}")
    check(
        updated.alias == "prod-eu" and updated.models == config.models,
        "update changed other fields",
    )

    # A stale revision is refused and changes nothing.
    expect_error(
        update_credential.sync_detailed(
            key.byok_id,
            client=account,
            body=ByokUpdate(label="stale"),
            if_match=etag(config.revision),
        ),
        HTTPStatus.CONFLICT,
        ErrorType.CONFLICT_ERROR,
        "version_conflict",
    )

    # Disable, enable, revoke, each on the revision the previous step answered.
    disabled = expect_config(
        disable_credential.sync_detailed(key.byok_id, client=account, if_match=etag(updated.revision))
    )
    check(disabled.state == CredentialState.DISABLED, f"state after disable {disabled.state}")
    # The optional body of a lifecycle command carries an idempotency key; a retry with it is
    # answered the first response again, even though the credential is now disabled.
    once = IdempotencyOptions(idempotency_key="disable-once")
    first = expect_config(disable_credential.sync_detailed(key.byok_id, client=account, body=once))
    again = disable_credential.sync_detailed(key.byok_id, client=account, body=once)
    check(expect_config(again).revision == first.revision, "a retried disable answered anew")
    check(again.headers.get("idempotent-replayed") == "true", "no Idempotent-Replayed")
    only_disabled = expect(
        list_credentials.sync_detailed(client=account, state=CredentialState.DISABLED),
        HTTPStatus.OK,
        ByokList,
    )
    check([c.byok_id for c in only_disabled.items] == [key.byok_id], "state filter")
    active = expect_config(
        enable_credential.sync_detailed(key.byok_id, client=account, if_match=etag(disabled.revision))
    )
    check(active.state == CredentialState.ACTIVE, f"state after enable {active.state}")
    revoked = expect_config(
        revoke_credential.sync_detailed(key.byok_id, client=account, if_match=etag(active.revision))
    )
    check(revoked.state == CredentialState.REVOKED, f"state after revoke {revoked.state}")

    got = expect_config(get_credential.sync_detailed(key.byok_id, client=account))
    check(got.state == CredentialState.REVOKED, f"state read after revoke {got.state}")
    check(got.revision == revoked.revision, "get after revoke answers another revision")

    # The credential's events: one per change, its revision their count.
    events = list_credential_events.sync_detailed(key.byok_id, client=account)
    page = expect(events, HTTPStatus.OK, EventPage)
    check(all(isinstance(e, Event) for e in page.items), "event items are not Event")
    check(
        [e.type_ for e in page.items]
        == ["byok.registered", "byok.updated", "byok.disabled", "byok.enabled", "byok.revoked"],
        f"event types {[e.type_ for e in page.items]}",
    )
    check(
        [e.stream_version for e in page.items] == list(range(1, got.revision + 1)),
        f"event versions {[e.stream_version for e in page.items]} for revision {got.revision}",
    )
    check(bool(page.next_cursor), "no next_cursor")
    for secret in (OPENAI_SECRET, ANTHROPIC_SECRET):
        check(secret.encode() not in events.content, "an event carries a secret")

    # An unknown id answers the documented error envelope.
    expect_error(
        get_credential.sync_detailed("byok_01JD5Q3M8X2Y4Z6A7B8C9D0E1H", client=account),
        HTTPStatus.NOT_FOUND,
        ErrorType.NOT_FOUND_ERROR,
        "resource_missing",
    )

    # Revoke the minted key: it is marked revoked and stops authenticating.
    gone = expect(
        revoke_api_key.sync_detailed(minted.id, client=account), HTTPStatus.OK, ApiKey
    )
    check(gone.id == minted.id and gone.revoked_at is not None, "revoked key")
    minted_client = AuthenticatedClient(
        base_url=base_url, token=minted.api_key, raise_on_unexpected_status=True
    )
    expect_error(
        list_credentials.sync_detailed(client=minted_client),
        HTTPStatus.UNAUTHORIZED,
        ErrorType.AUTHENTICATION_ERROR,
        "invalid_token",
    )
    keys = expect(list_api_keys.sync_detailed(client=account), HTTPStatus.OK, ApiKeyList)
    check(
        [k.revoked_at is not None for k in keys.items] == [False, True],
        "list after revoke",
    )

    print("ok: the generated client drove the whole lifecycle")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: client_lifecycle.py BASE_URL ADMIN_TOKEN")
    try:
        main(sys.argv[1], sys.argv[2])
    except Mismatch as e:
        sys.exit(f"mismatch: {e}")
