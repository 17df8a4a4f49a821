//! A serde `Serializer` that writes libsop's order-preserving compound-key
//! encoding (docs/KEYS.md section 3), field by field.

use serde::ser::{self, Serialize};

use super::{KeyError, DESC_NAME};

// Ascending tags (docs/KEYS.md); a descending field is XORed with 0xFF.
pub(crate) const TAG_NULL: u8 = 0x05;
pub(crate) const TAG_FALSE: u8 = 0x10;
pub(crate) const TAG_TRUE: u8 = 0x11;
pub(crate) const TAG_INT_ZERO: u8 = 0x20;
pub(crate) const TAG_UINT_ZERO: u8 = 0x30;
pub(crate) const TAG_DOUBLE: u8 = 0x40;
pub(crate) const TAG_TIMESTAMP: u8 = 0x48;
pub(crate) const TAG_STRING: u8 = 0x50;
pub(crate) const TAG_BYTES: u8 = 0x60;
pub(crate) const TAG_UUID: u8 = 0x70;

/// Writes a key's fields into `out`.
pub(crate) struct KeySerializer<'a> {
    out: &'a mut Vec<u8>,
    desc: bool,
    /// inside a sequence (whose elements are the key's last fields)
    in_seq: bool,
    /// a sequence ended: nothing may follow it
    after_seq: bool,
}

impl<'a> KeySerializer<'a> {
    pub(crate) fn new(out: &'a mut Vec<u8>) -> Self {
        KeySerializer {
            out,
            desc: false,
            in_seq: false,
            after_seq: false,
        }
    }

    fn begin(&mut self) -> Result<usize, KeyError> {
        if self.after_seq {
            return Err(KeyError::msg(
                "a sequence (Vec, slice) must be the last field of a key",
            ));
        }
        Ok(self.out.len())
    }

    fn end(&mut self, start: usize) {
        if self.desc {
            for b in &mut self.out[start..] {
                *b ^= 0xFF;
            }
        }
    }

    pub(crate) fn put_null(&mut self) -> Result<(), KeyError> {
        let s = self.begin()?;
        self.out.push(TAG_NULL);
        self.end(s);
        Ok(())
    }

    fn put_bool(&mut self, v: bool) -> Result<(), KeyError> {
        let s = self.begin()?;
        self.out.push(if v { TAG_TRUE } else { TAG_FALSE });
        self.end(s);
        Ok(())
    }

    fn put_i64(&mut self, v: i64) -> Result<(), KeyError> {
        let s = self.begin()?;
        encode_i64(self.out, v);
        self.end(s);
        Ok(())
    }

    fn put_u64(&mut self, v: u64) -> Result<(), KeyError> {
        let s = self.begin()?;
        encode_u64(self.out, v);
        self.end(s);
        Ok(())
    }

    fn put_f64(&mut self, v: f64) -> Result<(), KeyError> {
        let s = self.begin()?;
        self.out.push(TAG_DOUBLE);
        self.out.extend_from_slice(&double_bits(v).to_be_bytes());
        self.end(s);
        Ok(())
    }

    fn put_escaped(&mut self, tag: u8, data: &[u8]) -> Result<(), KeyError> {
        let s = self.begin()?;
        self.out.push(tag);
        escape_into(self.out, data);
        self.end(s);
        Ok(())
    }
}

/// Ascending int64 field: tag carries sign and length (docs/KEYS.md).
pub(crate) fn encode_i64(out: &mut Vec<u8>, v: i64) {
    use std::cmp::Ordering::*;
    match v.cmp(&0) {
        Equal => out.push(TAG_INT_ZERO),
        Greater => {
            let b = (v as u64).to_be_bytes();
            let n = 8 - (v as u64).leading_zeros() as usize / 8;
            out.push(TAG_INT_ZERO + n as u8);
            out.extend_from_slice(&b[8 - n..]);
        }
        Less => {
            // ~m where m = -v as u64; keep the low bytes, dropping leading 0xFF.
            let c = !(v.unsigned_abs());
            let n = 8 - (!c).leading_zeros() as usize / 8;
            let n = n.max(1);
            out.push(TAG_INT_ZERO - n as u8);
            out.extend_from_slice(&c.to_be_bytes()[8 - n..]);
        }
    }
}

