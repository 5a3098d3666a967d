//! The rules the server checks, as JSON Schema: one function per kind of value (an email, a key
//! name, an alias, a label, a model name, a region, a URL, a revision in `If-Match`, an
//! idempotency key, an event id, a typed id), each built from the limits the domain and the
//! HTTP edge enforce, so the contract states what the server refuses instead of leaving it to
//! prose. The resource files use them through `#[schema(schema_with = …)]` and
//! `#[param(schema_with = …)]`; shared ones are also named components (`Alias`, `Label`, …).
//!
//! Each pattern is a JSON Schema (ECMA-262) regular expression that Python's `re` reads the same
//! way (the contract test drives schemathesis with them), so classes are spelled out rather than
//! written as `\s` or `\p{…}`, whose meanings differ between engines and from Rust's.
//! A value the schema accepts is one the server accepts; the few rules no schema can state
//! (those that depend on stored state, or on two fields being equal) are said in descriptions
//! and in docs/adr/0018-the-contract-states-what-the-server-checks.md.

use utoipa::openapi::schema::{
    ArrayBuilder, ObjectBuilder, Schema, SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::{Ref, RefOr};

use crate::domain::account::MAX_EMAIL_LEN;
use crate::domain::account_key::MAX_KEY_NAME_LEN;
use crate::domain::credential::{
    MAX_ALIAS_LEN, MAX_LABEL_LEN, MAX_MODEL_MAP, MAX_MODELS, MAX_NAME_LEN, MAX_PROVIDER_MODEL_LEN,
};
use crate::domain::providers::{MAX_REGION_LEN, MAX_URL_LEN};
use crate::domain::text;

/// The characters Rust's `char::is_whitespace` (Unicode `White_Space`) accepts, which is what
/// `str::trim` removes and what names may not contain.
pub const WHITESPACE: &str =
    r"\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";

/// The characters Rust's `char::is_control` accepts (Unicode `Cc`).
pub const CONTROL: &str = r"\x00-\x1f\x7f-\x9f";

/// What the one rule for human-readable text refuses besides [`CONTROL`] (docs/adr/0016): the
/// invisible and formatting code points of `domain::text`, and the noncharacters, as a class
/// body. Code points past the BMP are written as themselves, which Python's `re` (and ECMA-262
/// with its `u` flag) read as one character each.
fn invisible() -> String {
    let mut class = String::from(r"\ufdd0-\ufdef");
    let mut range = |lo: u32, hi: u32| match (char::from_u32(lo), char::from_u32(hi)) {
        (Some(lo), Some(hi)) if u32::from(hi) <= 0xFFFF => {
            class.push_str(&format!(r"\u{:04x}-\u{:04x}", u32::from(lo), u32::from(hi)))
        }
        (Some(lo), Some(hi)) => {
            class.push(lo);
            class.push('-');
            class.push(hi);
        }
        _ => {}
    };
    for (lo, hi) in text::INVISIBLE {
        range(*lo, *hi);
    }
    for plane in 0..=0x10 {
        range(plane * 0x10000 + 0xFFFE, plane * 0x10000 + 0xFFFF);
    }
    class
}

/// Every character no human-readable field may hold: control, invisible, noncharacter.
fn refused() -> String {
    format!("{CONTROL}{}", invisible())
}

/// `pattern` (anchored with `^`) with the text rule in front: no refused character anywhere.
fn readable(pattern: &str) -> String {
    let rest = pattern.strip_prefix('^').unwrap_or(pattern);
    format!("^(?!.*[{}]){rest}", refused())
}

/// Longest idempotency key, in characters.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

/// Longest event id (`Last-Event-ID`) the server reads: 19 digits always fit the position.
const MAX_EVENT_ID_DIGITS: usize = 19;

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

fn nullable(types: Type) -> SchemaType {
    SchemaType::from_iter([types, Type::Null])
}

/// Whether a credential field may be blank: in an update, a blank value removes the field.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Blank {
    Refused,
    Removes,
}

/// `^W*V W*$`: a value the server trims before checking `core`.
fn trimmed(core: &str) -> String {
    format!("^[{WHITESPACE}]*{core}[{WHITESPACE}]*$")
}

/// A trimmed value that may also be blank when `blank` says so.
fn trimmed_field(core: &str, blank: Blank) -> String {
    match blank {
        Blank::Refused => trimmed(core),
        Blank::Removes => trimmed(&format!("({core})?")),
    }
}

