//! The OpenAPI schemas of request bodies that a derive cannot state. The credential bodies are
//! built from the provider catalog so that they cannot drift from it: `ByokRegister` is one variant per provider (`ByokRegisterOpenai`, …,
//! chosen by `provider`), each naming that provider's credential fields with their rules, which
//! of them are required, and whether it takes or needs `base_url` and `declared_region`;
//! `ByokUpdate` names every non-secret field any provider has. The field rules come from
//! `schema.rs`; the shared field schemas are components (`Alias`, `Label`, `ModelName`,
//! `BaseUrl`, `Region`, `Weight`), listed by [`shared_components`]. `IdempotencyOptions` is the
//! optional body of the mutations that take no input.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use utoipa::openapi::schema::{
    AdditionalProperties, Discriminator, ObjectBuilder, OneOfBuilder, Schema, Type,
};
use utoipa::openapi::{Ref, RefOr};

use super::idempotency::KeyOnlyBody;
use super::schema::{self, Blank};
use crate::domain::credential::{MAX_WEIGHT, MIN_WEIGHT};
use crate::domain::providers::{
    BaseUrlRule, FieldKind, FieldSpec, MAX_JSON_SECRET_LEN, MAX_SECRET_LEN, MAX_SETTING_LEN,
    Provider, Residency, catalog,
};

/// The name of the register body's schema.
pub const REGISTER: &str = "ByokRegister";

/// The name of the update body's schema.
pub const UPDATE: &str = "ByokUpdate";

fn reference(name: &str) -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(name))
}

fn nullable(name: &str) -> RefOr<Schema> {
    RefOr::T(schema::nullable_ref(name))
}

/// Registers the shared field components with a body schema that refers to them.
pub fn push_shared_components(schemas: &mut Vec<(String, RefOr<Schema>)>) {
    for (name, schema) in shared_components() {
        schemas.push((name.to_owned(), RefOr::T(schema)));
    }
}

/// The field schemas every credential body shares, by component name.
pub fn shared_components() -> Vec<(&'static str, Schema)> {
    vec![
        ("Alias", schema::alias()),
        ("BaseUrl", schema::base_url()),
        ("Label", schema::label()),
        ("ModelName", schema::model_name()),
        ("Region", schema::region()),
        (
            "Weight",
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(MIN_WEIGHT))
                .maximum(Some(MAX_WEIGHT))
                .description(Some(format!(
                    "Load-balancing weight, {MIN_WEIGHT} to {MAX_WEIGHT} (default 100)."
                )))
                .into(),
        ),
    ]
}

/// A credential field's value schema.
fn field_schema(field: &FieldSpec, blank: Blank) -> Schema {
    let what = if field.secret {
        "Secret: sealed, never shown again."
    } else {
        "Setting: kept in the clear and shown by `get`."
    };
    match field.kind {
        FieldKind::Token if field.secret => schema::token_field(MAX_SECRET_LEN, what, blank),
        FieldKind::Token => schema::token_field(MAX_SETTING_LEN, what, blank),
        FieldKind::ServiceAccountJson => schema::service_account_field(MAX_JSON_SECRET_LEN),
        FieldKind::Url => schema::url_field(blank),
        FieldKind::Region => schema::region_field(blank),
        FieldKind::List => schema::list_field(MAX_SETTING_LEN, blank),
    }
}

/// `self_hosted` → `SelfHosted`.
fn camel(id: &str) -> String {
    id.split('_')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect()
}

/// Providers whose register bodies have the same shape (the same credential fields, base-URL
/// rule and need of a declared region) share one variant of `ByokRegister`.
struct Group {
    /// `ByokRegisterOpenai` for a provider alone; named after the fields (`ByokRegisterApiKey`)
    /// when several share it.
    name: String,
    providers: Vec<&'static Provider>,
}

