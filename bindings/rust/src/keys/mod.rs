//! Keys: any `Serialize + DeserializeOwned` type, in its natural order.
//!
//! # How a key type is stored
//!
//! * A type that serializes as a **string** (`String`, `&str`, `Box<str>`, a
//!   newtype around one) is stored as its **raw UTF-8 bytes**, the way C
//!   programs and the `sop` tool store text keys (`sop put config timeout_ms
//!   500`). Bytewise order of UTF-8 is the order of `str::cmp`, so nothing is
//!   lost; such stores carry no index specification, and `sop scan` prints
//!   their keys as plain text. libsop keys are 1..4096 bytes, so the empty
//!   string cannot be a key (an [`ErrorKind::InvalidArgument`](crate::ErrorKind) error).
//! * Every other type is written with libsop's **order-preserving compound-key
//!   encoding** (`include/sop_keys.h`, `docs/KEYS.md`): one field per scalar,
//!   left to right through tuples, structs and newtypes; the bytes compare
//!   (memcmp) exactly as the values do:
//!
//!   | Rust | field | order |
//!   |---|---|---|
//!   | `bool` | bool | false < true |
//!   | `i8`..`i64` (`i128` in range) | int64 | numeric |
//!   | `u8`..`u64` (`u128` in range) | uint64 | numeric |
//!   | `f32`, `f64` | double | IEEE 754 totalOrder: -NaN < -inf < .. < -0.0 < +0.0 < .. < +inf < +NaN |
//!   | `char`, `String` inside a compound | string | UTF-8 bytes (code points) |
//!   | `serde_bytes` byte strings | bytes | memcmp, shorter first |
//!   | `Option<T>` | null or T | `None` first |
//!   | `()` / unit struct | null | |
//!   | enum | uint64 variant index, then its fields | declaration order (as `derive(Ord)`) |
//!   | `Vec<T>`, slices | their elements as the last fields | lexicographic (only as the last field) |
//!   | [`Desc<T>`] | T's fields descending | reversed |
//!
//!   Maps cannot be keys. A type with a fixed list of typed fields (scalars,
//!   tuples, structs, `Option` of a scalar, `Desc`) gets an **index
//!   specification** recorded with the store when it is created (field names
//!   from the struct, `f0`, `f1`... for tuples, `key` for a lone scalar), so
//!   `sop scan` prints its keys as tuples, e.g. `("US", "Sales", 42)`, and
//!   the engine checks every key against it. Reopening a store with a key type
//!   of another shape is an [`ErrorKind::TypeMismatch`](crate::ErrorKind) error.

pub(crate) mod de;
pub(crate) mod ser;
pub(crate) mod spec;

use std::ffi::{CStr, CString};
use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, ErrorKind, Result};
use crate::ffi;

/// The serde newtype name that marks a descending field.
pub(crate) const DESC_NAME: &str = "__sop_Desc";

/// Error inside the key serializer/deserializer.
#[derive(Debug)]
pub(crate) struct KeyError(String);

impl KeyError {
    pub(crate) fn msg(m: impl Into<String>) -> KeyError {
        KeyError(m.into())
    }
}
impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for KeyError {}
impl serde::ser::Error for KeyError {
    fn custom<T: fmt::Display>(m: T) -> Self {
        KeyError(m.to_string())
    }
}
impl serde::de::Error for KeyError {
    fn custom<T: fmt::Display>(m: T) -> Self {
        KeyError(m.to_string())
    }
}

/// A key field in descending order: `Desc(3) < Desc(2)`. Wraps any key type
/// (a scalar, a tuple, a struct); in a compound key it reverses only its own
/// fields. Everywhere else (values, other serde formats) it is transparent.
///
/// ```
/// use sop::Desc;
/// // newest first: (user, Desc(timestamp))
/// let a = sop::keys::encode(&("ann", Desc(20_i64))).unwrap();
/// let b = sop::keys::encode(&("ann", Desc(10_i64))).unwrap();
/// assert!(a < b);
/// assert!(Desc(20) < Desc(10));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Desc<T>(pub T);

