// Range iteration bounded by libsop (sop_cursor_set_range), the lending
// iterator, and releasing a prepared transaction (sop_txn_release).
mod common;

use std::ops::Bound::{self, Excluded, Included, Unbounded};

use sop::{BtreeOptions, Context, ErrorKind};

/// What `range((lo, hi))` must yield from the sorted `keys`.
fn oracle(keys: &[i64], lo: Bound<i64>, hi: Bound<i64>) -> Vec<i64> {
    keys.iter()
        .copied()
        .filter(|&k| match lo {
            Included(l) => k >= l,
            Excluded(l) => k > l,
            Unbounded => true,
        })
        .filter(|&k| match hi {
            Included(h) => k <= h,
            Excluded(h) => k < h,
            Unbounded => true,
        })
        .collect()
}

fn bounds(points: &[i64]) -> Vec<Bound<i64>> {
    let mut v = vec![Unbounded];
    for &p in points {
        v.push(Included(p));
        v.push(Excluded(p));
    }
    v
}

#[test]
fn range_matches_an_oracle_for_every_bound_pair_both_directions() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = Context::new();
    let db = common::open(dir.path());
    let t = db.begin_transaction(&ctx).unwrap();
    // small nodes, so bounds fall inside, at the edges of and between leaves
    let opts = BtreeOptions {
        slot_length: 4,
        ..Default::default()
    };
    let b = db
        .new_btree::<i64, String>(&ctx, "r", &t, Some(opts))
        .unwrap();
    // multiples of 3 from -30 to 60, negative keys included
    let keys: Vec<i64> = (-10..=20).map(|i| i * 3).collect();
    for &k in &keys {
        b.add(&ctx, k, format!("v{k}")).unwrap();
    }
    // bound points on keys, between keys and outside the stored span
    let points: Vec<i64> = vec![
        -40, -31, -30, -29, -1, 0, 1, 2, 3, 4, 29, 30, 31, 59, 60, 61, 90,
    ];
    let bs = bounds(&points);
    let mut pairs = 0;
    for &lo in &bs {
        for &hi in &bs {
            let want = oracle(&keys, lo, hi);
            let fwd: Vec<i64> = b.range((lo, hi)).map(|r| r.unwrap().0).collect();
            assert_eq!(fwd, want, "forward {lo:?}..{hi:?}");
            let mut rev: Vec<i64> = b.range((lo, hi)).rev().map(|r| r.unwrap().0).collect();
            rev.reverse();
            assert_eq!(rev, want, "backward {lo:?}..{hi:?}");
            // both ends at once: alternate front and back until they meet
            let mut it = b.range((lo, hi));
            let (mut front, mut back) = (Vec::new(), Vec::new());
            while let Some(r) = it.next() {
                front.push(r.unwrap().0);
                match it.next_back() {
                    Some(r) => back.push(r.unwrap().0),
                    None => break,
                }
            }
            back.reverse();
            front.extend(back);
            assert_eq!(front, want, "both ends {lo:?}..{hi:?}");
            // the zero-copy scan and the lending iterator see the same
            let mut seen = Vec::new();
            let n = b
                .scan_with(&ctx, (lo, hi), |k, v| {
                    let k: i64 = sop::keys::decode(k).unwrap();
                    assert_eq!(v, format!("v{k}").as_bytes());
                    seen.push(k);
                    true
                })
                .unwrap();
            assert_eq!(
                (n as usize, &seen),
                (want.len(), &want),
                "scan_with {lo:?}..{hi:?}"
            );
            let mut it = b.range((lo, hi));
            let mut lent = Vec::new();
            while let Some(r) = it.next_ref() {
                let (k, v) = r.unwrap();
                assert_eq!(v, &format!("v{k}"));
                lent.push(*k);
            }
            assert_eq!(lent, want, "next_ref {lo:?}..{hi:?}");
            let mut it = b.range((lo, hi));
            let mut lent = Vec::new();
            while let Some(r) = it.next_back_ref() {
                lent.push(*r.unwrap().0);
            }
            lent.reverse();
            assert_eq!(lent, want, "next_back_ref {lo:?}..{hi:?}");
            pairs += 1;
        }
    }
    assert_eq!(pairs, bs.len() * bs.len());
    // the standard range forms
    assert_eq!(
        b.range(0..7).map(|r| r.unwrap().0).collect::<Vec<_>>(),
        [0, 3, 6]
    );
    assert_eq!(
        b.range(..=-27).map(|r| r.unwrap().0).collect::<Vec<_>>(),
        [-30, -27]
    );
    assert_eq!(
        b.range(58..).map(|r| r.unwrap().0).collect::<Vec<_>>(),
        [60]
    );
    assert_eq!(b.iter().count(), keys.len());
}

