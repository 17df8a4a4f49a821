//! A serde `Deserializer` reading libsop's compound-key encoding: the
//! inverse of `ser.rs`. Strings without escapes are borrowed from the key.

use std::borrow::Cow;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

use super::ser::*;
use super::{KeyError, DESC_NAME};

/// One decoded field.
#[derive(Debug, PartialEq)]
pub(crate) enum Field<'de> {
    Null,
    Bool(bool),
    I64(i64),
    U64(u64),
    F64(f64),
    Timestamp(i64),
    Str(Cow<'de, str>),
    Bytes(Cow<'de, [u8]>),
    Uuid([u8; 16]),
}

pub(crate) struct KeyDeserializer<'de> {
    input: &'de [u8],
    pos: usize,
    desc: bool,
    field: usize,
}

impl<'de> KeyDeserializer<'de> {
    pub(crate) fn new(input: &'de [u8]) -> Self {
        KeyDeserializer {
            input,
            pos: 0,
            desc: false,
            field: 0,
        }
    }

    pub(crate) fn at_end(&self) -> bool {
        self.pos >= self.input.len()
    }

    fn corrupt(&self, what: &str) -> KeyError {
        KeyError::msg(format!(
            "key field {} (byte {}): {what}",
            self.field, self.pos
        ))
    }

    fn peek_null(&self) -> bool {
        matches!(self.input.get(self.pos), Some(&t) if t == TAG_NULL || t == !TAG_NULL)
    }

    /// Decode the next field, checking its direction against the type's.
    pub(crate) fn next_field(&mut self) -> Result<Field<'de>, KeyError> {
        let Some(&raw_tag) = self.input.get(self.pos) else {
            return Err(self.corrupt("the key has fewer fields than the type"));
        };
        let desc = raw_tag >= 0x80;
        if desc != self.desc {
            return Err(self.corrupt(if desc {
                "stored descending, the type expects ascending (sop::Desc?)"
            } else {
                "stored ascending, the type expects descending (sop::Desc)"
            }));
        }
        let x = if desc { 0xFF } else { 0x00 };
        let tag = raw_tag ^ x;
        let start = self.pos + 1;
        let fixed = |me: &Self, n: usize| -> Result<u64, KeyError> {
            let b = me
                .input
                .get(start..start + n)
                .ok_or_else(|| me.corrupt("truncated"))?;
            let mut v = 0u64;
            for &c in b {
                v = v << 8 | u64::from(c ^ x);
            }
            Ok(v)
        };
        let (f, next) = match tag {
            TAG_NULL => (Field::Null, start),
            TAG_FALSE => (Field::Bool(false), start),
            TAG_TRUE => (Field::Bool(true), start),
            0x18..=0x1F => {
                let n = usize::from(TAG_INT_ZERO - tag);
                let c = fixed(self, n)?;
                // c holds the low n bytes of ~m; the high bytes are 0xFF.
                let full = if n == 8 { c } else { c | (!0u64 << (8 * n)) };
                let m = !full;
                if m == 0 || m > 1u64 << 63 {
                    return Err(self.corrupt("bad negative integer"));
                }
                (Field::I64((m as i64).wrapping_neg()), start + n)
            }
            TAG_INT_ZERO => (Field::I64(0), start),
            0x21..=0x28 => {
                let n = usize::from(tag - TAG_INT_ZERO);
                let v = fixed(self, n)?;
                if v > i64::MAX as u64 {
                    return Err(self.corrupt("int64 out of range"));
                }
                (Field::I64(v as i64), start + n)
            }
            TAG_UINT_ZERO => (Field::U64(0), start),
            0x31..=0x38 => {
                let n = usize::from(tag - TAG_UINT_ZERO);
                (Field::U64(fixed(self, n)?), start + n)
            }
            TAG_DOUBLE => {
                let t = fixed(self, 8)?;
                let bits = if t >> 63 == 1 {
                    t ^ 0x8000_0000_0000_0000
                } else {
                    !t
                };
                (Field::F64(f64::from_bits(bits)), start + 8)
            }
            TAG_TIMESTAMP => {
                let t = fixed(self, 8)?;
                (
                    Field::Timestamp((t ^ 0x8000_0000_0000_0000) as i64),
                    start + 8,
                )
            }
            TAG_STRING | TAG_BYTES => {
                let (data, next) = self.unescape(start, x)?;
                if tag == TAG_STRING {
                    let s = match data {
                        Cow::Borrowed(b) => Cow::Borrowed(
                            std::str::from_utf8(b)
                                .map_err(|_| self.corrupt("string is not UTF-8"))?,
                        ),
                        Cow::Owned(v) => Cow::Owned(
                            String::from_utf8(v)
                                .map_err(|_| self.corrupt("string is not UTF-8"))?,
                        ),
                    };
                    (Field::Str(s), next)
                } else {
                    (Field::Bytes(data), next)
                }
            }
            TAG_UUID => {
                let b = self
                    .input
                    .get(start..start + 16)
                    .ok_or_else(|| self.corrupt("truncated uuid"))?;
                let mut u = [0u8; 16];
                for (o, i) in u.iter_mut().zip(b) {
                    *o = i ^ x;
                }
                (Field::Uuid(u), start + 16)
            }
            _ => return Err(self.corrupt("unknown tag")),
        };
        self.pos = next;
        self.field += 1;
        Ok(f)
    }

    /// Escaped bytes from `start` up to the terminator; borrowed when the
    /// field is ascending and has no escaped NUL.
    fn unescape(&self, start: usize, x: u8) -> Result<(Cow<'de, [u8]>, usize), KeyError> {
        let inp = self.input;
        let mut i = start;
        let mut owned: Option<Vec<u8>> = if x != 0 { Some(Vec::new()) } else { None };
        let mut run = start;
        loop {
            let Some(&b) = inp.get(i) else {
                return Err(self.corrupt("missing string terminator"));
            };
            if b ^ x == 0 {
                let Some(&n) = inp.get(i + 1) else {
                    return Err(self.corrupt("missing string terminator"));
                };
                match n ^ x {
                    0x01 => {
                        let data = match owned {
                            None => Cow::Borrowed(&inp[start..i]),
                            Some(mut v) => {
                                v.extend(inp[run..i].iter().map(|c| c ^ x));
                                Cow::Owned(v)
                            }
                        };
                        return Ok((data, i + 2));
                    }
                    0xFF => {
                        let v = owned.get_or_insert_with(Vec::new);
                        v.extend(inp[run..i].iter().map(|c| c ^ x));
                        v.push(0);
                        i += 2;
                        run = i;
                    }
                    _ => return Err(self.corrupt("bad escape")),
                }
            } else {
                i += 1;
            }
        }
    }

    fn visit_field<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value, KeyError> {
        match self.next_field()? {
            Field::Null => visitor.visit_unit(),
            Field::Bool(b) => visitor.visit_bool(b),
            Field::I64(v) | Field::Timestamp(v) => visitor.visit_i64(v),
            Field::U64(v) => visitor.visit_u64(v),
            Field::F64(v) => visitor.visit_f64(v),
            Field::Str(Cow::Borrowed(s)) => visitor.visit_borrowed_str(s),
            Field::Str(Cow::Owned(s)) => visitor.visit_string(s),
            Field::Bytes(Cow::Borrowed(b)) => visitor.visit_borrowed_bytes(b),
            Field::Bytes(Cow::Owned(b)) => visitor.visit_byte_buf(b),
            Field::Uuid(u) => visitor.visit_bytes(&u),
        }
    }
}