impl<T: PartialOrd> PartialOrd for Desc<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        other.0.partial_cmp(&self.0)
    }
}
impl<T: Ord> Ord for Desc<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.0.cmp(&self.0)
    }
}
impl<T: Serialize> Serialize for Desc<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_newtype_struct(DESC_NAME, &self.0)
    }
}
impl<'de, T: Deserialize<'de>> Deserialize<'de> for Desc<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
            type Value = Desc<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a descending key field")
            }
            fn visit_newtype_struct<D: Deserializer<'de>>(
                self,
                d: D,
            ) -> std::result::Result<Desc<T>, D::Error> {
                T::deserialize(d).map(Desc)
            }
        }
        d.deserialize_newtype_struct(DESC_NAME, V(std::marker::PhantomData))
    }
}

/// Encode `key` with libsop's compound-key encoding (never the raw-text form:
/// see the module docs). The bytes sort as the values do.
pub fn encode<K: Serialize + ?Sized>(key: &K) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    encode_into(&mut out, key)?;
    Ok(out)
}

/// Append the compound-key encoding of `key` to `out`.
pub fn encode_into<K: Serialize + ?Sized>(out: &mut Vec<u8>, key: &K) -> Result<()> {
    let mut s = ser::KeySerializer::new(out);
    key.serialize(&mut s).map_err(Error::encoding)
}

/// Decode a compound-encoded key (the inverse of [`encode`]).
pub fn decode<K: DeserializeOwned>(bytes: &[u8]) -> Result<K> {
    let mut d = de::KeyDeserializer::new(bytes);
    let k = K::deserialize(&mut d).map_err(Error::encoding)?;
    if !d.at_end() {
        return Err(Error::encoding(
            "the key has more fields than the type (another key type?)",
        ));
    }
    Ok(k)
}

/// The index specification text a key type gets, e.g. `(region string, id
/// int64 desc)`, or `None` when it gets none (strings, which are stored raw,
/// and types without a fixed field list).
///
/// ```
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Emp { region: String, id: sop::Desc<i64> }
/// assert_eq!(sop::keys::spec_text::<Emp>().unwrap().as_deref(),
///            Some("(region string, id int64 desc)"));
/// assert_eq!(sop::keys::spec_text::<String>().unwrap(), None);
/// ```
pub fn spec_text<K: DeserializeOwned>() -> Result<Option<String>> {
    let codec = KeyCodec::of::<K>()?;
    Ok(codec.spec_text)
}