type Shape = (
    Vec<(&'static str, bool, bool, FieldKind)>,
    BaseUrlRule,
    bool,
);

fn shape(provider: &Provider) -> Shape {
    (
        provider
            .fields
            .iter()
            .map(|f| (f.name, f.required, f.secret, f.kind))
            .collect(),
        provider.base_url,
        provider.residency == Residency::Declared,
    )
}

/// The variants, in the catalog order of their first provider.
fn groups() -> Vec<Group> {
    let mut groups: Vec<(Shape, Vec<&'static Provider>)> = Vec::new();
    for provider in catalog() {
        let key = shape(provider);
        match groups.iter_mut().find(|(shape, _)| *shape == key) {
            Some((_, members)) => members.push(provider),
            None => groups.push((key, vec![provider])),
        }
    }
    groups
        .into_iter()
        .map(|(_, providers)| {
            let name = match providers.as_slice() {
                [one] => camel(one.id),
                several => several[0].fields.iter().map(|f| camel(f.name)).collect(),
            };
            Group {
                name: format!("{REGISTER}{name}"),
                providers,
            }
        })
        .collect()
}

/// The rules across fields: `api_key` at the top level or in `credentials` (required where the
/// provider requires it, and given once), and a binding's `model` needing a `capability` or a
/// `module`.
fn cross_field_rules(provider: &Provider) -> Vec<Value> {
    let mut rules = Vec::new();
    if let Some(api_key) = provider.field("api_key") {
        if api_key.required {
            rules.push(json!({"anyOf": [
                {"required": ["api_key"], "properties": {"api_key": {"type": "string"}}},
                {"required": ["credentials"],
                    "properties": {"credentials": {"required": ["api_key"]}}},
            ]}));
        }
        rules.push(json!({"dependentSchemas": {"api_key": {"anyOf": [
            {"properties": {"api_key": {"type": "null"}}},
            {"properties": {"credentials": {"not": {"required": ["api_key"]}}}},
        ]}}}));
    }
    rules.push(json!({"dependentSchemas": {"model": {"anyOf": [
        {"properties": {"model": {"type": "null"}}},
        {"required": ["capability"], "properties": {"capability": {"type": "string"}}},
        {"required": ["module"], "properties": {"module": {"type": "string"}}},
    ]}}}));
    rules
}

/// The register body of a group of providers.
fn variant(group: &Group) -> Schema {
    let provider = group.providers[0];
    let names = group
        .providers
        .iter()
        .map(|p| p.name)
        .collect::<Vec<_>>()
        .join(", ");
    let mut credentials = ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        .description(Some(format!(
            "The credential fields: {}.",
            provider
                .fields
                .iter()
                .map(|f| format!(
                    "`{}`{}{}",
                    f.name,
                    if f.secret { " (secret)" } else { "" },
                    if f.required { "" } else { " (optional)" }
                ))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    let mut needs_credentials = false;
    for field in provider.fields {
        credentials = credentials.property(field.name, field_schema(field, Blank::Refused));
        // `api_key` may also come at the top level: the cross-field rules require one of them.
        if field.required && field.name != "api_key" {
            credentials = credentials.required(field.name);
            needs_credentials = true;
        }
    }
    let mut body = ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(format!("Register a credential of {names}.")))
        .property(
            "provider",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(group.providers.iter().map(|p| p.id))),
        )
        .required("provider")
        .property("alias", reference("Alias"))
        .required("alias")
        .property("credentials", credentials);
    if needs_credentials {
        body = body.required("credentials");
    }
    if let Some(api_key) = provider.field("api_key") {
        body = body.property(
            "api_key",
            schema::nullable_string()
                .description(Some(
                    "Shorthand for `credentials.api_key`: give the key here or there, once.",
                ))
                .pattern(Some(field_pattern(api_key))),
        );
    }
    body = body.property("label", nullable("Label"));
    body = match provider.base_url {
        BaseUrlRule::Required => body
            .property("base_url", reference("BaseUrl"))
            .required("base_url"),
        BaseUrlRule::Optional => body.property("base_url", nullable("BaseUrl")),
        BaseUrlRule::None => body,
    };
    body = match provider.residency {
        Residency::Declared => body
            .property("declared_region", reference("Region"))
            .required("declared_region"),
        Residency::Region(_) => body.property("declared_region", nullable("Region")),
    };
    body = body
        .property(
            "models",
            schema::model_list("Allow-list; empty (the default) allows every model."),
        )
        .property(
            "blacklisted_models",
            schema::model_list("Deny-list; wins over `models`."),
        )
        .property("weight", nullable("Weight"))
        .property("capability", nullable("ModelName"))
        .property("module", nullable("ModelName"))
        .property("model", nullable("ModelName"))
        .property(
            "model_map",
            schema::model_map("Optional, empty by default."),
        )
        .property(
            "test",
            utoipa::openapi::ObjectBuilder::new()
                .schema_type(utoipa::openapi::schema::Type::Boolean)
                .description(Some(
                    "Probe the provider with the secret at once (default false); the answer's \
                     `test_result` says how it went, and `byok.tested` records it. The \
                     outcome never stops the registration.",
                )),
        )
        .property("idempotency_key", schema::idempotency_key_field())
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        .extensions(Some(
            [("allOf", Value::Array(cross_field_rules(provider)))]
                .into_iter()
                .collect(),
        ));
    body.into()
}

/// The pattern a field's values follow, for the top-level `api_key` shorthand.
fn field_pattern(field: &FieldSpec) -> String {
    match field_schema(field, Blank::Refused) {
        Schema::Object(object) => object.pattern.unwrap_or_default(),
        _ => String::new(),
    }
}

/// `ByokRegister`: one variant per shape of provider, chosen by `provider`.
pub fn register_schema() -> Schema {
    let mut one_of = OneOfBuilder::new().description(Some(
        "Register a credential: the fields depend on the provider (see \
         `GET /v1/byok/providers`).",
    ));
    let mut mapping = BTreeMap::new();
    for group in groups() {
        one_of = one_of.item(reference(&group.name));
        for provider in &group.providers {
            mapping.insert(
                provider.id.to_owned(),
                format!("#/components/schemas/{}", group.name),
            );
        }
    }
    let mut discriminator = Discriminator::new("provider");
    discriminator.mapping = mapping;
    one_of
        .discriminator(Some(discriminator))
        .examples([json!({"provider": "openai", "alias": "prod-eu",
            "api_key": "sk-proj-3xAmPlE0nLy9f8Kq", "label": "Production, EU traffic",
            "models": ["gpt-4o", "gpt-4o-mini"], "weight": 100, "capability": "chat"})])
        .into()
}

/// Every register variant, by component name.
pub fn register_variants() -> Vec<(String, Schema)> {
    groups()
        .into_iter()
        .map(|group| {
            let schema = variant(&group);
            (group.name, schema)
        })
        .collect()
}

/// Every credential field of any provider, with its schema. A field of the same name has the
/// same kind, and is a secret or not, in every provider (a test below holds that).
fn credential_fields() -> BTreeMap<&'static str, &'static FieldSpec> {
    let mut fields = BTreeMap::new();
    for provider in catalog() {
        for field in provider.fields.iter() {
            fields.entry(field.name).or_insert(field);
        }
    }
    fields
}

/// `ByokUpdate`: each field present is changed.
pub fn update_schema() -> Schema {
    let mut credentials = ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        .description(Some(
            "Non-secret credential fields of the credential's provider to change (see \
             `GET /v1/byok/providers`); an empty value removes an optional one. Secret fields \
             change only by rotation: here they are taken only as proof, and must be the \
             current secret. Changing `base_url` or `endpoint` (where the secret is sent) needs \
             the current secret again here, or an API key with the `admin` scope; otherwise \
             403 `insufficient_scope` (docs/adr/0036).",
        ));
    for (name, field) in credential_fields() {
        if field.secret {
            // Compared with the current secret, never parsed or kept: a plain string, so that
            // the secret's own format rules (long patterns) are declared once, at register.
            let max = match field.kind {
                FieldKind::ServiceAccountJson => MAX_JSON_SECRET_LEN,
                _ => MAX_SECRET_LEN,
            };
            let proof = ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(max))
                .description(Some(
                    "The current secret, as proof only: compared in constant time, never stored.",
                ));
            credentials = credentials.property(name, proof);
            continue;
        }
        // `null` removes an optional field, as blank does.
        let value = OneOfBuilder::new()
            .item(field_schema(field, Blank::Removes))
            .item(ObjectBuilder::new().schema_type(Type::Null));
        credentials = credentials.property(name, value);
    }
    let list = schema::model_list;
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(
            "Each field present is changed; `null` clears `label`, `base_url`, \
             `declared_region`, `model_map` or an optional credential field, and is refused on the fields \
             that always hold a value (`alias`, `models`, `blacklisted_models`, `weight`, \
             `credentials`). Which of `base_url`, `declared_region` and `credentials` a \
             credential takes depends on its provider, as at registration. Secrets are not \
             changed here: that is rotation; moving `base_url` or `endpoint` needs the current \
             secret in `credentials` or the `admin` scope.",
        ))
        .property("alias", reference("Alias"))
        .property("label", nullable("Label"))
        .property("base_url", nullable("BaseUrl"))
        .property("declared_region", nullable("Region"))
        .property(
            "models",
            list("The whole new allow-list (`[]` empties it)."),
        )
        .property(
            "blacklisted_models",
            list("The whole new deny-list (`[]` empties it)."),
        )
        .property("weight", reference("Weight"))
        .property("credentials", credentials)
        .property(
            "model_map",
            OneOfBuilder::new()
                .item(schema::model_map("The whole new map (`{}` or `null` clears it)."))
                .item(ObjectBuilder::new().schema_type(Type::Null)),
        )
        .property("idempotency_key", schema::idempotency_key_field())
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        .examples([json!({"label": "Production, EU and US", "weight": 200})])
        .into()
}

/// `capability` or `module` given as a string: the rule of a binding, an unbind and a policy
/// scope, which a field's own schema cannot state.
fn capability_or_module() -> Value {
    json!([{"anyOf": [
        {"required": ["capability"], "properties": {"capability": {"type": "string"}}},
        {"required": ["module"], "properties": {"module": {"type": "string"}}},
    ]}])
}

/// An object of nullable names (`ModelName`), with at least `capability` or `module` set.
fn selector(description: &str, fields: &[&str], example: Value) -> Schema {
    let mut object = ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(description));
    for field in fields {
        object = object.property(*field, nullable("ModelName"));
    }
    object
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        .extensions(Some(
            [("allOf", capability_or_module())].into_iter().collect(),
        ))
        .examples([example])
        .into()
}