/// What a description adds for a field that may be blank.
fn blank_note(blank: Blank) -> &'static str {
    match blank {
        Blank::Refused => "",
        Blank::Removes => " Blank removes an optional field.",
    }
}

/// A non-empty run of at most `max` characters with no whitespace or control character.
fn token_core(max: usize) -> String {
    format!("[^{WHITESPACE}{}]{{1,{max}}}", refused())
}

/// An email address: one `@`, a local part of 1 to 64 printable ASCII characters and a dotted
/// domain of letters, digits and `-`; at most 254 characters; compared case-insensitively.
pub fn email() -> Schema {
    string()
        .description(Some(
            "An email address: one `@`, a local part of 1 to 64 characters and a dotted domain; \
             at most 254 characters. Unique across the server, compared case-insensitively.",
        ))
        .min_length(Some(3))
        .max_length(Some(MAX_EMAIL_LEN))
        .pattern(Some(
            r"^[\x21-\x3f\x41-\x7e]{1,64}@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$",
        ))
        .examples(["ada@example.com"])
        .into()
}

/// An API key's name: 1 to 128 characters, not all of them whitespace.
pub fn key_name() -> Schema {
    string()
        .description(Some(format!(
            "1 to {MAX_KEY_NAME_LEN} characters, not all of them whitespace."
        )))
        .min_length(Some(1))
        .max_length(Some(MAX_KEY_NAME_LEN))
        .pattern(Some(readable(&format!("^.*[^{WHITESPACE}]"))))
        .examples(["ci deploys"])
        .into()
}

/// A credential's alias: `[a-z0-9_-]`, 1 to 64 characters, starting with a letter or digit.
pub fn alias() -> Schema {
    string()
        .description(Some(format!(
            "A handle: 1 to {MAX_ALIAS_LEN} characters of `a-z`, `0-9`, `_` and `-`, starting \
             with a letter or digit. Not unique."
        )))
        .min_length(Some(1))
        .max_length(Some(MAX_ALIAS_LEN))
        .pattern(Some(format!(
            "^[a-z0-9][a-z0-9_-]{{0,{}}}$",
            MAX_ALIAS_LEN - 1
        )))
        .examples(["prod-eu"])
        .into()
}

/// A label: trimmed, then at most 128 characters without control characters; blank is no label.
pub fn label() -> Schema {
    let edge = format!("[^{WHITESPACE}{CONTROL}]");
    let inner = format!("[^{CONTROL}]{{0,{}}}", MAX_LABEL_LEN - 2);
    string()
        .description(Some(format!(
            "Free text, trimmed; then at most {MAX_LABEL_LEN} characters and no control \
             characters. Blank is no label."
        )))
        .pattern(Some(readable(&trimmed(&format!(
            "({edge}({inner}{edge})?)?"
        )))))
        .examples(["Production, EU traffic"])
        .into()
}

/// A model, capability or module name: 1 to 128 characters, no whitespace or control character.
pub fn model_name() -> Schema {
    string()
        .description(Some(format!(
            "1 to {MAX_NAME_LEN} characters without whitespace or control characters \
             (`gpt-4o`, `anthropic/claude-3.5-sonnet`, `llama3:8b`)."
        )))
        .min_length(Some(1))
        .max_length(Some(MAX_NAME_LEN))
        .pattern(Some(readable(&format!("^{}$", token_core(MAX_NAME_LEN)))))
        .examples(["gpt-4o"])
        .into()
}

/// A model map: at most 256 entries, each a model name mapped to a provider model id (the same
/// rule, up to 256 characters).
pub fn model_map(description: &str) -> Schema {
    let provider_model = string()
        .min_length(Some(1))
        .max_length(Some(MAX_PROVIDER_MODEL_LEN))
        .pattern(Some(readable(&format!(
            "^{}$",
            token_core(MAX_PROVIDER_MODEL_LEN)
        ))));
    let key = string()
        .min_length(Some(1))
        .max_length(Some(MAX_NAME_LEN))
        .pattern(Some(readable(&format!("^{}$", token_core(MAX_NAME_LEN)))));
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property_names(Some(key))
        .additional_properties(Some(provider_model))
        .max_properties(Some(MAX_MODEL_MAP))
        .description(Some(format!(
            "{description} Requested model (a model name) -> the provider's id for it (an \
             Azure deployment, a Bedrock inference profile, a fine-tuned id: 1 to \
             {MAX_PROVIDER_MODEL_LEN} characters without whitespace or control characters); \
             at most {MAX_MODEL_MAP} entries. A model in `blacklisted_models` cannot be mapped."
        )))
        .examples([serde_json::json!({"gpt-4o": "prod-gpt4o-eu"})])
        .into()
}

