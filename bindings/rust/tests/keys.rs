//! Key encoding: the bytes of docs/KEYS.md, agreement with libsop's C
//! decoder, and order = Ord order (property tests, in memory and in a store).

mod common;

use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use sop::__private::{c_format, c_validate};
use sop::{keys, Context, Desc};

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02X}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn bytes_match_the_format_table() {
    // docs/KEYS.md "Examples", byte for byte
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (keys::encode(&None::<i64>).unwrap(), "05"),
        (keys::encode(&Desc(None::<i64>)).unwrap(), "FA"),
        (keys::encode(&0i64).unwrap(), "20"),
        (keys::encode(&1i64).unwrap(), "21 01"),
        (keys::encode(&255i64).unwrap(), "21 FF"),
        (keys::encode(&256i64).unwrap(), "22 01 00"),
        (keys::encode(&-1i64).unwrap(), "1F FE"),
        (keys::encode(&-255i64).unwrap(), "1F 00"),
        (keys::encode(&-256i64).unwrap(), "1E FE FF"),
        (
            keys::encode(&i64::MIN).unwrap(),
            "18 7F FF FF FF FF FF FF FF",
        ),
        (
            keys::encode(&i64::MAX).unwrap(),
            "28 7F FF FF FF FF FF FF FF",
        ),
        (keys::encode(&Desc(1i64)).unwrap(), "DE FE"),
        (
            keys::encode(&u64::MAX).unwrap(),
            "38 FF FF FF FF FF FF FF FF",
        ),
        (keys::encode(&0.0f64).unwrap(), "40 80 00 00 00 00 00 00 00"),
        (
            keys::encode(&-0.0f64).unwrap(),
            "40 7F FF FF FF FF FF FF FF",
        ),
        (keys::encode(&1.0f64).unwrap(), "40 BF F0 00 00 00 00 00 00"),
        (
            keys::encode(&f64::NAN).unwrap(),
            "40 FF F8 00 00 00 00 00 00",
        ),
        (
            keys::encode(&-f64::NAN).unwrap(),
            "40 00 07 FF FF FF FF FF FF",
        ),
        (keys::encode(&("",)).unwrap(), "50 00 01"),
        (keys::encode(&("a\0b",)).unwrap(), "50 61 00 FF 62 00 01"),
        (keys::encode(&Desc("a\0b")).unwrap(), "AF 9E FF 00 9D FF FE"),
        (
            keys::encode(&("US", "Sales", Desc(42i64))).unwrap(),
            "50 55 53 00 01 50 53 61 6C 65 73 00 01 DE D5",
        ),
    ];
    for (got, want) in cases {
        assert_eq!(hex(&got), want);
    }
}