/// `ByokBind`: a binding to add.
pub fn bind_schema() -> Schema {
    selector(
        "A binding to add: what the credential serves. At least `capability` or `module`; \
         `model` narrows it to one requested model.",
        &["capability", "module", "model"],
        json!({"capability": "chat", "module": "support-bot", "model": "gpt-4o"}),
    )
}

/// `ByokUnbind`: the bindings to remove.
pub fn unbind_schema() -> Schema {
    selector(
        "The bindings to remove: every binding whose `capability` and `module` both equal \
         these (an absent one equals only an absent one), whatever its model. At least one of \
         the two.",
        &["capability", "module"],
        json!({"capability": "chat"}),
    )
}

/// `PolicyScope`: which requests a scoped policy governs.
pub fn policy_scope_schema() -> Schema {
    selector(
        "Which requests a scoped policy governs: those whose capability and module equal \
         every field it sets; at least one is set.",
        &["capability", "module"],
        json!({"capability": "chat", "module": "support-bot"}),
    )
}

/// `IdempotencyOptions`: the optional body of a mutation that takes no other input.
pub fn idempotency_options() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(
            "The optional body of a mutation that takes no input: at most an idempotency key.",
        ))
        .property("idempotency_key", schema::idempotency_key_field())
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        .into()
}