/// A model list: at most 256 model names.
pub fn model_list(description: &str) -> Schema {
    ArrayBuilder::new()
        .items(RefOr::Ref(Ref::from_schema_name("ModelName")))
        .max_items(Some(MAX_MODELS))
        .description(Some(format!(
            "{description} At most {MAX_MODELS} entries; duplicates are dropped."
        )))
        .into()
}

/// A region name: 1 to 32 of `a-z`, `0-9` and `-`, starting with a letter or digit.
pub fn region() -> Schema {
    string()
        .description(Some(format!(
            "A region: 1 to {MAX_REGION_LEN} of `a-z`, `0-9` and `-`, starting with a letter or \
             digit (`eu`, `us-east-1`)."
        )))
        .min_length(Some(1))
        .max_length(Some(MAX_REGION_LEN))
        .pattern(Some(region_pattern()))
        .examples(["eu"])
        .into()
}

fn region_core() -> String {
    format!("[a-z0-9][a-z0-9-]{{0,{}}}", MAX_REGION_LEN - 1)
}

fn region_pattern() -> String {
    format!("^{}$", region_core())
}

/// An IPv4 octet, 0 to 255, as the URL parser reads one.
const OCTET: &str = "(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])";

/// A host name whose last label starts with a letter (so no parser reads it as an IPv4 address)
/// and whose labels never hold `--` (so none is an IDNA `xn--` label).
const HOST_NAME: &str = "([A-Za-z0-9]+(-[A-Za-z0-9]+)*\\.)*[A-Za-z][A-Za-z0-9]*(-[A-Za-z0-9]+)*";

/// An optional port and path, without a query or fragment; a `%` starts an escape (RFC 3986).
const PORT_AND_PATH: &str = "(:[0-9]{1,4})?(/([A-Za-z0-9._~!$&'()*+,;=:@/-]|%[0-9A-Fa-f]{2})*)?";

/// The URLs the server takes as a base URL or endpoint: `https://` to a host name, or plain
/// `http://` to `localhost`, `*.localhost`, or a loopback, private or link-local IPv4 address
/// or `[::1]`; no user info, query or fragment.
fn url_core() -> String {
    let local = [
        "localhost".to_owned(),
        "([A-Za-z0-9]+(-[A-Za-z0-9]+)*\\.)+localhost".to_owned(),
        format!("127\\.{OCTET}\\.{OCTET}\\.{OCTET}"),
        format!("10\\.{OCTET}\\.{OCTET}\\.{OCTET}"),
        format!("192\\.168\\.{OCTET}\\.{OCTET}"),
        format!("172\\.(1[6-9]|2[0-9]|3[01])\\.{OCTET}\\.{OCTET}"),
        format!("169\\.254\\.{OCTET}\\.{OCTET}"),
        "\\[::1\\]".to_owned(),
    ]
    .join("|");
    format!("(https://{HOST_NAME}|http://({local})){PORT_AND_PATH}")
}

/// A base URL: see [`url_core`]; at most 2,048 characters.
pub fn base_url() -> Schema {
    string()
        .description(Some(format!(
            "An absolute `https://` URL without user info, query or fragment, at most \
             {MAX_URL_LEN} characters; plain `http://` only to `localhost`, `*.localhost` and \
             loopback, private or link-local addresses. Host names are not resolved."
        )))
        .format(Some(SchemaFormat::Custom("uri".to_owned())))
        .max_length(Some(MAX_URL_LEN))
        .pattern(Some(format!("^{}$", url_core())))
        .examples(["https://eu.api.openai.com/v1"])
        .into()
}

/// A credential field the server trims and checks as a token: no whitespace or control
/// character inside, at most `max` characters.
pub fn token_field(max: usize, description: &str, blank: Blank) -> Schema {
    string()
        .description(Some(format!(
            "{description} Trimmed; then 1 to {max} characters without whitespace or control \
             characters.{}",
            blank_note(blank)
        )))
        .pattern(Some(trimmed_field(&token_core(max), blank)))
        .into()
}

