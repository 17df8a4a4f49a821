//! Finds the shape of a key or value type without a value: a serde
//! `Deserializer` that answers every request with a placeholder and records
//! what was asked (field names, types, directions, nullability). From that
//! shape come the store's index specification and the codec modes.

use serde::de::{self, DeserializeSeed, Visitor};

use super::{KeyError, DESC_NAME};
use crate::ffi;

/// What the type asked for first, at its top level (through newtypes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TopLevel {
    Str,
    Bytes,
    Other,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SpecField {
    pub name: String,
    pub ty: ffi::sop_key_type,
    pub flags: u32,
}

pub(crate) struct Shape {
    pub top: TopLevel,
    /// None: the type has no fixed list of typed fields (enums, sequences,
    /// maps, unit, Option of a compound, deserialize_any...).
    pub fields: Option<Vec<SpecField>>,
}

struct Tracer {
    fields: Vec<SpecField>,
    path: Vec<String>,
    desc: bool,
    top: Option<TopLevel>,
}

pub(crate) fn trace<T: de::DeserializeOwned>() -> Shape {
    let mut t = Tracer {
        fields: Vec::new(),
        path: Vec::new(),
        desc: false,
        top: None,
    };
    let ok = T::deserialize(&mut t).is_ok();
    let top = t.top.unwrap_or(TopLevel::Other);
    let fields = if ok && !t.fields.is_empty() && t.fields.len() <= 64 {
        Some(unique_names(t.fields))
    } else {
        None
    };
    Shape { top, fields }
}

fn unique_names(mut fields: Vec<SpecField>) -> Vec<SpecField> {
    let mut seen = std::collections::HashSet::new();
    for f in &mut fields {
        let mut name = f.name.clone();
        let mut n = 2;
        while !seen.insert(name.clone()) {
            name = format!("{}_{n}", &f.name[..f.name.len().min(55)]);
            n += 1;
        }
        f.name = name;
    }
    fields
}

fn sanitize(parts: &[String]) -> String {
    if parts.is_empty() {
        return "key".to_string();
    }
    let mut s: String = parts
        .join("_")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        s.insert(0, 'f');
    }
    s.truncate(60);
    s
}

fn shapeless() -> KeyError {
    KeyError::msg("no fixed shape")
}

impl Tracer {
    fn first(&mut self, t: TopLevel) {
        if self.top.is_none() {
            self.top = Some(t);
        }
    }
    fn record(&mut self, ty: ffi::sop_key_type) {
        self.first(if ty == ffi::SOP_KEY_STRING {
            TopLevel::Str
        } else if ty == ffi::SOP_KEY_BYTES {
            TopLevel::Bytes
        } else {
            TopLevel::Other
        });
        self.fields.push(SpecField {
            name: sanitize(&self.path),
            ty,
            flags: if self.desc { ffi::SOP_KEY_DESC } else { 0 },
        });
    }
    fn compound<'de, V: Visitor<'de>>(
        &mut self,
        names: Vec<String>,
        visitor: V,
    ) -> Result<V::Value, KeyError> {
        self.first(TopLevel::Other);
        visitor.visit_seq(Elems {
            t: self,
            names,
            i: 0,
        })
    }
}

