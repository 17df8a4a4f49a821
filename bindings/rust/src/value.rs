//! Values: how a `V: Serialize + DeserializeOwned` is stored.
//!
//! # The value encoding (versioned)
//!
//! The form is chosen by the value *type*, once per [`Btree`](crate::Btree):
//!
//! * **Text**: a type that serializes as a string (`String`, `&str`, a
//!   newtype around one) is stored as its raw UTF-8 bytes, with no header,
//!   exactly as C programs and `sop put` store text; `sop scan` and `sop get`
//!   print it as is. Reading checks that the bytes are UTF-8.
//! * **Bytes**: a type that serializes as a byte string (`serde_bytes`) is
//!   stored as the raw bytes.
//! * **Binary, format 1**: every other type is stored as one version byte
//!   `0x01` followed by the value in bincode 1.x's default encoding
//!   (`bincode::serialize`: little-endian, fixed-width integers, u64 lengths,
//!   enum variants as u32). A reader that finds another version byte fails
//!   with [`ErrorKind::Encoding`](crate::ErrorKind) naming it, so a later
//!   format can be introduced without misreading old values.

use serde::de::{self, DeserializeOwned, Visitor};
use serde::ser::{self, Impossible, Serialize};

use crate::error::{Error, Result};
use crate::keys::spec::{self, TopLevel};
use crate::keys::KeyError;

/// The version byte of the binary value format.
pub const VALUE_FORMAT_V1: u8 = 0x01;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ValueMode {
    Text,
    Bytes,
    Binary,
}

pub(crate) fn value_mode<V: DeserializeOwned>() -> ValueMode {
    match spec::trace::<V>().top {
        TopLevel::Str => ValueMode::Text,
        TopLevel::Bytes => ValueMode::Bytes,
        TopLevel::Other => ValueMode::Binary,
    }
}

pub(crate) fn encode_value<V: Serialize + ?Sized>(
    mode: ValueMode,
    out: &mut Vec<u8>,
    v: &V,
) -> Result<()> {
    out.clear();
    match mode {
        ValueMode::Text | ValueMode::Bytes => v.serialize(TextSer { out }).map_err(Error::encoding),
        ValueMode::Binary => {
            out.push(VALUE_FORMAT_V1);
            bincode::serialize_into(&mut *out, v).map_err(Error::encoding)
        }
    }
}

#[inline]
pub(crate) fn decode_value<V: DeserializeOwned>(mode: ValueMode, bytes: &[u8]) -> Result<V> {
    match mode {
        ValueMode::Text => decode_text(bytes, "value"),
        ValueMode::Bytes => V::deserialize(RawDe { bytes, text: None }).map_err(Error::encoding),
        ValueMode::Binary => match bytes.first() {
            Some(&VALUE_FORMAT_V1) => bincode::deserialize(&bytes[1..]).map_err(|e| {
                Error::encoding(format!(
                    "value does not decode as {}: {e} (another value type?)",
                    std::any::type_name::<V>()
                ))
            }),
            Some(&b) => Err(Error::encoding(format!(
                "value format byte 0x{b:02x} is not a known version (expected 0x01); \
                 the store holds values of another type or a newer format"
            ))),
            None => Err(Error::encoding(
                "empty value: not a binary value (another value type?)",
            )),
        },
    }
}

/// Decode a value stored in the binary format (version byte `0x01` +
/// bincode) from borrowed bytes, e.g. inside
/// [`Btree::get_with`](crate::Btree::get_with); `T` may borrow from them
/// (`&str`, `&[u8]` fields), so nothing is copied.
pub fn decode_binary<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Result<T> {
    match bytes.first() {
        Some(&VALUE_FORMAT_V1) => bincode::deserialize(&bytes[1..]).map_err(Error::encoding),
        Some(&b) => Err(Error::encoding(format!(
            "value format byte 0x{b:02x} is not a known version (expected 0x01)"
        ))),
        None => Err(Error::encoding("empty value: not a binary value")),
    }
}

/// Text as stored: checked to be UTF-8 on every read, since C programs and
/// the `sop` tool may have written any bytes under a text store.
#[inline(always)]
pub(crate) fn decode_text<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    let Some(s) = utf8(bytes) else {
        return Err(not_utf8::<T>(what));
    };
    T::deserialize(RawDe {
        bytes,
        text: Some(s),
    })
    .map_err(Error::encoding)
}