/// A credential field holding a region, trimmed first.
pub fn region_field(blank: Blank) -> Schema {
    string()
        .description(Some(format!(
            "A region: 1 to {MAX_REGION_LEN} of `a-z`, `0-9` and `-`, starting with a letter or \
             digit. Trimmed.{}",
            blank_note(blank)
        )))
        .pattern(Some(trimmed_field(&region_core(), blank)))
        .into()
}

/// A credential field holding a URL (azure's `endpoint`), trimmed first.
pub fn url_field(blank: Blank) -> Schema {
    string()
        .description(Some(format!(
            "An `https://` URL without user info, query or fragment (plain `http://` only to \
             local and private addresses). Trimmed, so no `format: uri`: surrounding spaces are \
             allowed.{}",
            blank_note(blank)
        )))
        .pattern(Some(trimmed_field(&url_core(), blank)))
        .max_length(Some(MAX_URL_LEN))
        .into()
}

/// A credential field holding a comma-separated list of names (azure's `deployments`).
pub fn list_field(max_item: usize, blank: Blank) -> Schema {
    let item = format!("[^{WHITESPACE}{CONTROL},]{{1,{max_item}}}");
    let space = format!("[{WHITESPACE}]*");
    string()
        .description(Some(format!(
            "A comma-separated list of names without spaces (`gpt-4o,gpt-4o-mini`), each 1 to \
             {max_item} characters, at most {} characters in all.{}",
            4 * max_item,
            blank_note(blank)
        )))
        .max_length(Some(4 * max_item))
        .pattern(Some(trimmed_field(
            &format!("{item}({space},{space}{item})*"),
            blank,
        )))
        .into()
}

/// A Google service-account key file, as a string holding its JSON document.
pub fn service_account_field(max_bytes: usize) -> Schema {
    let text = || {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
    };
    let key_file = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property(
            "type",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(["service_account"])),
        )
        .required("type")
        .property("client_email", text())
        .required("client_email")
        .property("private_key", text())
        .required("private_key")
        .property("private_key_id", text())
        .required("private_key_id");
    string()
        .description(Some(format!(
            "The service-account key file's JSON document, as a string, at most {max_bytes} \
             bytes: an object with `type: \"service_account\"`, `client_email`, `private_key` \
             and `private_key_id`."
        )))
        .max_length(Some(max_bytes))
        .content_media_type("application/json")
        .content_schema(Some(key_file))
        .into()
}

/// An idempotency key sent in the body: 1 to 255 characters.
pub fn idempotency_key_field() -> Schema {
    string()
        .description(Some(format!(
            "An idempotency key, as an alternative to the `Idempotency-Key` header: 1 to \
             {MAX_IDEMPOTENCY_KEY} characters. With both, they must be the same key."
        )))
        .min_length(Some(1))
        .max_length(Some(MAX_IDEMPOTENCY_KEY))
        .into()
}

/// The `Idempotency-Key` header: 1 to 255 printable ASCII characters (HTTP trims spaces at
/// either end).
pub fn idempotency_key_header() -> Schema {
    string()
        .min_length(Some(1))
        .max_length(Some(MAX_IDEMPOTENCY_KEY))
        .pattern(Some(format!(
            "^[\\x21-\\x7e]([\\t\\x20-\\x7e]{{0,{}}}[\\x21-\\x7e])?$",
            MAX_IDEMPOTENCY_KEY - 2
        )))
        .into()
}

