//! The Mesos JSON ⇄ protobuf mapping (stout's `JSON::protobuf` and
//! `protobuf::parse`), which differs from proto3's canonical JSON:
//!
//! - keys are the proto field names (snake_case), enums are their names,
//!   `bytes` are standard base64 with padding, 64-bit integers are numbers;
//! - output includes unset optional fields that have an explicit proto2
//!   default (unless deprecated), omits empty repeated fields, writes integral
//!   doubles with a decimal point and infinities bare, and is compact and
//!   ASCII-only (non-ASCII escaped), because mesoshttp slices records by bytes
//!   on decoded strings;
//! - input is lenient: unknown keys and `null` are ignored, numbers and
//!   booleans may be strings, a single value stands for a one-element list, an
//!   unknown enum name in an optional field leaves it unset; a missing required
//!   field is an error.
//!
//! The mapping walks messages by reflection (prost-reflect) against the
//! descriptors compiled into this crate, so every generated type gets it.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use prost::{Message, Name};
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor,
    ReflectMessage, Value,
};

/// Nesting deeper than this is refused (Mesos messages nest about ten deep).
pub const MAX_DEPTH: usize = 64;

/// A body with more JSON values than this is refused before it is built:
/// each value costs about a hundred bytes as a `serde_json::Value` and as
/// much again as a message, so 16 MB of tiny labels once took 730 MB. An
/// ACCEPT launching 2,000 tasks has about 120,000.
pub const MAX_VALUES: usize = 250_000;

static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    #[allow(clippy::expect_used)]
    DescriptorPool::decode(include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin")).as_ref())
        .expect("the descriptor set compiled into agora-proto is valid")
});

/// The descriptor pool of every message in this crate.
pub fn pool() -> &'static DescriptorPool {
    &POOL
}

/// Why a JSON or protobuf body could not be turned into a message.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    /// The body is not JSON.
    #[error("malformed JSON: {0}")]
    Syntax(String),
    /// The body is not valid protobuf for the message.
    #[error("malformed protobuf: {0}")]
    Protobuf(String),
    /// A value has the wrong JSON type for its field.
    #[error("field '{field}': {message}")]
    Field {
        /// Dotted path of the field.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// Required fields are absent.
    #[error("Missing required fields: {}", .0.join(", "))]
    MissingRequired(Vec<String>),
    /// The value nests deeper than [`MAX_DEPTH`].
    #[error("JSON nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// The body has more than [`MAX_VALUES`] values.
    #[error("JSON has more than {MAX_VALUES} values")]
    TooManyValues,
}

fn descriptor<M: Name>() -> MessageDescriptor {
    #[allow(clippy::expect_used)]
    POOL.get_message_by_name(&M::full_name())
        .expect("every generated message is in the pool")
}

fn to_dynamic<M: Message + Name>(msg: &M) -> DynamicMessage {
    let mut dynamic = DynamicMessage::new(descriptor::<M>());
    #[allow(clippy::expect_used)]
    dynamic
        .transcode_from(msg)
        .expect("a message decodes as itself");
    dynamic
}

/// Serializes a message as compact, ASCII-only Mesos JSON.
pub fn to_string<M: Message + Name>(msg: &M) -> String {
    let mut out = String::with_capacity(256);
    write_message(&mut out, &to_dynamic(msg));
    out
}

/// Serializes a message as Mesos JSON bytes.
pub fn to_vec<M: Message + Name>(msg: &M) -> Vec<u8> {
    to_string(msg).into_bytes()
}

/// Serializes a message as a `serde_json::Value` (infinities become `null`).
pub fn to_value<M: Message + Name>(msg: &M) -> serde_json::Value {
    serde_json::from_str(
        &to_string(msg)
            .replace("-Infinity", "null")
            .replace("Infinity", "null"),
    )
    .unwrap_or(serde_json::Value::Null)
}

/// Parses Mesos JSON into a message.
pub fn from_slice<M: Message + Name + Default>(body: &[u8]) -> Result<M, DecodeError> {
    from_value(&bounded::parse(body, MAX_VALUES)?)
}

/// JSON parsing that counts values as it builds them and stops at a limit.
mod bounded {
    use std::cell::Cell;
    use std::fmt;

    use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
    use serde_json::{Map, Number, Value};

    use super::DecodeError;

    const TOO_MANY: &str = "agora: too many JSON values";