/// [`decode_text`] into `place`, reusing its allocation where the type can
/// (`String`, `Vec<u8>`: serde's `deserialize_in_place`).
#[inline(always)]
pub(crate) fn decode_text_in_place<T: DeserializeOwned>(
    bytes: &[u8],
    what: &str,
    place: &mut T,
) -> Result<()> {
    let Some(s) = utf8(bytes) else {
        return Err(not_utf8::<T>(what));
    };
    T::deserialize_in_place(
        RawDe {
            bytes,
            text: Some(s),
        },
        place,
    )
    .map_err(Error::encoding)
}

/// `std::str::from_utf8`, with a fast path for ASCII: the bytes are OR-ed
/// together 8 at a time with unaligned loads (32 per round, then 8, then
/// one overlapping load for the last 1..=7 bytes, so there is no byte loop
/// except below 8 bytes). std's validator takes its word-at-a-time path
/// only from an aligned address, and libsop's node bytes are not aligned.
/// Any byte above 0x7F sends the whole slice through std's full check, so
/// the result is exactly std's.
#[inline]
pub(crate) fn utf8(b: &[u8]) -> Option<&str> {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let n = b.len();
    let p = b.as_ptr();
    /// # Safety
    /// `p[i..i + 8]` is inside the slice.
    #[inline(always)]
    unsafe fn rd(p: *const u8, i: usize) -> u64 {
        p.add(i).cast::<u64>().read_unaligned()
    }
    let mut acc = 0u64;
    if n >= 8 {
        let mut i = 0;
        // SAFETY: each load is at i with i + 8 <= n, or at n - 8 (n >= 8).
        unsafe {
            while i + 32 <= n {
                acc |= rd(p, i) | rd(p, i + 8) | rd(p, i + 16) | rd(p, i + 24);
                i += 32;
            }
            while i + 8 <= n {
                acc |= rd(p, i);
                i += 8;
            }
            acc |= rd(p, n - 8);
        }
    } else {
        for &c in b {
            acc |= u64::from(c);
        }
    }
    if acc & HIGH != 0 {
        return std::str::from_utf8(b).ok();
    }
    // SAFETY: every byte is below 0x80 (ASCII), and ASCII is valid UTF-8.
    Some(unsafe { std::str::from_utf8_unchecked(b) })
}

#[cold]
#[inline(never)]
fn not_utf8<T>(what: &str) -> Error {
    Error::encoding(format!(
        "stored {what} is not UTF-8 text, so it cannot be a {} (another type?)",
        std::any::type_name::<T>()
    ))
}

/// [`decode_value`] into `place`, reusing its allocation for text and byte
/// values; binary values are decoded anew.
#[inline]
pub(crate) fn decode_value_in_place<V: DeserializeOwned>(
    mode: ValueMode,
    bytes: &[u8],
    place: &mut V,
) -> Result<()> {
    match mode {
        ValueMode::Text => decode_text_in_place(bytes, "value", place),
        ValueMode::Bytes => {
            V::deserialize_in_place(RawDe { bytes, text: None }, place).map_err(Error::encoding)
        }
        ValueMode::Binary => {
            *place = decode_value(mode, bytes)?;
            Ok(())
        }
    }
}

/// Accepts exactly one string or byte string (through newtypes) and hands
/// its bytes to `out`: appends them to a `Vec`, or calls a closure on the
/// borrowed bytes ([`Call`]), so a text key reaches libsop uncopied.
pub(crate) struct TextSer<S> {
    pub out: S,
}

/// Where [`TextSer`] puts the bytes.
pub(crate) trait TextSink {
    fn put(self, bytes: &[u8]);
}

