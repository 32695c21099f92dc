//! The CloudFormation data stack (infra/data.yaml) declares the DynamoDB table exactly as the DynamoDB backend
//! defines it: every property of `TABLE.cloudformation_properties()` (keys, the expiry index, TTL,
//! billing) is in the template with the same value, and the template adds only stack-owned settings.
//! Also: the relay's IAM grant on the index names the schema's index. Reads the template as plain YAML
//! (it uses long-form intrinsic functions); never deploys anything.

use std::collections::BTreeSet;

use relay::store::dynamodb::schema::{EXPIRY_INDEX, TABLE};
use serde_json::Value;

/// Properties the stack may set beyond the table design: none of them changes keys, indexes or TTL.
const STACK_OWNED: &[&str] = &[
    "TableName",
    "PointInTimeRecoverySpecification",
    "SSESpecification",
    "DeletionProtectionEnabled",
    "Tags",
];

fn template(name: &str) -> Value {
    let path = format!("{}/../infra/{name}.yaml", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    serde_norway::from_str(&text)
        .unwrap_or_else(|e| panic!("{path} is plain YAML (long-form intrinsics only): {e}"))
}

fn relay_template() -> Value {
    template("relay")
}

fn table_properties(template: &Value) -> &serde_json::Map<String, Value> {
    let table = &template["Resources"]["MessagesTable"];
    assert_eq!(table["Type"], "AWS::DynamoDB::Table");
    table["Properties"]
        .as_object()
        .expect("MessagesTable has properties")
}

/// Attribute definitions in any order, each once.
fn attribute_set(value: &Value) -> BTreeSet<String> {
    value
        .as_array()
        .expect("AttributeDefinitions is a list")
        .iter()
        .map(|a| a.to_string())
        .collect()
}

#[test]
fn the_cloudformation_table_declares_exactly_the_dynamodb_backends_design() {
    let template = template("data");
    let declared = table_properties(&template);
    let expected = TABLE.cloudformation_properties();
    let expected = expected.as_object().expect("an object");
    for (key, want) in expected {
        let got = declared
            .get(key)
            .unwrap_or_else(|| panic!("infra/data.yaml MessagesTable lacks {key}"));
        if key == "AttributeDefinitions" {
            assert_eq!(attribute_set(got), attribute_set(want), "{key}");
            assert_eq!(got.as_array().map(Vec::len), want.as_array().map(Vec::len));
        } else {
            assert_eq!(
                got, want,
                "infra/data.yaml MessagesTable {key} differs from schema.rs"
            );
        }
    }
    for key in declared.keys() {
        assert!(
            expected.contains_key(key) || STACK_OWNED.contains(&key.as_str()),
            "infra/data.yaml MessagesTable sets {key}, which is neither the table design nor stack-owned"
        );
    }
    assert_eq!(
        declared["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"],
        true
    );
}

#[test]
fn the_relay_role_may_query_the_expiry_index_the_schema_names() {
    let template = relay_template();
    let policies = template["Resources"]["RelayFunctionRole"]["Properties"]["Policies"]
        .as_array()
        .expect("the relay role has inline policies");
    let resources: Vec<String> = policies
        .iter()
        .flat_map(|p| {
            p["PolicyDocument"]["Statement"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|s| s["Resource"].to_string())
        .collect();
    let index = format!("/index/{EXPIRY_INDEX}");
    assert!(
        resources.iter().any(|r| r.contains(&index)),
        "no grant on {index}: {resources:?}"
    );
}

#[test]
fn the_function_uses_the_data_stacks_table() {
    let template = relay_template();
    let variables =
        &template["Resources"]["RelayFunction"]["Properties"]["Environment"]["Variables"];
    assert_eq!(
        variables["RELAY_STORE"],
        serde_json::json!({"Fn::Sub": "dynamodb:${TableName}"})
    );
    let data = template_name_of_table();
    assert_eq!(data, serde_json::json!({"Fn::Sub": "relay-${Env}"}));
}

/// The data stack's table name, which the app stack's TableName parameter must match.
fn template_name_of_table() -> Value {
    let data = template("data");
    table_properties(&data)["TableName"].clone()
}