    /// Parses `body`, refusing it once more than `max` values were seen.
    pub fn parse(body: &[u8], max: usize) -> Result<Value, DecodeError> {
        let left = Cell::new(max);
        let mut de = serde_json::Deserializer::from_slice(body);
        let value = Counted(&left).deserialize(&mut de).map_err(|e| {
            if e.to_string().starts_with(TOO_MANY) {
                DecodeError::TooManyValues
            } else {
                DecodeError::Syntax(e.to_string())
            }
        })?;
        de.end().map_err(|e| DecodeError::Syntax(e.to_string()))?;
        Ok(value)
    }

    #[derive(Clone, Copy)]
    struct Counted<'a>(&'a Cell<usize>);

    impl Counted<'_> {
        fn take<E: serde::de::Error>(self) -> Result<(), E> {
            match self.0.get().checked_sub(1) {
                Some(n) => {
                    self.0.set(n);
                    Ok(())
                }
                None => Err(E::custom(TOO_MANY)),
            }
        }
    }

    impl<'de> DeserializeSeed<'de> for Counted<'_> {
        type Value = Value;

        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Counted<'_> {
        type Value = Value;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any JSON value")
        }

        fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Value, E> {
            self.take()?;
            Ok(Value::Bool(v))
        }

        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Value, E> {
            self.take()?;
            Ok(Value::Number(v.into()))
        }

        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Value, E> {
            self.take()?;
            Ok(Value::Number(v.into()))
        }

        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
            self.take()?;
            Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
            self.take()?;
            Ok(Value::String(v.to_owned()))
        }

        fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Value, E> {
            self.take()?;
            Ok(Value::String(v))
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<Value, E> {
            self.take()?;
            Ok(Value::Null)
        }

        fn visit_none<E: serde::de::Error>(self) -> Result<Value, E> {
            self.visit_unit()
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
            self.take()?;
            let mut items = Vec::new();
            while let Some(v) = seq.next_element_seed(self)? {
                items.push(v);
            }
            Ok(Value::Array(items))
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            self.take()?;
            let mut out = Map::new();
            while let Some(key) = map.next_key::<String>()? {
                let value = map.next_value_seed(self)?;
                out.insert(key, value);
            }
            Ok(Value::Object(out))
        }
    }
}

/// Converts an already parsed JSON value into a message.
pub fn from_value<M: Message + Name + Default>(
    value: &serde_json::Value,
) -> Result<M, DecodeError> {
    let dynamic = parse_message(descriptor::<M>(), value, "", 0)?;
    dynamic
        .transcode_to()
        .map_err(|e| DecodeError::Protobuf(e.to_string()))
}

/// Parses protobuf bytes into a message, checking required fields as Mesos does.
pub fn from_protobuf<M: Message + Name + Default>(body: &[u8]) -> Result<M, DecodeError> {
    let dynamic = DynamicMessage::decode(descriptor::<M>(), body)
        .map_err(|e| DecodeError::Protobuf(e.to_string()))?;
    let mut missing = Vec::new();
    check_required(&dynamic, "", &mut missing, 0)?;
    if !missing.is_empty() {
        return Err(DecodeError::MissingRequired(missing));
    }
    M::decode(body).map_err(|e| DecodeError::Protobuf(e.to_string()))
}