impl utoipa::PartialSchema for KeyOnlyBody {
    fn schema() -> RefOr<Schema> {
        RefOr::T(idempotency_options())
    }
}

impl utoipa::ToSchema for KeyOnlyBody {
    fn name() -> std::borrow::Cow<'static, str> {
        "IdempotencyOptions".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_field_has_one_kind_in_every_provider() {
        let fields = credential_fields();
        for provider in catalog() {
            for field in provider.fields.iter() {
                assert_eq!(fields[field.name].kind, field.kind, "{}", field.name);
                assert_eq!(fields[field.name].secret, field.secret, "{}", field.name);
            }
        }
    }

    #[test]
    fn every_provider_is_in_one_variant_and_names_are_unique() {
        let groups = groups();
        let mut ids: Vec<&str> = groups
            .iter()
            .flat_map(|g| g.providers.iter().map(|p| p.id))
            .collect();
        ids.sort_unstable();
        let mut all: Vec<&str> = catalog().iter().map(|p| p.id).collect();
        all.sort_unstable();
        assert_eq!(ids, all);
        let mut names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), groups.len(), "two variants share a name");
        for name in [
            "ByokRegisterSelfHosted",
            "ByokRegisterOpenai",
            "ByokRegisterApiKey",
        ] {
            assert!(names.contains(&name), "{name}");
        }
    }
}