/// `If-Match`: a revision as the `ETag` gives it (a decimal in quotes), or `*`.
pub fn if_match() -> Schema {
    string()
        .pattern(Some(r#"^(\*|"(0|[1-9][0-9]{0,18})")$"#))
        .examples([r#""3""#])
        .into()
}

/// An `ETag`: the revision in quotes.
pub fn etag() -> Schema {
    string()
        .pattern(Some(r#"^"[0-9]+"$"#))
        .examples([r#""3""#])
        .into()
}

/// `Last-Event-ID`: an event's `id` as the stream sent it, its position.
pub fn event_id() -> Schema {
    string()
        .pattern(Some(format!("^[0-9]{{1,{MAX_EVENT_ID_DIGITS}}}$")))
        .examples(["42"])
        .into()
}

/// `X-Request-ID`: the request's id, minted (`req_<ULID>`) or adopted from the request.
pub fn request_id() -> Schema {
    string()
        .pattern(Some("^[A-Za-z0-9_-]{1,64}$"))
        .examples(["req_01JD5Q3M8X2Y4Z6A7B8C9D0E1K"])
        .into()
}

/// A typed id in a path: `<prefix>_` and a canonical ULID.
pub fn typed_id(prefix: &str) -> Schema {
    string()
        .pattern(Some(format!("^{prefix}_[0-7][0-9A-HJKMNP-TV-Z]{{25}}$")))
        .into()
}

/// The path id of an API key.
pub fn key_id() -> Schema {
    typed_id("key")
}

/// The path id of a credential.
pub fn credential_id() -> Schema {
    typed_id("byok")
}

/// The path id of a webhook endpoint.
pub fn webhook_id() -> Schema {
    typed_id("wh")
}

/// `Idempotent-Replayed`: present, and `true`, on a replayed response only.
pub fn replayed() -> Schema {
    string().enum_values(Some(["true"])).into()
}

/// A string that may be `null`.
pub fn nullable_ref(name: &str) -> Schema {
    utoipa::openapi::schema::OneOfBuilder::new()
        .item(RefOr::Ref(Ref::from_schema_name(name)))
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .into()
}

/// A string that may be `null`, to be constrained further.
pub fn nullable_string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(nullable(Type::String))
}

/// A port from 0 to 65535, after its colon.
const PORT: &str =
    "(:([0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?";

/// A path and a query, without a fragment; a `%` starts an escape (RFC 3986).
const PATH_AND_QUERY: &str = "(/([A-Za-z0-9._~!$&'()*+,;=:@/-]|%[0-9A-Fa-f]{2})*)?(\\?([A-Za-z0-9._~!$&'()*+,;=:@/?-]|%[0-9A-Fa-f]{2})*)?";

/// A webhook endpoint's URL, as `domain::webhook::validate_url` takes it. Which addresses may
/// be reached is the outbound policy's to say, when it is created and at every delivery.
pub fn webhook_url() -> Schema {
    let host = format!("({HOST_NAME}|{OCTET}\\.{OCTET}\\.{OCTET}\\.{OCTET})");
    string()
        .description(Some(format!(
            "An absolute `https://` or `http://` URL to a host name or IPv4 address (an IPv6 \
             literal in brackets is taken too), without user info or fragment, at most \
             {} characters. Loopback, private, link-local and metadata addresses (in any \
             spelling, or a name resolving to one) are refused unless the server allows \
             private URLs; the name is resolved when the endpoint is created and again at every \
             delivery.",
            crate::domain::webhook::MAX_URL_LEN
        )))
        .format(Some(SchemaFormat::Custom("uri".to_owned())))
        .max_length(Some(crate::domain::webhook::MAX_URL_LEN))
        .pattern(Some(format!("^https?://{host}{PORT}{PATH_AND_QUERY}$")))
        .examples(["https://hooks.example.com/keyledger"])
        .into()
}

/// The event types an endpoint subscribes to: at least one of the subscribable types, or `*`.
pub fn webhook_events() -> Schema {
    let names = crate::domain::webhook::EVENT_TYPES
        .iter()
        .map(|t| t.name)
        .chain([crate::domain::webhook::ALL]);
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(string().enum_values(Some(names)))
        .min_items(Some(1))
        .description(Some(
            "Event types to receive (each described in the `webhooks` section), or `[\"*\"]` \
             for every type, those added later included",
        ))
        .into()
}

/// A webhook endpoint's description: the text rule, trimmed, at most 200 characters; blank
/// removes it.
pub fn webhook_description() -> Schema {
    let max = crate::domain::webhook::MAX_DESCRIPTION_LEN;
    let edge = format!("[^{WHITESPACE}{CONTROL}]");
    let inner = format!("[^{CONTROL}]{{0,{}}}", max - 2);
    string()
        .description(Some(format!(
            "Free text, trimmed; then at most {max} characters and no control characters. \
             Blank removes it."
        )))
        .pattern(Some(readable(&trimmed(&format!(
            "({edge}({inner}{edge})?)?"
        )))))
        .into()
}