#[test]
fn c_formats_rust_keys() {
    let k = keys::encode(&("US", "Sales", Desc(42i64))).unwrap();
    assert_eq!(c_format(&k).unwrap(), r#"("US", "Sales", desc(42))"#);
    let k = keys::encode(&(Some(7u64), None::<String>, true, -2.5f64)).unwrap();
    assert_eq!(c_format(&k).unwrap(), "(7u, null, true, -2.5)");
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Event {
    user: String,
    at: Desc<i64>,
    seq: u32,
}

fn event() -> impl Strategy<Value = Event> {
    (".{0,6}", any::<i64>(), any::<u32>()).prop_map(|(user, at, seq)| Event {
        user,
        at: Desc(at),
        seq,
    })
}

/// Encoded order equals `cmp` order, the key round-trips, and libsop's C
/// decoder accepts the bytes with the expected field count.
fn check_order<K, F>(mut v: Vec<K>, fields: usize, cmp: F)
where
    K: Serialize + serde::de::DeserializeOwned + std::fmt::Debug + PartialEq + Clone,
    F: Fn(&K, &K) -> std::cmp::Ordering,
{
    let mut enc: Vec<(Vec<u8>, K)> = v
        .drain(..)
        .map(|k| (keys::encode(&k).unwrap(), k))
        .collect();
    for (b, k) in &enc {
        assert_eq!(&keys::decode::<K>(b).unwrap(), k);
        assert_eq!(c_validate(b), Ok(fields), "C rejects {k:?}: {}", hex(b));
    }
    enc.sort_by(|a, b| a.0.cmp(&b.0));
    for w in enc.windows(2) {
        assert_ne!(
            cmp(&w[0].1, &w[1].1),
            std::cmp::Ordering::Greater,
            "{:?} sorts before {:?}",
            w[0].1,
            w[1].1
        );
    }
}

fn total(a: &f64, b: &f64) -> std::cmp::Ordering {
    // documented order: IEEE totalOrder with NaNs of one sign equal
    let canon = |x: f64| if x.is_nan() { f64::NAN.copysign(x) } else { x };
    canon(*a).total_cmp(&canon(*b))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn order_i64(v in prop::collection::vec(any::<i64>(), 0..100)) {
        check_order(v, 1, |a, b| a.cmp(b));
    }
    #[test]
    fn order_u64(v in prop::collection::vec(any::<u64>(), 0..100)) {
        check_order(v, 1, |a, b| a.cmp(b));
    }
    #[test]
    fn order_string_tuple(v in prop::collection::vec(("\\PC{0,8}",), 0..100)) {
        check_order(v, 1, |a, b| a.cmp(b));
    }
    #[test]
    fn order_string_i64(v in prop::collection::vec(("[a-c\\x00]{0,4}", any::<i64>()), 0..100)) {
        check_order(v, 2, |a, b| a.cmp(b));
    }
    #[test]
    fn order_struct_desc(v in prop::collection::vec(event(), 0..100)) {
        check_order(v, 3, |a, b| a.cmp(b));
    }
    #[test]
    fn order_option(v in prop::collection::vec(any::<Option<i32>>(), 0..100)) {
        check_order(v, 1, |a, b| a.cmp(b));
    }
    #[test]
    fn order_f64(v in prop::collection::vec(prop_oneof![
        4 => any::<f64>(), 1 => Just(f64::NAN), 1 => Just(-f64::NAN), 1 => Just(0.0),
        1 => Just(-0.0), 1 => Just(f64::INFINITY), 1 => Just(f64::NEG_INFINITY)], 0..100)) {
        let mut enc: Vec<(Vec<u8>, f64)> = v.iter().map(|k| (keys::encode(k).unwrap(), *k)).collect();
        for (b, k) in &enc {
            let d: f64 = keys::decode(b).unwrap();
            prop_assert!(d.to_bits() == k.to_bits() || (k.is_nan() && d.is_nan()
                && d.is_sign_negative() == k.is_sign_negative()));
            prop_assert_eq!(c_validate(b), Ok(1));
        }
        enc.sort_by(|a, b| a.0.cmp(&b.0));
        for w in enc.windows(2) {
            prop_assert_ne!(total(&w[0].1, &w[1].1), std::cmp::Ordering::Greater);
        }
    }
}

/// Thousands of random keys of several shapes through a real store:
/// iteration order (forward and back) is the Ord order, and values round-trip.
fn store_order<K>(name: &str, mut keys_in: Vec<K>)
where
    K: Serialize + serde::de::DeserializeOwned + Ord + Clone + std::fmt::Debug,
{
    let dir = tempfile::tempdir().unwrap();
    let db = common::open(dir.path());
    let ctx = Context::new();
    let t = db.begin_transaction(&ctx).unwrap();
    let b = db
        .new_btree::<K, (u32, String)>(&ctx, name, &t, None)
        .unwrap();
    keys_in.sort();
    keys_in.dedup();
    let mut shuffled = keys_in.clone();
    // deterministic shuffle
    let n = shuffled.len();
    for i in 0..n {
        shuffled.swap(i, (i * 7919 + 13) % n);
    }
    for (i, k) in shuffled.iter().enumerate() {
        assert!(b.add(&ctx, k.clone(), (i as u32, format!("v{i}"))).unwrap());
    }
    t.commit(&ctx).unwrap();
    let t = db.begin_read_transaction(&ctx).unwrap();
    let b = db.open_btree::<K, (u32, String)>(&ctx, name, &t).unwrap();
    let got: Vec<K> = b.iter().map(|r| r.unwrap().0).collect();
    assert_eq!(got, keys_in);
    let back: Vec<K> = b.iter().rev().map(|r| r.unwrap().0).collect();
    assert!(back.iter().eq(keys_in.iter().rev()));
    for (i, k) in shuffled.iter().enumerate() {
        // the value stored under this very key, not just a well-formed one
        assert_eq!(
            b.get(&ctx, k).unwrap(),
            Some((i as u32, format!("v{i}"))),
            "key {k:?}"
        );
    }
    assert_eq!(b.count(&ctx).unwrap(), keys_in.len() as u64);
}

/// f64 keys through a real store: iteration follows the documented total
/// order (forward and back), and every key round-trips bit for bit.
fn store_order_floats(keys_in: Vec<f64>) {
    let dir = tempfile::tempdir().unwrap();
    let db = common::open(dir.path());
    let ctx = Context::new();
    let t = db.begin_transaction(&ctx).unwrap();
    let b = db.new_btree::<f64, u64>(&ctx, "f64", &t, None).unwrap();
    let mut want: Vec<f64> = Vec::new();
    for k in &keys_in {
        if b.add(&ctx, *k, k.to_bits()).unwrap() {
            want.push(*k);
        }
    }
    t.commit(&ctx).unwrap();
    want.sort_by(total);
    let t = db.begin_read_transaction(&ctx).unwrap();
    let b = db.open_btree::<f64, u64>(&ctx, "f64", &t).unwrap();
    let got: Vec<(f64, u64)> = b.iter().map(|r| r.unwrap()).collect();
    assert_eq!(got.len(), want.len());
    for ((k, v), w) in got.iter().zip(&want) {
        assert_eq!(k.to_bits(), w.to_bits());
        assert_eq!(*v, w.to_bits());
    }
    let back: Vec<u64> = b.iter().rev().map(|r| r.unwrap().0.to_bits()).collect();
    assert!(back.iter().eq(want
        .iter()
        .rev()
        .map(|w| w.to_bits())
        .collect::<Vec<_>>()
        .iter()));
    assert_eq!(b.count(&ctx).unwrap(), want.len() as u64);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3, ..ProptestConfig::default() })]
    #[test]
    fn store_order_i64(v in prop::collection::vec(any::<i64>(), 1000..1500)) {
        store_order("i64", v);
    }
    #[test]
    fn store_order_strings(v in prop::collection::vec("\\PC{1,10}", 1000..1500)) {
        store_order("s", v);
    }
    #[test]
    fn store_order_struct(v in prop::collection::vec(event(), 1000..1500)) {
        store_order("ev", v);
    }
    #[test]
    fn store_order_u64(v in prop::collection::vec(any::<u64>(), 1000..1500)) {
        store_order("u64", v);
    }
    #[test]
    fn store_order_string_i64(v in prop::collection::vec(("[a-c\\x00]{0,4}", any::<i64>()), 1000..1500)) {
        store_order("si", v);
    }
    #[test]
    fn store_order_option_i64(v in prop::collection::vec(any::<Option<i64>>(), 1000..1500)) {
        store_order("opt", v);
    }
    #[test]
    fn store_order_f64(v in prop::collection::vec(prop_oneof![
        8 => any::<f64>(), 1 => Just(f64::NAN), 1 => Just(-0.0), 1 => Just(0.0),
        1 => Just(f64::NEG_INFINITY)], 1000..1500)) {
        store_order_floats(v);
    }
    #[test]
    fn store_order_tuple_option(v in prop::collection::vec((any::<Option<u8>>(), "[ab]{0,3}", any::<bool>()), 300..600)) {
        store_order("tup", v);
    }
}

#[test]
fn specs_of_key_types() {
    assert_eq!(
        keys::spec_text::<u64>().unwrap().as_deref(),
        Some("(key uint64)")
    );
    assert_eq!(
        keys::spec_text::<(String, i64)>().unwrap().as_deref(),
        Some("(f0 string, f1 int64)")
    );
    assert_eq!(
        keys::spec_text::<Event>().unwrap().as_deref(),
        Some("(user string, at int64 desc, seq uint64)")
    );
    assert_eq!(
        keys::spec_text::<Option<f64>>().unwrap().as_deref(),
        Some("(key double nullable)")
    );
    assert_eq!(keys::spec_text::<Vec<i64>>().unwrap(), None);
}

#[test]
fn decode_rejects_other_shapes() {
    let k = keys::encode(&(1i64, 2i64)).unwrap();
    assert_eq!(
        keys::decode::<i64>(&k).unwrap_err().kind(),
        sop::ErrorKind::Encoding
    );
    let k = keys::encode(&Desc(1i64)).unwrap();
    let e = keys::decode::<i64>(&k).unwrap_err();
    assert!(e.message().contains("descending"), "{e}");
}