fn check_required(
    msg: &DynamicMessage,
    path: &str,
    missing: &mut Vec<String>,
    depth: usize,
) -> Result<(), DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::TooDeep);
    }
    for field in msg.descriptor().fields() {
        let name = join(path, field.name());
        if field.is_required() && !msg.has_field(&field) {
            missing.push(name.clone());
        }
        if msg.has_field(&field) {
            match &*msg.get_field(&field) {
                Value::Message(m) => check_required(m, &name, missing, depth + 1)?,
                Value::List(items) => {
                    for item in items {
                        if let Value::Message(m) = item {
                            check_required(m, &name, missing, depth + 1)?;
                        }
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

// ---------------------------------------------------------------------------
// Output

fn is_deprecated(field: &FieldDescriptor) -> bool {
    field
        .field_descriptor_proto()
        .options
        .as_ref()
        .and_then(|o| o.deprecated)
        .unwrap_or(false)
}

fn has_explicit_default(field: &FieldDescriptor) -> bool {
    field.field_descriptor_proto().default_value.is_some()
}

fn write_message(out: &mut String, msg: &DynamicMessage) {
    out.push('{');
    let mut first = true;
    for field in msg.descriptor().fields() {
        let present = msg.has_field(&field);
        let value = if present {
            msg.get_field(&field)
        } else if !field.is_list()
            && !field.is_map()
            && has_explicit_default(&field)
            && !is_deprecated(&field)
        {
            std::borrow::Cow::Owned(field.default_value())
        } else {
            continue;
        };
        match &*value {
            Value::List(items) if items.is_empty() => continue,
            Value::Map(entries) if entries.is_empty() => continue,
            _ => {}
        }
        if !first {
            out.push(',');
        }
        first = false;
        write_string(out, field.name());
        out.push(':');
        write_value(out, &field.kind(), &value);
    }
    out.push('}');
}

fn write_value(out: &mut String, kind: &Kind, value: &Value) {
    match value {
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::I32(v) => {
            let _ = write!(out, "{v}");
        }
        Value::I64(v) => {
            let _ = write!(out, "{v}");
        }
        Value::U32(v) => {
            let _ = write!(out, "{v}");
        }
        Value::U64(v) => {
            let _ = write!(out, "{v}");
        }
        Value::F32(v) => write_double(out, f64::from(*v)),
        Value::F64(v) => write_double(out, *v),
        Value::String(s) => write_string(out, s),
        Value::Bytes(b) => write_string(out, &STANDARD.encode(b)),
        Value::EnumNumber(n) => match kind {
            Kind::Enum(e) => match e.get_value(*n) {
                Some(v) => write_string(out, v.name()),
                None => {
                    let _ = write!(out, "{n}");
                }
            },
            _ => {
                let _ = write!(out, "{n}");
            }
        },
        Value::Message(m) => write_message(out, m),
        Value::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, kind, item);
            }
            out.push(']');
        }
        Value::Map(entries) => {
            let value_kind = match kind {
                Kind::Message(entry) => entry.map_entry_value_field().kind(),
                other => other.clone(),
            };
            let mut keys: Vec<&MapKey> = entries.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let k = match key {
                    MapKey::String(s) => s.clone(),
                    MapKey::Bool(b) => b.to_string(),
                    MapKey::I32(v) => v.to_string(),
                    MapKey::I64(v) => v.to_string(),
                    MapKey::U32(v) => v.to_string(),
                    MapKey::U64(v) => v.to_string(),
                };
                write_string(out, &k);
                out.push(':');
                if let Some(v) = entries.get(key) {
                    write_value(out, &value_kind, v);
                }
            }
            out.push('}');
        }
    }
}

fn write_double(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "Infinity" } else { "-Infinity" });
    } else {
        // `{:?}` is the shortest round-trip form and keeps ".0" on integers.
        let _ = write!(out, "{v:?}");
    }
}

/// Writes a JSON string literal, escaping everything outside printable ASCII.
fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            ' '..='~' => out.push(c),
            _ => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

// ---------------------------------------------------------------------------
// Input

fn field_error(path: &str, message: impl Into<String>) -> DecodeError {
    DecodeError::Field {
        field: path.to_string(),
        message: message.into(),
    }
}

fn parse_message(
    desc: MessageDescriptor,
    value: &serde_json::Value,
    path: &str,
    depth: usize,
) -> Result<DynamicMessage, DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::TooDeep);
    }
    let serde_json::Value::Object(object) = value else {
        return Err(field_error(
            if path.is_empty() { "<root>" } else { path },
            "expected a JSON object",
        ));
    };
    let mut msg = DynamicMessage::new(desc.clone());
    for (key, v) in object {
        let Some(field) = desc.get_field_by_name(key) else {
            continue; // unknown keys are ignored, as Mesos does
        };
        if v.is_null() {
            continue;
        }
        let fpath = join(path, key);
        if field.is_map() {
            let serde_json::Value::Object(entries) = v else {
                return Err(field_error(&fpath, "expected a JSON object"));
            };
            let Kind::Message(entry) = field.kind() else {
                continue;
            };
            let key_field = entry.map_entry_key_field();
            let value_field = entry.map_entry_value_field();
            let mut map = HashMap::new();
            for (k, ev) in entries {
                let key = parse_map_key(&key_field.kind(), k, &fpath)?;
                if let Some(parsed) = parse_single(&value_field, ev, &join(&fpath, k), depth + 1)? {
                    map.insert(key, parsed);
                }
            }
            msg.set_field(&field, Value::Map(map));
        } else if field.is_list() {
            let items: Vec<&serde_json::Value> = match v {
                serde_json::Value::Array(items) => items.iter().collect(),
                single => vec![single],
            };
            let mut list = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                if item.is_null() {
                    continue;
                }
                if let Some(parsed) =
                    parse_single(&field, item, &format!("{fpath}[{i}]"), depth + 1)?
                {
                    list.push(parsed);
                }
            }
            msg.set_field(&field, Value::List(list));
        } else if let Some(parsed) = parse_single(&field, v, &fpath, depth + 1)? {
            msg.set_field(&field, parsed);
        } else if field.is_required() {
            return Err(field_error(&fpath, format!("unknown value {v}")));
        }
    }
    let missing: Vec<String> = desc
        .fields()
        .filter(|f| f.is_required() && !msg.has_field(f))
        .map(|f| join(path, f.name()))
        .collect();
    if !missing.is_empty() {
        return Err(DecodeError::MissingRequired(missing));
    }
    Ok(msg)
}

