//! The generation record's JSON Schema: shipped in `schema/`, printed by
//! `gencol schema generation`, and enforced by the receiver on every record.

use std::sync::OnceLock;

/// The schema text as shipped.
pub const SCHEMA_JSON: &str = include_str!("../schema/generation.schema.json");

/// The compiled validator, built once; the schema is part of the binary, so a
/// failure to compile it is a bug caught by this crate's tests.
pub fn schema() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let value: serde_json::Value = serde_json::from_str(SCHEMA_JSON).expect("shipped schema is JSON");
        jsonschema::validator_for(&value).expect("shipped schema compiles")
    })
}