impl TextSink for &mut Vec<u8> {
    #[inline]
    fn put(self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// A [`TextSink`] that runs a closure on the borrowed bytes.
pub(crate) struct Call<F>(pub F);

impl<F: FnOnce(&[u8])> TextSink for Call<F> {
    #[inline]
    fn put(self, bytes: &[u8]) {
        (self.0)(bytes)
    }
}

fn not_text() -> KeyError {
    KeyError::msg("this type's value does not serialize as a single string")
}

type R = std::result::Result<(), KeyError>;

impl<S: TextSink> ser::Serializer for TextSer<S> {
    type Ok = ();
    type Error = KeyError;
    type SerializeSeq = Impossible<(), KeyError>;
    type SerializeTuple = Impossible<(), KeyError>;
    type SerializeTupleStruct = Impossible<(), KeyError>;
    type SerializeTupleVariant = Impossible<(), KeyError>;
    type SerializeMap = Impossible<(), KeyError>;
    type SerializeStruct = Impossible<(), KeyError>;
    type SerializeStructVariant = Impossible<(), KeyError>;

    #[inline]
    fn serialize_str(self, v: &str) -> R {
        self.out.put(v.as_bytes());
        Ok(())
    }
    #[inline]
    fn serialize_bytes(self, v: &[u8]) -> R {
        self.out.put(v);
        Ok(())
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(self, _n: &'static str, v: &T) -> R {
        v.serialize(self)
    }
    fn serialize_bool(self, _: bool) -> R {
        Err(not_text())
    }
    fn serialize_i8(self, _: i8) -> R {
        Err(not_text())
    }
    fn serialize_i16(self, _: i16) -> R {
        Err(not_text())
    }
    fn serialize_i32(self, _: i32) -> R {
        Err(not_text())
    }
    fn serialize_i64(self, _: i64) -> R {
        Err(not_text())
    }
    fn serialize_u8(self, _: u8) -> R {
        Err(not_text())
    }
    fn serialize_u16(self, _: u16) -> R {
        Err(not_text())
    }
    fn serialize_u32(self, _: u32) -> R {
        Err(not_text())
    }
    fn serialize_u64(self, _: u64) -> R {
        Err(not_text())
    }
    fn serialize_f32(self, _: f32) -> R {
        Err(not_text())
    }
    fn serialize_f64(self, _: f64) -> R {
        Err(not_text())
    }
    fn serialize_char(self, _: char) -> R {
        Err(not_text())
    }
    fn serialize_none(self) -> R {
        Err(not_text())
    }
    fn serialize_some<T: ?Sized + Serialize>(self, _: &T) -> R {
        Err(not_text())
    }
    fn serialize_unit(self) -> R {
        Err(not_text())
    }
    fn serialize_unit_struct(self, _: &'static str) -> R {
        Err(not_text())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> R {
        Err(not_text())
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> R {
        Err(not_text())
    }
    fn serialize_seq(self, _: Option<usize>) -> std::result::Result<Self::SerializeSeq, KeyError> {
        Err(not_text())
    }
    fn serialize_tuple(self, _: usize) -> std::result::Result<Self::SerializeTuple, KeyError> {
        Err(not_text())
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> std::result::Result<Self::SerializeTupleStruct, KeyError> {
        Err(not_text())
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> std::result::Result<Self::SerializeTupleVariant, KeyError> {
        Err(not_text())
    }
    fn serialize_map(self, _: Option<usize>) -> std::result::Result<Self::SerializeMap, KeyError> {
        Err(not_text())
    }
    fn serialize_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> std::result::Result<Self::SerializeStruct, KeyError> {
        Err(not_text())
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> std::result::Result<Self::SerializeStructVariant, KeyError> {
        Err(not_text())
    }
}

/// Hands raw bytes, or text already checked to be UTF-8, to the visitor.
struct RawDe<'a> {
    bytes: &'a [u8],
    text: Option<&'a str>,
}

impl<'de> de::Deserializer<'de> for RawDe<'de> {
    type Error = KeyError;
    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> std::result::Result<V::Value, KeyError> {
        match self.text {
            Some(s) => v.visit_borrowed_str(s),
            None => v.visit_borrowed_bytes(self.bytes),
        }
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _n: &'static str,
        v: V,
    ) -> std::result::Result<V::Value, KeyError> {
        v.visit_newtype_struct(self)
    }
    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn utf8_fast_path_agrees_with_std() {
        let mut cases: Vec<Vec<u8>> = vec![
            vec![],
            b"plain ascii text, longer than sixteen bytes".to_vec(),
            "h\u{e9}llo w\u{f6}rld, \u{65e5}\u{672c} and more text"
                .as_bytes()
                .to_vec(),
        ];
        // every length and position of a bad byte, a 2-byte sequence and a
        // truncated one, around the 8- and 32-byte rounds and the
        // overlapping last load
        for len in 0..80 {
            for pos in 0..len {
                let mut v = vec![b'a'; len];
                v[pos] = 0xFF;
                cases.push(v.clone());
                v[pos] = 0xC3;
                cases.push(v.clone());
                if pos + 1 < len {
                    v[pos + 1] = 0xA9;
                    cases.push(v.clone());
                }
                v[pos] = 0x80;
                cases.push(v);
            }
        }
        for c in &cases {
            assert_eq!(super::utf8(c), std::str::from_utf8(c).ok(), "{c:02x?}");
        }
    }
}