fn parse_map_key(kind: &Kind, key: &str, path: &str) -> Result<MapKey, DecodeError> {
    let bad = || field_error(path, format!("bad map key {key:?}"));
    Ok(match kind {
        Kind::String => MapKey::String(key.to_string()),
        Kind::Bool => MapKey::Bool(key.parse().map_err(|_| bad())?),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => MapKey::I32(key.parse().map_err(|_| bad())?),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => MapKey::I64(key.parse().map_err(|_| bad())?),
        Kind::Uint32 | Kind::Fixed32 => MapKey::U32(key.parse().map_err(|_| bad())?),
        Kind::Uint64 | Kind::Fixed64 => MapKey::U64(key.parse().map_err(|_| bad())?),
        _ => return Err(bad()),
    })
}

/// Parses one (non-list) value; `Ok(None)` means "leave unset" (an unknown
/// enum name).
fn parse_single(
    field: &FieldDescriptor,
    v: &serde_json::Value,
    path: &str,
    depth: usize,
) -> Result<Option<Value>, DecodeError> {
    use serde_json::Value as J;
    let kind = field.kind();
    let expected = |what: &str| field_error(path, format!("expected {what}, got {v}"));
    Ok(Some(match kind {
        Kind::Message(desc) => Value::Message(parse_message(desc, v, path, depth)?),
        Kind::Enum(e) => match v {
            J::String(name) => match e.get_value_by_name(name) {
                Some(ev) => Value::EnumNumber(ev.number()),
                None => return Ok(None),
            },
            J::Number(n) => match n.as_i64().and_then(|n| i32::try_from(n).ok()) {
                Some(n) if e.get_value(n).is_some() => Value::EnumNumber(n),
                _ => return Ok(None),
            },
            _ => return Err(expected("an enum name")),
        },
        Kind::Bool => match v {
            J::Bool(b) => Value::Bool(*b),
            J::String(s) if s == "true" => Value::Bool(true),
            J::String(s) if s == "false" => Value::Bool(false),
            _ => return Err(expected("a boolean")),
        },
        Kind::String => match v {
            J::String(s) => Value::String(s.clone()),
            _ => return Err(expected("a string")),
        },
        Kind::Bytes => match v {
            J::String(s) => {
                let decoded = STANDARD
                    .decode(s)
                    .or_else(|_| STANDARD_NO_PAD.decode(s.trim_end_matches('=')))
                    .map_err(|_| expected("base64"))?;
                Value::Bytes(decoded.into())
            }
            _ => return Err(expected("a base64 string")),
        },
        Kind::Double | Kind::Float => {
            let f = match v {
                J::Number(n) => n.as_f64().ok_or_else(|| expected("a number"))?,
                J::String(s) => match s.as_str() {
                    "Infinity" | "inf" => f64::INFINITY,
                    "-Infinity" | "-inf" => f64::NEG_INFINITY,
                    "NaN" | "nan" => f64::NAN,
                    other => other.trim().parse().map_err(|_| expected("a number"))?,
                },
                _ => return Err(expected("a number")),
            };
            if matches!(kind, Kind::Float) {
                Value::F32(f as f32)
            } else {
                Value::F64(f)
            }
        }
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(
            i32::try_from(parse_int(v).ok_or_else(|| expected("an integer"))?)
                .map_err(|_| expected("a 32-bit integer"))?,
        ),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(
            i64::try_from(parse_int(v).ok_or_else(|| expected("an integer"))?)
                .map_err(|_| expected("a 64-bit integer"))?,
        ),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(
            u32::try_from(parse_int(v).ok_or_else(|| expected("an integer"))?)
                .map_err(|_| expected("an unsigned 32-bit integer"))?,
        ),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(
            u64::try_from(parse_int(v).ok_or_else(|| expected("an integer"))?)
                .map_err(|_| expected("an unsigned 64-bit integer"))?,
        ),
    }))
}

fn parse_int(v: &serde_json::Value) -> Option<i128> {
    match v {
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Some(i128::from(i))
            } else if let Some(u) = n.as_u64() {
                Some(i128::from(u))
            } else {
                let f = n.as_f64()?;
                (f.fract() == 0.0 && f.abs() < 1.8e19).then_some(f as i128)
            }
        }
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
#[path = "json_tests.rs"]
mod tests;