#[test]
fn text_ranges_and_prefixes_are_bounded_by_libsop() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = Context::new();
    let db = common::open(dir.path());
    let t = db.begin_transaction(&ctx).unwrap();
    let b = db.new_btree::<String, String>(&ctx, "s", &t, None).unwrap();
    // in byte order ("\u{ff}" is 0xC3 0xBF in UTF-8)
    let keys = ["a", "ab", "abc", "abd", "ac", "b", "ba", "b\u{ff}", "c"];
    for k in keys {
        b.add(&ctx, k.to_string(), k.to_uppercase()).unwrap();
    }
    fn got<I: Iterator<Item = sop::Result<(String, String)>>>(it: I) -> Vec<String> {
        it.map(|r| r.unwrap().0).collect()
    }
    assert_eq!(got(b.prefix("ab")), ["ab", "abc", "abd"]);
    assert_eq!(got(b.prefix("ab").rev()), ["abd", "abc", "ab"]);
    assert_eq!(got(b.prefix("b")), ["b", "ba", "b\u{ff}"]);
    assert_eq!(got(b.prefix("")), keys);
    assert_eq!(
        got(b.range("ab".to_string().."ac".to_string())),
        ["ab", "abc", "abd"]
    );
    assert_eq!(
        got(b.range((Excluded("ab".to_string()), Included("b".to_string())))),
        ["abc", "abd", "ac", "b"]
    );
    // lo above hi: empty, not an error
    assert!(got(b.range((Included("c".to_string()), Included("a".to_string())))).is_empty());
    // values reuse the lent String
    let mut it = b.iter();
    let mut vals = Vec::new();
    while let Some(r) = it.next_ref() {
        let (k, v) = r.unwrap();
        assert_eq!(&k.to_uppercase(), v);
        vals.push(v.clone());
    }
    assert_eq!(vals.len(), keys.len());
    // an empty bound is no key: a clear error, from the iterator
    let e = b.range("".to_string()..).next().unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
}

/// Prepare, release the handle, reopen the database: the transaction is
/// still prepared and is resolved by id, in both outcomes.
#[test]
fn released_prepared_transaction_is_resolved_by_id_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = Context::new();
    let (commit_id, rollback_id);
    {
        let db = common::open(dir.path());
        let t = db.begin_transaction(&ctx).unwrap();
        let b = db.new_btree::<String, i64>(&ctx, "bank", &t, None).unwrap();
        b.add(&ctx, "base".into(), 1).unwrap();
        t.commit(&ctx).unwrap();

        let t = db.begin_transaction(&ctx).unwrap();
        let b = db.open_btree::<String, i64>(&ctx, "bank", &t).unwrap();
        b.add(&ctx, "to-commit".into(), 10).unwrap();
        b.upsert(&ctx, "base".into(), 2).unwrap();
        let p = t.prepare(&ctx, Some(b"coord-c")).unwrap();
        let id = p.id();
        commit_id = p.release(&ctx).unwrap();
        assert_eq!(commit_id, id);

        let t = db.begin_transaction(&ctx).unwrap();
        let b = db.open_btree::<String, i64>(&ctx, "bank", &t).unwrap();
        b.add(&ctx, "to-roll-back".into(), 20).unwrap();
        rollback_id = t
            .prepare(&ctx, Some(b"coord-r"))
            .unwrap()
            .release(&ctx)
            .unwrap();
        assert_ne!(commit_id, rollback_id);

        // released, not resolved: both listed, their writes not visible
        let ids: Vec<u64> = db.prepared(&ctx).unwrap().iter().map(|p| p.id).collect();
        assert_eq!(ids, [commit_id, rollback_id]);
        let r = db.begin_read_transaction(&ctx).unwrap();
        let b = db.open_btree::<String, i64>(&ctx, "bank", &r).unwrap();
        assert_eq!(b.get(&ctx, &"base".into()).unwrap(), Some(1));
        assert_eq!(b.get(&ctx, &"to-commit".into()).unwrap(), None);
        drop(b);
        drop(r);
        db.close().unwrap();
    }
    let db = common::open(dir.path());
    let list = db.prepared(&ctx).unwrap();
    let found: Vec<(u64, &[u8])> = list.iter().map(|p| (p.id, &p.xid[..])).collect();
    assert_eq!(
        found,
        [(commit_id, &b"coord-c"[..]), (rollback_id, &b"coord-r"[..])]
    );
    db.commit_prepared(&ctx, commit_id).unwrap();
    db.rollback_prepared(&ctx, rollback_id).unwrap();
    assert!(db.prepared(&ctx).unwrap().is_empty());
    assert_eq!(
        db.commit_prepared(&ctx, commit_id).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    let r = db.begin_read_transaction(&ctx).unwrap();
    let b = db.open_btree::<String, i64>(&ctx, "bank", &r).unwrap();
    assert_eq!(b.get(&ctx, &"base".into()).unwrap(), Some(2));
    assert_eq!(b.get(&ctx, &"to-commit".into()).unwrap(), Some(10));
    assert_eq!(b.get(&ctx, &"to-roll-back".into()).unwrap(), None);
    assert_eq!(b.count(&ctx).unwrap(), 2);
}

/// Released in this process and resolved by id without a reopen; the
/// released transaction's keys stay held until then.
#[test]
fn released_prepared_transaction_holds_its_keys_until_resolved() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = Context::new();
    let db = common::open(dir.path());
    let t = db.begin_transaction(&ctx).unwrap();
    db.new_btree::<String, i64>(&ctx, "k", &t, None).unwrap();
    t.commit(&ctx).unwrap();
    let t = db.begin_transaction(&ctx).unwrap();
    let b = db.open_btree::<String, i64>(&ctx, "k", &t).unwrap();
    b.add(&ctx, "x".into(), 1).unwrap();
    let id = t.prepare(&ctx, None).unwrap().release(&ctx).unwrap();
    let t2 = db.begin_transaction(&ctx).unwrap();
    let b2 = db.open_btree::<String, i64>(&ctx, "k", &t2).unwrap();
    let busy = b2
        .upsert(&ctx, "x".into(), 5)
        .and_then(|_| t2.commit(&ctx))
        .unwrap_err();
    assert!(busy.is_retryable(), "{busy}");
    db.rollback_prepared(&ctx, id).unwrap();
    let t3 = db.begin_transaction(&ctx).unwrap();
    let b3 = db.new_btree::<String, i64>(&ctx, "k", &t3, None).unwrap();
    assert_eq!(b3.get(&ctx, &"x".into()).unwrap(), None);
    b3.add(&ctx, "x".into(), 3).unwrap();
    t3.commit(&ctx).unwrap();
}