macro_rules! scalar {
    ($($m:ident => $ty:expr, $visit:ident($v:expr);)*) => {$(
        fn $m<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, KeyError> {
            self.record($ty);
            visitor.$visit($v)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for &mut Tracer {
    type Error = KeyError;

    scalar! {
        deserialize_bool => ffi::SOP_KEY_BOOL, visit_bool(false);
        deserialize_i8 => ffi::SOP_KEY_INT64, visit_i64(0);
        deserialize_i16 => ffi::SOP_KEY_INT64, visit_i64(0);
        deserialize_i32 => ffi::SOP_KEY_INT64, visit_i64(0);
        deserialize_i64 => ffi::SOP_KEY_INT64, visit_i64(0);
        deserialize_u8 => ffi::SOP_KEY_UINT64, visit_u64(0);
        deserialize_u16 => ffi::SOP_KEY_UINT64, visit_u64(0);
        deserialize_u32 => ffi::SOP_KEY_UINT64, visit_u64(0);
        deserialize_u64 => ffi::SOP_KEY_UINT64, visit_u64(0);
        deserialize_f32 => ffi::SOP_KEY_DOUBLE, visit_f64(0.0);
        deserialize_f64 => ffi::SOP_KEY_DOUBLE, visit_f64(0.0);
        deserialize_char => ffi::SOP_KEY_STRING, visit_char('a');
        deserialize_str => ffi::SOP_KEY_STRING, visit_str("");
        deserialize_string => ffi::SOP_KEY_STRING, visit_str("");
        deserialize_bytes => ffi::SOP_KEY_BYTES, visit_bytes(&[]);
        deserialize_byte_buf => ffi::SOP_KEY_BYTES, visit_bytes(&[]);
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, KeyError> {
        self.first(TopLevel::Other);
        let before = self.fields.len();
        let r = visitor.visit_some(&mut *self)?;
        if self.fields.len() != before + 1 {
            return Err(shapeless()); // Option of a compound: no spec
        }
        self.fields[before].flags |= ffi::SOP_KEY_NULLABLE;
        Ok(r)
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, KeyError> {
        if name == DESC_NAME {
            self.first(TopLevel::Other);
            self.desc = !self.desc;
            let r = visitor.visit_newtype_struct(&mut *self);
            self.desc = !self.desc;
            r
        } else {
            visitor.visit_newtype_struct(self)
        }
    }
    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, KeyError> {
        let names = (0..len)
            .map(|i| {
                if self.path.is_empty() {
                    format!("f{i}")
                } else {
                    i.to_string()
                }
            })
            .collect();
        self.compound(names, visitor)
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _n: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, KeyError> {
        self.deserialize_tuple(len, visitor)
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _n: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, KeyError> {
        self.compound(fields.iter().map(|s| s.to_string()).collect(), visitor)
    }

    fn deserialize_any<V: Visitor<'de>>(self, _v: V) -> Result<V::Value, KeyError> {
        self.first(TopLevel::Other);
        Err(shapeless())
    }
    fn deserialize_unit<V: Visitor<'de>>(self, _v: V) -> Result<V::Value, KeyError> {
        self.first(TopLevel::Other);
        Err(shapeless())
    }
    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _n: &'static str,
        _v: V,
    ) -> Result<V::Value, KeyError> {
        self.first(TopLevel::Other);
        Err(shapeless())
    }
    fn deserialize_seq<V: Visitor<'de>>(self, _v: V) -> Result<V::Value, KeyError> {
        self.first(TopLevel::Other);
        Err(shapeless())
    }
    fn deserialize_map<V: Visitor<'de>>(self, _v: V) -> Result<V::Value, KeyError> {
        self.first(TopLevel::Other);
        Err(shapeless())
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _n: &'static str,
        _vs: &'static [&'static str],
        _v: V,
    ) -> Result<V::Value, KeyError> {
        self.first(TopLevel::Other);
        Err(shapeless())
    }
    fn deserialize_identifier<V: Visitor<'de>>(self, _v: V) -> Result<V::Value, KeyError> {
        Err(shapeless())
    }
    fn deserialize_ignored_any<V: Visitor<'de>>(self, _v: V) -> Result<V::Value, KeyError> {
        Err(shapeless())
    }
}

struct Elems<'a> {
    t: &'a mut Tracer,
    names: Vec<String>,
    i: usize,
}

impl<'de> de::SeqAccess<'de> for Elems<'_> {
    type Error = KeyError;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, KeyError> {
        if self.i >= self.names.len() {
            return Ok(None);
        }
        self.t.path.push(self.names[self.i].clone());
        self.i += 1;
        let r = seed.deserialize(&mut *self.t);
        self.t.path.pop();
        r.map(Some)
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.names.len() - self.i)
    }
}
