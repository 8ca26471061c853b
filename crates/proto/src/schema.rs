//! JSON schemas of the typed messages, derived from the descriptor set the types are generated
//! from, in their proto3 JSON form (what the egress sends): lowerCamelCase names, 64-bit integers
//! as strings, enums by name, `Timestamp` as an RFC 3339 string.

use std::collections::HashMap;
use std::sync::OnceLock;

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorSet};
use serde_json::{Map, Value, json};

struct Index {
    /// By full name with a leading dot (`.hookbus.commerce.v1.OrderCreated`).
    messages: HashMap<String, DescriptorProto>,
    enums: HashMap<String, Vec<String>>,
}

fn collect(index: &mut Index, scope: &str, message: &DescriptorProto) {
    let name = format!("{scope}.{}", message.name());
    for nested in &message.nested_type {
        collect(index, &name, nested);
    }
    for e in &message.enum_type {
        index.enums.insert(
            format!("{name}.{}", e.name()),
            e.value.iter().map(|v| v.name().to_owned()).collect(),
        );
    }
    index.messages.insert(name, message.clone());
}

fn index() -> &'static Index {
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX.get_or_init(|| {
        let set = FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET)
            .expect("the build wrote a valid descriptor set");
        let mut index = Index {
            messages: HashMap::new(),
            enums: HashMap::new(),
        };
        for file in &set.file {
            let scope = format!(".{}", file.package());
            for message in &file.message_type {
                collect(&mut index, &scope, message);
            }
            for e in &file.enum_type {
                index.enums.insert(
                    format!("{scope}.{}", e.name()),
                    e.value.iter().map(|v| v.name().to_owned()).collect(),
                );
            }
        }
        index
    })
}

/// The schema of one field's value (without `repeated`).
fn value_schema(index: &Index, field: &FieldDescriptorProto, refs: &mut Vec<String>) -> Value {
    match field.r#type() {
        Type::Double | Type::Float => json!({"type": "number"}),
        Type::Int32 | Type::Sint32 | Type::Sfixed32 | Type::Uint32 | Type::Fixed32 => {
            json!({"type": "integer"})
        }
        Type::Int64 | Type::Sint64 | Type::Sfixed64 | Type::Uint64 | Type::Fixed64 => {
            json!({"type": ["string", "integer"], "pattern": "^-?[0-9]+$"})
        }
        Type::Bool => json!({"type": "boolean"}),
        Type::String => json!({"type": "string"}),
        Type::Bytes => json!({"type": "string", "contentEncoding": "base64"}),
        Type::Enum => match index.enums.get(field.type_name()) {
            Some(values) => json!({"type": "string", "enum": values}),
            None => json!({"type": "string"}),
        },
        Type::Message | Type::Group => match field.type_name() {
            ".google.protobuf.Timestamp" => json!({"type": "string", "format": "date-time"}),
            ".google.protobuf.Duration" => json!({"type": "string", "pattern": "^-?[0-9.]+s$"}),
            ".google.protobuf.Struct" => json!({"type": "object"}),
            ".google.protobuf.Value" => json!({}),
            name => {
                refs.push(name.to_owned());
                json!({"$ref": format!("#/$defs/{}", name.trim_start_matches('.'))})
            }
        },
    }
}

fn object_schema(index: &Index, message: &DescriptorProto, refs: &mut Vec<String>) -> Value {
    let mut properties = Map::new();
    for field in &message.field {
        let map_entry = (field.r#type() == Type::Message)
            .then(|| index.messages.get(field.type_name()))
            .flatten()
            .filter(|m| m.options.as_ref().is_some_and(|o| o.map_entry()));
        let schema = match map_entry {
            Some(entry) => {
                let value = entry.field.iter().find(|f| f.number() == 2);
                let values = value.map_or(json!({}), |v| value_schema(index, v, refs));
                json!({"type": "object", "additionalProperties": values})
            }
            None if field.label() == Label::Repeated => {
                json!({"type": "array", "items": value_schema(index, field, refs)})
            }
            None => value_schema(index, field, refs),
        };
        let name = field
            .json_name
            .clone()
            .unwrap_or_else(|| field.name().to_owned());
        properties.insert(name, schema);
    }
    json!({"type": "object", "properties": properties})
}

/// The JSON schema (2020-12) of the message `full_name` (`hookbus.commerce.v1.OrderCreated`)
/// in its proto3 JSON form, with every message it holds under `$defs`; `None` for a name that
/// is not a hookbus message.
pub fn json_schema(full_name: &str) -> Option<Value> {
    let index = index();
    let root = format!(".{full_name}");
    index.messages.get(&root)?;
    let mut defs = Map::new();
    let mut pending = vec![root];
    while let Some(name) = pending.pop() {
        let key = name.trim_start_matches('.').to_owned();
        if defs.contains_key(&key) {
            continue;
        }
        let Some(message) = index.messages.get(&name) else {
            defs.insert(key, json!({}));
            continue;
        };
        let mut refs = Vec::new();
        defs.insert(key, object_schema(index, message, &mut refs));
        pending.extend(refs);
    }
    Some(json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": full_name,
        "$ref": format!("#/$defs/{full_name}"),
        "$defs": defs,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typed_event_has_the_schema_of_its_json_form() {
        let schema = json_schema("hookbus.commerce.v1.OrderCreated").unwrap();
        let defs = &schema["$defs"];
        let order = &defs["hookbus.commerce.v1.OrderCreated"]["properties"];
        assert_eq!(order["lineItems"]["type"], "array");
        assert_eq!(
            order["lineItems"]["items"]["$ref"],
            "#/$defs/hookbus.commerce.v1.LineItem"
        );
        let money = &defs["hookbus.commerce.v1.Money"]["properties"];
        assert_eq!(money["amountMinor"]["type"], json!(["string", "integer"]));
        assert_eq!(money["currency"]["type"], "string");
        assert!(json_schema("hookbus.commerce.v1.Nothing").is_none());
    }
}