/// Render stored key bytes as libsop prints them (`sop_key_format`), with the
/// store's spec when it has one: `("US", "Sales", 42)`.
pub(crate) fn format_key(spec: Option<&[u8]>, key: &[u8]) -> Result<String> {
    let mut sp: *mut ffi::sop_keyspec = std::ptr::null_mut();
    if let Some(s) = spec {
        // SAFETY: valid pointers; the spec is freed below.
        crate::error::check(unsafe {
            ffi::sop_keyspec_decode(&mut sp, s.as_ptr().cast(), s.len())
        })?;
    }
    let mut text: *mut std::os::raw::c_char = std::ptr::null_mut();
    let kv = ffi::sop_val::of(key);
    // SAFETY: sp is NULL or a live spec; text is freed with sop_key_free.
    let rc = unsafe { ffi::sop_key_format_alloc(&mut text, sp, &kv, 0) };
    let r = if rc == ffi::SOP_OK {
        // SAFETY: NUL-terminated allocation from libsop.
        let s = unsafe { CStr::from_ptr(text) }
            .to_string_lossy()
            .into_owned();
        unsafe { ffi::sop_key_free(text.cast()) };
        Ok(s)
    } else {
        Err(Error::from_rc(rc))
    };
    // SAFETY: NULL-safe.
    unsafe { ffi::sop_keyspec_free(sp) };
    r
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyMode {
    /// raw UTF-8 bytes (String keys)
    Text,
    /// compound-key encoding
    Tuple,
}

/// How one key type is stored: the mode, and the encoded spec if any.
#[derive(Debug)]
pub(crate) struct KeyCodec {
    pub mode: KeyMode,
    pub spec: Option<Vec<u8>>,
    pub spec_text: Option<String>,
    pub type_name: &'static str,
}

impl KeyCodec {
    pub(crate) fn of<K: DeserializeOwned>() -> Result<KeyCodec> {
        let shape = spec::trace::<K>();
        let type_name = std::any::type_name::<K>();
        let is_text = shape.top == spec::TopLevel::Str
            && shape
                .fields
                .as_ref()
                .map(|f| f.len() == 1 && f[0].flags == 0)
                .unwrap_or(false);
        if is_text {
            return Ok(KeyCodec {
                mode: KeyMode::Text,
                spec: None,
                spec_text: None,
                type_name,
            });
        }
        let (spec, spec_text) = match shape.fields {
            Some(fields) => {
                let (b, t) = build_spec(&fields)?;
                (Some(b), Some(t))
            }
            None => (None, None),
        };
        Ok(KeyCodec {
            mode: KeyMode::Tuple,
            spec,
            spec_text,
            type_name,
        })
    }

    /// Write `key` into `out` (cleared first).
    pub(crate) fn encode<K: Serialize + ?Sized>(&self, out: &mut Vec<u8>, key: &K) -> Result<()> {
        out.clear();
        match self.mode {
            KeyMode::Text => key
                .serialize(crate::value::TextSer { out: &mut *out })
                .map_err(Error::encoding)?,
            KeyMode::Tuple => encode_into(out, key)?,
        }
        check_key_len(out.len())
    }

    /// Run `f` on the bytes of a text key, borrowed from `key` itself (no
    /// copy into a buffer). Only for [`KeyMode::Text`].
    #[inline]
    pub(crate) fn with_text_key<K: Serialize + ?Sized, R>(
        &self,
        key: &K,
        f: impl FnOnce(&[u8]) -> Result<R>,
    ) -> Result<R> {
        debug_assert_eq!(self.mode, KeyMode::Text);
        let mut out = None;
        key.serialize(crate::value::TextSer {
            out: crate::value::Call(|b: &[u8]| {
                out = Some(check_key_len(b.len()).and_then(|()| f(b)));
            }),
        })
        .map_err(Error::encoding)?;
        // A Serialize impl cannot return Ok without calling the serializer
        // (it cannot make the serializer's Ok value), so out is set.
        out.unwrap_or_else(|| Err(Error::encoding("the key did not serialize as text")))
    }

    #[inline]
    pub(crate) fn decode<K: DeserializeOwned>(&self, bytes: &[u8]) -> Result<K> {
        match self.mode {
            KeyMode::Text => crate::value::decode_text(bytes, "key"),
            KeyMode::Tuple => decode(bytes),
        }
    }

    /// [`decode`](KeyCodec::decode) into `place`, reusing its allocation
    /// where the type can (`String` keys; compound keys are decoded anew).
    #[inline]
    pub(crate) fn decode_in_place<K: DeserializeOwned>(
        &self,
        bytes: &[u8],
        place: &mut K,
    ) -> Result<()> {
        match self.mode {
            KeyMode::Text => crate::value::decode_text_in_place(bytes, "key", place),
            KeyMode::Tuple => {
                *place = decode(bytes)?;
                Ok(())
            }
        }
    }
}

/// libsop keys are 1..=SOP_MAX_KEY_LEN bytes.
#[inline]
fn check_key_len(len: usize) -> Result<()> {
    if len == 0 || len > ffi::SOP_MAX_KEY_LEN {
        return Err(key_len_error(len));
    }
    Ok(())
}

#[cold]
#[inline(never)]
fn key_len_error(len: usize) -> Error {
    if len == 0 {
        Error::new(
            ErrorKind::InvalidArgument,
            "an empty key cannot be stored (libsop keys are 1..4096 bytes)",
        )
    } else {
        Error::new(
            ErrorKind::InvalidArgument,
            format!(
                "the key is {len} bytes encoded; libsop keys are at most {}",
                ffi::SOP_MAX_KEY_LEN
            ),
        )
    }
}

/// Encode a field list with libsop's own spec encoder (canonical bytes).
fn build_spec(fields: &[spec::SpecField]) -> Result<(Vec<u8>, String)> {
    let mut sp: *mut ffi::sop_keyspec = std::ptr::null_mut();
    // SAFETY: out-pointer; freed below on every path.
    crate::error::check(unsafe { ffi::sop_keyspec_new(&mut sp) })?;
    let r = (|| {
        for f in fields {
            let name = CString::new(f.name.as_str()).map_err(Error::encoding)?;
            // SAFETY: live spec, NUL-terminated name.
            crate::error::check(unsafe { ffi::sop_keyspec_add(sp, name.as_ptr(), f.ty, f.flags) })?;
        }
        let mut buf = vec![0u8; ffi::SOP_KEYSPEC_MAX_LEN];
        let mut len = 0usize;
        // SAFETY: buf has SOP_KEYSPEC_MAX_LEN bytes.
        crate::error::check(unsafe {
            ffi::sop_keyspec_encode(buf.as_mut_ptr().cast(), buf.len(), &mut len, sp)
        })?;
        buf.truncate(len);
        Ok((buf, spec_to_text(sp)?))
    })();
    // SAFETY: allocated by sop_keyspec_new.
    unsafe { ffi::sop_keyspec_free(sp) };
    r
}

fn spec_to_text(sp: *const ffi::sop_keyspec) -> Result<String> {
    let mut text: *mut std::os::raw::c_char = std::ptr::null_mut();
    // SAFETY: live spec; text freed with sop_key_free.
    crate::error::check(unsafe { ffi::sop_keyspec_format(&mut text, sp) })?;
    let s = unsafe { CStr::from_ptr(text) }
        .to_string_lossy()
        .into_owned();
    unsafe { ffi::sop_key_free(text.cast()) };
    Ok(s)
}

/// The text form of encoded spec bytes (for messages).
pub(crate) fn spec_bytes_to_text(bytes: &[u8]) -> String {
    let mut sp: *mut ffi::sop_keyspec = std::ptr::null_mut();
    // SAFETY: read-only input; the spec is freed below.
    if unsafe { ffi::sop_keyspec_decode(&mut sp, bytes.as_ptr().cast(), bytes.len()) }
        != ffi::SOP_OK
    {
        return "(undecodable spec)".to_string();
    }
    let t = spec_to_text(sp).unwrap_or_else(|_| "(?)".to_string());
    unsafe { ffi::sop_keyspec_free(sp) };
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_boundaries_round_trip_in_order() {
        let mut v: Vec<i64> = vec![i64::MIN, i64::MIN + 1, i64::MAX, 0, 1, -1];
        for shift in 0..63 {
            let p = 1i64 << shift;
            v.extend([p, p - 1, p + 1, -p, -p - 1, -p + 1]);
        }
        v.sort();
        v.dedup();
        let enc: Vec<Vec<u8>> = v.iter().map(|x| encode(x).unwrap()).collect();
        for (x, e) in v.iter().zip(&enc) {
            assert_eq!(decode::<i64>(e).unwrap(), *x, "{e:02x?}");
        }
        assert!(enc.windows(2).all(|w| w[0] < w[1]));
        let u: Vec<u64> = (0..64).map(|s| 1u64 << s).chain([0, u64::MAX]).collect();
        for x in u {
            assert_eq!(decode::<u64>(&encode(&x).unwrap()).unwrap(), x);
        }
    }

    #[test]
    fn sequences_only_last_and_maps_never() {
        assert!(encode(&(1u8, vec![1i64, 2])).is_ok());
        let e = encode(&(vec![1i64], 2u8)).unwrap_err();
        assert!(e.message().contains("last field"), "{e}");
        let m: std::collections::BTreeMap<u8, u8> = [(1, 2)].into();
        assert!(encode(&m).is_err());
        let k = encode(&(7u8, vec![3i64, -4])).unwrap();
        assert_eq!(decode::<(u8, Vec<i64>)>(&k).unwrap(), (7, vec![3, -4]));
    }

    #[test]
    fn enums_sort_by_variant_then_fields() {
        #[derive(Debug, PartialEq, PartialOrd, Serialize, Deserialize)]
        enum E {
            A,
            B(i32),
            C { x: String },
        }
        let v = [E::A, E::B(-5), E::B(3), E::C { x: "a".into() }];
        let enc: Vec<Vec<u8>> = v.iter().map(|x| encode(x).unwrap()).collect();
        assert!(enc.windows(2).all(|w| w[0] < w[1]));
        for (x, e) in v.iter().zip(&enc) {
            assert_eq!(&decode::<E>(e).unwrap(), x);
        }
    }

    #[test]
    fn codec_modes() {
        assert_eq!(KeyCodec::of::<String>().unwrap().mode, KeyMode::Text);
        assert_eq!(KeyCodec::of::<Desc<String>>().unwrap().mode, KeyMode::Tuple);
        assert_eq!(KeyCodec::of::<(String,)>().unwrap().mode, KeyMode::Tuple);
        assert_eq!(
            KeyCodec::of::<Option<String>>().unwrap().mode,
            KeyMode::Tuple
        );
        let c = KeyCodec::of::<String>().unwrap();
        let mut b = Vec::new();
        c.encode(&mut b, &"abc".to_string()).unwrap();
        assert_eq!(b, b"abc");
    }
}