pub(crate) fn encode_u64(out: &mut Vec<u8>, v: u64) {
    if v == 0 {
        out.push(TAG_UINT_ZERO);
    } else {
        let n = 8 - v.leading_zeros() as usize / 8;
        out.push(TAG_UINT_ZERO + n as u8);
        out.extend_from_slice(&v.to_be_bytes()[8 - n..]);
    }
}

/// The 8 payload bytes of a double: IEEE totalOrder as unsigned order, NaN
/// canonicalised to the quiet NaN of its sign.
pub(crate) fn double_bits(v: f64) -> u64 {
    let mut bits = v.to_bits();
    if v.is_nan() {
        bits = if bits >> 63 == 1 {
            0xFFF8_0000_0000_0000
        } else {
            0x7FF8_0000_0000_0000
        };
    }
    if bits >> 63 == 0 {
        bits ^ 0x8000_0000_0000_0000
    } else {
        !bits
    }
}

pub(crate) fn escape_into(out: &mut Vec<u8>, data: &[u8]) {
    let mut rest = data;
    while let Some(i) = rest.iter().position(|&b| b == 0) {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(&[0x00, 0xFF]);
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
    out.extend_from_slice(&[0x00, 0x01]);
}

type R = Result<(), KeyError>;

impl<'a, 'b> ser::Serializer for &'b mut KeySerializer<'a> {
    type Ok = ();
    type Error = KeyError;
    type SerializeSeq = Compound<'a, 'b>;
    type SerializeTuple = Compound<'a, 'b>;
    type SerializeTupleStruct = Compound<'a, 'b>;
    type SerializeTupleVariant = Compound<'a, 'b>;
    type SerializeMap = ser::Impossible<(), KeyError>;
    type SerializeStruct = Compound<'a, 'b>;
    type SerializeStructVariant = Compound<'a, 'b>;

    fn serialize_bool(self, v: bool) -> R {
        self.put_bool(v)
    }
    fn serialize_i8(self, v: i8) -> R {
        self.put_i64(v.into())
    }
    fn serialize_i16(self, v: i16) -> R {
        self.put_i64(v.into())
    }
    fn serialize_i32(self, v: i32) -> R {
        self.put_i64(v.into())
    }
    fn serialize_i64(self, v: i64) -> R {
        self.put_i64(v)
    }
    fn serialize_u8(self, v: u8) -> R {
        self.put_u64(v.into())
    }
    fn serialize_u16(self, v: u16) -> R {
        self.put_u64(v.into())
    }
    fn serialize_u32(self, v: u32) -> R {
        self.put_u64(v.into())
    }
    fn serialize_u64(self, v: u64) -> R {
        self.put_u64(v)
    }
    fn serialize_f32(self, v: f32) -> R {
        self.put_f64(v.into())
    }
    fn serialize_f64(self, v: f64) -> R {
        self.put_f64(v)
    }
    fn serialize_char(self, v: char) -> R {
        let mut b = [0u8; 4];
        self.put_escaped(TAG_STRING, v.encode_utf8(&mut b).as_bytes())
    }
    fn serialize_str(self, v: &str) -> R {
        self.put_escaped(TAG_STRING, v.as_bytes())
    }
    fn serialize_bytes(self, v: &[u8]) -> R {
        self.put_escaped(TAG_BYTES, v)
    }
    fn serialize_none(self) -> R {
        self.put_null()
    }
    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> R {
        value.serialize(self)
    }
    fn serialize_unit(self) -> R {
        self.put_null()
    }
    fn serialize_unit_struct(self, _name: &'static str) -> R {
        self.put_null()
    }
    fn serialize_unit_variant(self, _n: &'static str, idx: u32, _v: &'static str) -> R {
        self.put_u64(idx.into())
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(self, name: &'static str, value: &T) -> R {
        if name == DESC_NAME {
            self.desc = !self.desc;
            let r = value.serialize(&mut *self);
            self.desc = !self.desc;
            r
        } else {
            value.serialize(self)
        }
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _n: &'static str,
        idx: u32,
        _v: &'static str,
        value: &T,
    ) -> R {
        self.put_u64(idx.into())?;
        value.serialize(self)
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Compound<'a, 'b>, KeyError> {
        if self.in_seq {
            return Err(KeyError::msg("nested sequences cannot be key fields"));
        }
        self.begin()?;
        self.in_seq = true;
        Ok(Compound {
            ser: self,
            seq: true,
        })
    }
    fn serialize_tuple(self, _len: usize) -> Result<Compound<'a, 'b>, KeyError> {
        Ok(Compound {
            ser: self,
            seq: false,
        })
    }
    fn serialize_tuple_struct(
        self,
        _n: &'static str,
        _len: usize,
    ) -> Result<Compound<'a, 'b>, KeyError> {
        Ok(Compound {
            ser: self,
            seq: false,
        })
    }
    fn serialize_tuple_variant(
        self,
        _n: &'static str,
        idx: u32,
        _v: &'static str,
        _len: usize,
    ) -> Result<Compound<'a, 'b>, KeyError> {
        self.put_u64(idx.into())?;
        Ok(Compound {
            ser: self,
            seq: false,
        })
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, KeyError> {
        Err(KeyError::msg(
            "maps cannot be keys (their order is not a key order)",
        ))
    }
    fn serialize_struct(self, _n: &'static str, _len: usize) -> Result<Compound<'a, 'b>, KeyError> {
        Ok(Compound {
            ser: self,
            seq: false,
        })
    }
    fn serialize_struct_variant(
        self,
        _n: &'static str,
        idx: u32,
        _v: &'static str,
        _len: usize,
    ) -> Result<Compound<'a, 'b>, KeyError> {
        self.put_u64(idx.into())?;
        Ok(Compound {
            ser: self,
            seq: false,
        })
    }
    fn serialize_i128(self, v: i128) -> R {
        let v = i64::try_from(v).map_err(|_| KeyError::msg("i128 key out of the int64 range"))?;
        self.put_i64(v)
    }
    fn serialize_u128(self, v: u128) -> R {
        let v = u64::try_from(v).map_err(|_| KeyError::msg("u128 key out of the uint64 range"))?;
        self.put_u64(v)
    }
}

/// Tuples, structs and sequences: their elements are consecutive fields.
pub(crate) struct Compound<'a, 'b> {
    ser: &'b mut KeySerializer<'a>,
    seq: bool,
}

impl Compound<'_, '_> {
    fn elem<T: ?Sized + Serialize>(&mut self, v: &T) -> R {
        v.serialize(&mut *self.ser)
    }
    fn done(self) -> R {
        if self.seq {
            self.ser.in_seq = false;
            self.ser.after_seq = true;
        }
        Ok(())
    }
}

impl ser::SerializeSeq for Compound<'_, '_> {
    type Ok = ();
    type Error = KeyError;
    fn serialize_element<T: ?Sized + Serialize>(&mut self, v: &T) -> R {
        self.elem(v)
    }
    fn end(self) -> R {
        self.done()
    }
}
impl ser::SerializeTuple for Compound<'_, '_> {
    type Ok = ();
    type Error = KeyError;
    fn serialize_element<T: ?Sized + Serialize>(&mut self, v: &T) -> R {
        self.elem(v)
    }
    fn end(self) -> R {
        self.done()
    }
}
impl ser::SerializeTupleStruct for Compound<'_, '_> {
    type Ok = ();
    type Error = KeyError;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, v: &T) -> R {
        self.elem(v)
    }
    fn end(self) -> R {
        self.done()
    }
}
impl ser::SerializeTupleVariant for Compound<'_, '_> {
    type Ok = ();
    type Error = KeyError;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, v: &T) -> R {
        self.elem(v)
    }
    fn end(self) -> R {
        self.done()
    }
}
impl ser::SerializeStruct for Compound<'_, '_> {
    type Ok = ();
    type Error = KeyError;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, _k: &'static str, v: &T) -> R {
        self.elem(v)
    }
    fn end(self) -> R {
        self.done()
    }
}
impl ser::SerializeStructVariant for Compound<'_, '_> {
    type Ok = ();
    type Error = KeyError;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, _k: &'static str, v: &T) -> R {
        self.elem(v)
    }
    fn end(self) -> R {
        self.done()
    }
}
