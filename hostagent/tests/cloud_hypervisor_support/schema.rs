//! Cloud Hypervisor v53's OpenAPI document as a test oracle.
//!
//! The document is reference data from the shared specs (`../shared/specs/data/` next to the
//! repository; `PLATINUM_CH_OPENAPI` overrides the path) and is read at test time, never copied
//! into the repository. Where it is absent, [`ChSchema::load`] panics when `CI` is set (CI must
//! run these tests); elsewhere it prints why and returns `None`, and every test using it skips.
//!
//! The OpenAPI 3.0 components become JSON Schema (draft 2020-12) with two tightenings, so the
//! oracle catches what CH itself would silently accept:
//! - every object schema with `properties` and no `additionalProperties` gets
//!   `additionalProperties: false` (CH's serde structs ignore unknown fields, so a misspelled
//!   field would be dropped without an error);
//! - the integer formats `uint8`/`uint16`/`uint32`/`int16`/`int32` get their ranges.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{Value, json};

/// Environment variable overriding the document's path.
pub const SCHEMA_ENV: &str = "PLATINUM_CH_OPENAPI";

/// The document, relative to this crate's manifest directory.
const DEFAULT_PATH: &str = "../../shared/specs/data/cloud-hypervisor-v53.openapi.yaml";

/// Reports missing shared spec data: a panic when `CI` is set (non-empty), where the data must be
/// present; otherwise a "skipping" message, after which the caller returns.
pub fn spec_data_missing(what: &str) {
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!("CI is set but {what}");
    }
    eprintln!("skipping: {what}");
}

/// One operation (`PUT /vm.boot`) as the document describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// The request body's component, when the operation takes a body.
    pub request: Option<String>,
    /// Whether the body is required.
    pub body_required: bool,
    /// Documented statuses and the component of each one's JSON body, if it has one.
    pub responses: BTreeMap<u16, Option<String>>,
}

/// The loaded document.
pub struct ChSchema {
    /// The OpenAPI document as JSON.
    pub document: Value,
    /// `components.schemas`, converted and tightened.
    schemas: Value,
}

impl ChSchema {
    /// Loads the document; where it is missing, panics under CI and otherwise prints why the
    /// calling test skips and returns `None`.
    pub fn load() -> Option<ChSchema> {
        let path = std::env::var_os(SCHEMA_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_PATH));
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) => {
                spec_data_missing(&format!(
                    "the Cloud Hypervisor v53 OpenAPI document {} is not readable ({e}); \
                     it lives in the shared specs next to the repository (set {SCHEMA_ENV} to point elsewhere)",
                    path.display()
                ));
                return None;
            }
        };
        let document: Value = yaml_serde::from_str(&text).expect("the CH OpenAPI document is YAML");
        assert_eq!(
            document["openapi"].as_str().map(|v| &v[..2]),
            Some("3."),
            "not an OpenAPI 3 document"
        );
        let mut schemas = document["components"]["schemas"].clone();
        assert!(
            schemas.is_object(),
            "the document has no components.schemas"
        );
        tighten(&mut schemas);
        Some(ChSchema { document, schemas })
    }

    /// A validator for component `name` (`VmConfig`).
    pub fn validator(&self, name: &str) -> jsonschema::Validator {
        assert!(
            self.schemas.get(name).is_some(),
            "the CH schema has no component {name}"
        );
        let schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$ref": format!("#/components/schemas/{name}"),
            "components": {"schemas": self.schemas},
        });
        jsonschema::draft202012::options()
            .build(&schema)
            .unwrap_or_else(|e| panic!("component {name} does not compile as JSON Schema: {e}"))
    }

    /// Every way `instance` violates component `name`, one per line; `Ok` when it conforms.
    pub fn check(&self, name: &str, instance: &Value) -> Result<(), String> {
        let validator = self.validator(name);
        let errors: Vec<String> = validator
            .iter_errors(instance)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("\n"))
        }
    }

    /// Panics with every violation unless `instance` conforms to component `name`.
    pub fn assert_valid(&self, name: &str, instance: &Value) {
        if let Err(errors) = self.check(name, instance) {
            panic!(
                "this {name} violates the CH v53 schema:\n{errors}\n{}",
                serde_json::to_string_pretty(instance).unwrap_or_default()
            );
        }
    }

    /// The operation at `/<endpoint>` for `method` (`get`, `put`), if documented.
    pub fn operation(&self, method: &str, endpoint: &str) -> Option<Operation> {
        let op = self.document["paths"]
            .get(format!("/{endpoint}"))?
            .get(method.to_ascii_lowercase())?;
        let request_body = op.get("requestBody");
        let request = request_body
            .and_then(|b| b["content"]["application/json"]["schema"]["$ref"].as_str())
            .map(component_name);
        let body_required = request_body
            .and_then(|b| b["required"].as_bool())
            .unwrap_or(false);
        let mut responses = BTreeMap::new();
        for (status, response) in op["responses"].as_object()? {
            let status: u16 = status.parse().ok()?;
            let body = response["content"]["application/json"]["schema"]["$ref"]
                .as_str()
                .map(component_name);
            responses.insert(status, body);
        }
        Some(Operation {
            request,
            body_required,
            responses,
        })
    }
}

fn component_name(reference: &str) -> String {
    reference
        .strip_prefix("#/components/schemas/")
        .unwrap_or(reference)
        .to_string()
}

/// The tightenings of the module docs, applied to every schema in the tree.
fn tighten(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.contains_key("properties") && !map.contains_key("additionalProperties") {
                map.insert("additionalProperties".to_string(), Value::Bool(false));
            }
            if map.get("type").and_then(Value::as_str) == Some("integer") {
                let range = match map.get("format").and_then(Value::as_str) {
                    Some("uint8") => Some((0_i64, 255_i64)),
                    Some("uint16") => Some((0, 65_535)),
                    Some("uint32") => Some((0, 4_294_967_295)),
                    Some("int16") => Some((-32_768, 32_767)),
                    Some("int32") => Some((-2_147_483_648, 2_147_483_647)),
                    _ => None,
                };
                if let Some((min, max)) = range {
                    map.entry("minimum").or_insert(json!(min));
                    map.entry("maximum").or_insert(json!(max));
                }
            }
            for child in map.values_mut() {
                tighten(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(tighten),
        _ => {}
    }
}