macro_rules! forward_to_field {
    ($($m:ident)*) => {$(
        fn $m<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, KeyError> {
            self.visit_field(visitor)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for &mut KeyDeserializer<'de> {
    type Error = KeyError;

    forward_to_field! {
        deserialize_any deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32
        deserialize_i64 deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
        deserialize_f32 deserialize_f64 deserialize_char deserialize_str deserialize_string
        deserialize_bytes deserialize_byte_buf deserialize_i128 deserialize_u128
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, KeyError> {
        if self.peek_null() {
            self.next_field()?;
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }
    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, KeyError> {
        match self.next_field()? {
            Field::Null => visitor.visit_unit(),
            _ => Err(self.corrupt("expected a null field")),
        }
    }
    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _n: &'static str,
        visitor: V,
    ) -> Result<V::Value, KeyError> {
        self.deserialize_unit(visitor)
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, KeyError> {
        if name == DESC_NAME {
            self.desc = !self.desc;
            let r = visitor.visit_newtype_struct(&mut *self);
            self.desc = !self.desc;
            r
        } else {
            visitor.visit_newtype_struct(self)
        }
    }
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, KeyError> {
        visitor.visit_seq(Seq {
            de: self,
            left: None,
        })
    }
    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, KeyError> {
        visitor.visit_seq(Seq {
            de: self,
            left: Some(len),
        })
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _n: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, KeyError> {
        self.deserialize_tuple(len, visitor)
    }
    fn deserialize_map<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, KeyError> {
        Err(KeyError::msg("maps cannot be keys"))
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _n: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, KeyError> {
        self.deserialize_tuple(fields.len(), visitor)
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _n: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, KeyError> {
        visitor.visit_enum(Enum { de: self })
    }
    fn deserialize_identifier<V: Visitor<'de>>(self, _v: V) -> Result<V::Value, KeyError> {
        Err(KeyError::msg("identifiers are not key fields"))
    }
    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, KeyError> {
        self.next_field()?;
        visitor.visit_unit()
    }
}

struct Seq<'a, 'de> {
    de: &'a mut KeyDeserializer<'de>,
    left: Option<usize>,
}

impl<'de> de::SeqAccess<'de> for Seq<'_, 'de> {
    type Error = KeyError;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, KeyError> {
        match &mut self.left {
            Some(0) => return Ok(None),
            Some(n) => *n -= 1,
            None if self.de.at_end() => return Ok(None),
            None => {}
        }
        seed.deserialize(&mut *self.de).map(Some)
    }
    fn size_hint(&self) -> Option<usize> {
        self.left
    }
}

struct Enum<'a, 'de> {
    de: &'a mut KeyDeserializer<'de>,
}

impl<'de> de::EnumAccess<'de> for Enum<'_, 'de> {
    type Error = KeyError;
    type Variant = Self;
    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), KeyError> {
        let idx = match self.de.next_field()? {
            Field::U64(i) => u32::try_from(i).map_err(|_| KeyError::msg("bad variant index"))?,
            _ => return Err(KeyError::msg("expected an enum variant index (uint64)")),
        };
        let v = seed.deserialize(idx.into_deserializer())?;
        Ok((v, self))
    }
}

impl<'de> de::VariantAccess<'de> for Enum<'_, 'de> {
    type Error = KeyError;
    fn unit_variant(self) -> Result<(), KeyError> {
        Ok(())
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, KeyError> {
        seed.deserialize(&mut *self.de)
    }
    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, KeyError> {
        de::Deserializer::deserialize_tuple(&mut *self.de, len, visitor)
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, KeyError> {
        de::Deserializer::deserialize_tuple(&mut *self.de, fields.len(), visitor)
    }
}
