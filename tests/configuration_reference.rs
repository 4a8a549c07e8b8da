//! The README's configuration reference documents every option the configuration
//! accepts: the option list is taken from the configuration's own schema, so an
//! option added to the code without documentation fails here.

use std::collections::BTreeSet;

use serde_json::Value;
use valet::configuration::Settings;

/// Follows a `$ref` into `$defs`.
fn resolve<'a>(root: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let name = reference.trim_start_matches("#/$defs/");
            resolve(root, &root["$defs"][name])
        }
        None => schema,
    }
}

/// The object schemas a schema may stand for (through `anyOf`/`oneOf`, `Option`).
fn objects<'a>(root: &'a Value, schema: &'a Value) -> Vec<&'a Value> {
    let schema = resolve(root, schema);
    let mut found = Vec::new();
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(variants) = schema.get(key).and_then(Value::as_array) {
            for variant in variants {
                found.extend(objects(root, variant));
            }
        }
    }
    if schema.get("properties").is_some() {
        found.push(schema);
    }
    found
}

/// Options of one table: `field`, and `field[].inner` for arrays of tables.
fn options(root: &Value, table: &Value) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for object in objects(root, table) {
        for (name, field) in object["properties"].as_object().into_iter().flatten() {
            names.insert(name.clone());
            let field = resolve(root, field);
            if let Some(items) = field.get("items") {
                for inner in options(root, items) {
                    names.insert(format!("{name}[].{inner}"));
                }
            }
        }
    }
    names
}

/// The README blocks (a bold header line up to the next one) whose header names
/// `section`, e.g. "**`[server]`**" or "**`[backends.<name>]`, kind `local`**".
fn blocks<'a>(readme: &'a str, section: &str) -> Vec<Vec<&'a str>> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in readme.lines() {
        if line.starts_with("**") || line.starts_with('#') {
            if let Some(block) = current.take() {
                blocks.push(block);
            }
            if line.starts_with("**") && line.contains(section) {
                current = Some(Vec::new());
            }
        } else if let Some(block) = current.as_mut() {
            block.push(line);
        }
    }
    blocks.extend(current);
    blocks
}

fn documented(readme: &str, section: &str, option: &str) -> bool {
    let row = format!("| `{option}` |");
    blocks(readme, section)
        .iter()
        .any(|block| block.iter().any(|line| line.starts_with(&row)))
}

#[test]
fn every_configuration_option_is_in_the_readme() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let schema = Settings::json_schema();
    let mut missing = Vec::new();
    for (name, field) in schema["properties"].as_object().expect("properties") {
        let field = resolve(&schema, field);
        // A map of tables (`[backends.<name>]`, `[tenants.<id>]`) or one table.
        let (section, table) = match field.get("additionalProperties") {
            Some(inner) if inner.is_object() => (format!("`[{name}."), inner),
            _ => (format!("`[{name}]`"), field),
        };
        let table_options = options(&schema, table);
        if table_options.is_empty() {
            if !documented(&readme, "Top level", name) {
                missing.push(name.clone());
            }
            continue;
        }
        for option in table_options {
            if !documented(&readme, &section, &option) {
                missing.push(format!("{section} {option}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "options missing from the README's configuration reference (a table row \
         \"| `option` |\" under a bold header naming the section):\n{}",
        missing.join("\n")
    );
}
