//! The API: SOP's methods, cursors, iterators, errors, 2PC, contexts.

mod common;

use serde::{Deserialize, Serialize};
use sop::{BtreeOptions, Context, Error, ErrorKind, Item};

#[test]
fn announcement_semantics_add_existing_is_ok_false() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = Context::new();
    for round in 0..3 {
        let db = common::open(dir.path());
        let trans = db.begin_transaction(&ctx).unwrap();
        let b = db
            .new_btree::<String, String>(&ctx, "sys_config", &trans, None)
            .unwrap();
        let added = b
            .add(&ctx, "max_connections".to_string(), "10000".to_string())
            .unwrap();
        assert_eq!(added, round == 0);
        trans.commit(&ctx).unwrap();
    }
    let db = common::open(dir.path());
    let t = db.begin_read_transaction(&ctx).unwrap();
    let b = db
        .open_btree::<String, String>(&ctx, "sys_config", &t)
        .unwrap();
    assert_eq!(b.count(&ctx).unwrap(), 1);
    assert_eq!(
        b.get(&ctx, &"max_connections".into()).unwrap().as_deref(),
        Some("10000")
    );
    assert_eq!(b.key_spec(), None);
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Account {
    owner: String,
    balance: i64,
    tags: Vec<String>,
}

#[test]
fn crud_and_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::open(dir.path());
    let ctx = Context::new();
    let t = db.begin_transaction(&ctx).unwrap();
    let b = db
        .new_btree::<u64, Account>(&ctx, "acct", &t, None)
        .unwrap();
    assert_eq!(b.key_spec(), Some("(key uint64)"));
    let a = |n: i64| Account {
        owner: format!("o{n}"),
        balance: n * 10,
        tags: vec!["x".into(); n as usize],
    };
    assert_eq!(
        b.add_items(&ctx, (1..=5).map(|i| Item::new(i as u64, a(i))))
            .unwrap(),
        5
    );
    assert!(!b.add(&ctx, 3, a(9)).unwrap());
    assert!(!b.add_if_not_exist(&ctx, 3, a(9)).unwrap());
    assert!(b.update(&ctx, 3, a(30)).unwrap());
    assert!(!b.update(&ctx, 99, a(1)).unwrap());
    assert!(b.upsert(&ctx, 6, a(6)).unwrap());
    assert_eq!(b.get(&ctx, &3).unwrap(), Some(a(30)));
    assert_eq!(b.get(&ctx, &42).unwrap(), None);
    assert!(b.remove(&ctx, &1).unwrap());
    assert!(!b.remove(&ctx, &1).unwrap());
    assert_eq!(b.count(&ctx).unwrap(), 5);
    assert_eq!(b.get_items(&ctx, &[2, 7]).unwrap(), vec![Some(a(2)), None]);

    // SOP-style navigation
    assert!(b.first(&ctx).unwrap());
    assert_eq!(b.current_key(&ctx).unwrap(), Some(2));
    assert!(b.next(&ctx).unwrap());
    assert_eq!(b.current_value(&ctx).unwrap(), Some(a(30)));
    assert!(b.last(&ctx).unwrap());
    assert_eq!(b.current_key(&ctx).unwrap(), Some(6));
    assert!(!b.next(&ctx).unwrap());
    assert!(b.previous(&ctx).unwrap());
    assert_eq!(b.current_key(&ctx).unwrap(), Some(5));
    assert!(b.find(&ctx, &4).unwrap());
    assert_eq!(b.current_item(&ctx).unwrap(), Some(Item::new(4, a(4))));
    assert!(!b.find(&ctx, &100).unwrap());

    // iterators and ranges
    let keys =
        |it: sop::Iter<'_, '_, u64, Account>| -> Vec<u64> { it.map(|r| r.unwrap().0).collect() };
    assert_eq!(keys(b.iter()), [2, 3, 4, 5, 6]);
    assert_eq!(keys(b.range(3..5)), [3, 4]);
    assert_eq!(keys(b.range(3..=5)), [3, 4, 5]);
    assert_eq!(keys(b.range(..4)), [2, 3]);
    assert_eq!(
        keys(b.range((std::ops::Bound::Excluded(3), std::ops::Bound::Unbounded))),
        [4, 5, 6]
    );
    assert_eq!(
        b.range(3..=5)
            .rev()
            .map(|r| r.unwrap().0)
            .collect::<Vec<_>>(),
        [5, 4, 3]
    );
    assert_eq!(
        b.range(..6).rev().map(|r| r.unwrap().0).collect::<Vec<_>>(),
        [5, 4, 3, 2]
    );
    // both ends meet in the middle
    let mut it = b.iter();
    assert_eq!(it.next().unwrap().unwrap().0, 2);
    assert_eq!(it.next_back().unwrap().unwrap().0, 6);
    assert_eq!(it.next().unwrap().unwrap().0, 3);
    assert_eq!(it.next_back().unwrap().unwrap().0, 5);
    assert_eq!(it.next().unwrap().unwrap().0, 4);
    assert!(it.next_back().is_none());
    assert!(it.next().is_none());
    drop(it); // an iterator borrows the transaction too
    t.commit(&ctx).unwrap();

    let t = db.begin_read_transaction(&ctx).unwrap();
    let b = db.open_btree::<u64, Account>(&ctx, "acct", &t).unwrap();
    assert_eq!(b.count(&ctx).unwrap(), 5);
    let e = b.add(&ctx, 50, a(1)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ReadOnly);
    assert_eq!(db.list_btrees(&ctx, &t).unwrap(), vec!["acct".to_string()]);
}

#[test]
fn compound_prefix_scan() {
    #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
    struct Emp {
        region: String,
        dept: String,
        id: sop::Desc<i64>,
    }
    let dir = tempfile::tempdir().unwrap();
    let db = common::open(dir.path());
    let ctx = Context::new();
    let t = db.begin_transaction(&ctx).unwrap();
    let b = db
        .new_btree::<Emp, String>(&ctx, "staff", &t, None)
        .unwrap();
    assert_eq!(
        b.key_spec(),
        Some("(region string, dept string, id int64 desc)")
    );
    for (r, d, id, n) in [
        ("US", "Sales", 7, "Grace"),
        ("US", "Sales", 21, "Barbara"),
        ("US", "Eng", 3, "Ada"),
        ("UK", "Sales", 5, "Alan"),
        ("USA", "Sales", 1, "Nobody"),
    ] {
        let k = Emp {
            region: r.into(),
            dept: d.into(),
            id: sop::Desc(id),
        };
        assert!(b.add(&ctx, k, n.into()).unwrap());
    }
    let names: Vec<String> = b.prefix(&("US",)).map(|r| r.unwrap().1).collect();
    assert_eq!(names, ["Ada", "Barbara", "Grace"]);
    let names: Vec<String> = b
        .prefix(&("US", "Sales"))
        .rev()
        .map(|r| r.unwrap().1)
        .collect();
    assert_eq!(names, ["Grace", "Barbara"]);
    t.commit(&ctx).unwrap();
}

#[test]
fn text_key_prefix_and_empty_key() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::open(dir.path());
    let ctx = Context::new();
    let t = db.begin_transaction(&ctx).unwrap();
    let b = db.new_btree::<String, u32>(&ctx, "cfg", &t, None).unwrap();
    for (i, k) in ["app.a", "app.b", "apq", "ap"].iter().enumerate() {
        b.add(&ctx, k.to_string(), i as u32).unwrap();
    }
    let ks: Vec<String> = b.prefix("app.").map(|r| r.unwrap().0).collect();
    assert_eq!(ks, ["app.a", "app.b"]);
    let e = b.add(&ctx, String::new(), 1).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
}

#[test]
fn wrong_types_on_reopen_are_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::open(dir.path());
    let ctx = Context::new();
    let t = db.begin_transaction(&ctx).unwrap();
    let b = db.new_btree::<u64, String>(&ctx, "nums", &t, None).unwrap();
    b.add(&ctx, 1, "one".into()).unwrap();
    let s = db
        .new_btree::<String, String>(&ctx, "text", &t, None)
        .unwrap();
    s.add(&ctx, "k".into(), "v".into()).unwrap();
    t.commit(&ctx).unwrap();

    let t = db.begin_transaction(&ctx).unwrap();
    let e = db
        .open_btree::<String, String>(&ctx, "nums", &t)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TypeMismatch);
    assert!(e.message().contains("(key uint64)"), "{e}");
    let e = db
        .new_btree::<String, String>(&ctx, "nums", &t, None)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TypeMismatch);
    let e = db
        .open_btree::<(String, u64), String>(&ctx, "nums", &t)
        .unwrap_err();
    assert!(e.message().contains("(f0 string, f1 uint64)"), "{e}");
    let e = db.open_btree::<u64, String>(&ctx, "text", &t).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TypeMismatch);
    // wrong value type: a decode error naming the problem, never garbage
    let b = db.open_btree::<u64, Vec<u32>>(&ctx, "nums", &t).unwrap();
    let e = b.get(&ctx, &1).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Encoding);
    assert!(e.message().contains("format byte"), "{e}");
    let e = db.open_btree::<u64, u64>(&ctx, "missing", &t).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    let e = db
        .new_btree::<u64, String>(
            &ctx,
            "nums",
            &t,
            Some(BtreeOptions {
                is_unique: false,
                ..Default::default()
            }),
        )
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
}

#[test]
fn every_libsop_code_maps_to_a_kind() {
    // every code in libsop's one table (src/errors.def) has its own kind
    let table =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../src/errors.def"))
            .unwrap();
    let codes: Vec<i32> = table
        .lines()
        .filter_map(|l| l.strip_prefix("X("))
        .map(|l| l.split(',').nth(1).unwrap().trim().parse().unwrap())
        .filter(|&c| c != 0)
        .collect();
    assert!(codes.len() >= 15, "{codes:?}");
    for &c in &codes {
        let k = ErrorKind::from_code(c);
        assert_ne!(k, ErrorKind::Other, "libsop code {c} has no ErrorKind");
        assert_eq!(k.code(), c);
        assert_eq!(Error::from_code(c, "").is_retryable(), c == -3 || c == -4);
    }
    let kinds: Vec<ErrorKind> = (1..=15).map(|i| ErrorKind::from_code(-i)).collect();
    for (i, k) in kinds.iter().enumerate() {
        assert_ne!(*k, ErrorKind::Other, "code {}", -(i as i32) - 1);
        assert_eq!(k.code(), -(i as i32) - 1);
        for other in &kinds[..i] {
            assert_ne!(k, other);
        }
    }
    assert_eq!(ErrorKind::from_code(-999), ErrorKind::Other);
    assert!(Error::from_code(-3, "x").is_retryable());
    assert!(Error::from_code(-4, "x").is_retryable());
    assert!(!Error::from_code(-7, "x").is_retryable());
    assert_eq!(
        Error::from_code(-3, "detail").to_string(),
        "conflict with a concurrent commit; retry the transaction: detail"
    );
}

#[test]
fn drop_rolls_back_and_remove_btree() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::open(dir.path());
    let ctx = Context::new();
    {
        let t = db.begin_transaction(&ctx).unwrap();
        let b = db.new_btree::<i32, i32>(&ctx, "gone", &t, None).unwrap();
        b.add(&ctx, 1, 1).unwrap();
    } // dropped: rolled back
    let t = db.begin_transaction(&ctx).unwrap();
    assert!(db.list_btrees(&ctx, &t).unwrap().is_empty());
    let b = db.new_btree::<i32, i32>(&ctx, "kept", &t, None).unwrap();
    b.add(&ctx, 1, 1).unwrap();
    t.commit(&ctx).unwrap();
    let t = db.begin_transaction(&ctx).unwrap();
    assert!(db.remove_btree(&ctx, "kept", &t).unwrap());
    assert!(!db.remove_btree(&ctx, "kept", &t).unwrap());
    t.rollback(&ctx).unwrap();
    let t = db.begin_read_transaction(&ctx).unwrap();
    assert_eq!(db.list_btrees(&ctx, &t).unwrap(), ["kept"]);
}

#[test]
fn context_cancel_and_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::open(dir.path());
    let ctx = Context::new();
    let t = db.begin_transaction(&ctx).unwrap();
    let b = db.new_btree::<u32, u32>(&ctx, "c", &t, None).unwrap();
    for i in 0..500 {
        b.add(&ctx, i, i).unwrap();
    }
    let c2 = Context::new();
    let mut it = b.iter().with_context(&c2);
    assert!(it.next().unwrap().is_ok());
    c2.cancel();
    let r: Vec<_> = it.collect();
    assert!(r.len() <= 64, "stopped within 64 steps, took {}", r.len());
    assert_eq!(
        r.last().unwrap().as_ref().unwrap_err().kind(),
        ErrorKind::Cancelled
    );
    assert_eq!(b.get(&c2, &1).unwrap_err().kind(), ErrorKind::Cancelled);
    let past = Context::with_timeout(std::time::Duration::ZERO);
    assert_eq!(
        b.add(&past, 9999, 1).unwrap_err().kind(),
        ErrorKind::Timeout
    );
    // a cancelled context makes commit fail and roll back
    assert_eq!(t.commit(&c2).unwrap_err().kind(), ErrorKind::Cancelled);
    let t = db.begin_read_transaction(&ctx).unwrap();
    assert!(db.list_btrees(&ctx, &t).unwrap().is_empty());
}

#[test]
fn two_phase_commit_and_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = Context::new();
    let db = common::open(dir.path());
    let t = db.begin_transaction(&ctx).unwrap();
    let b = db.new_btree::<String, i64>(&ctx, "bank", &t, None).unwrap();
    b.add(&ctx, "a".into(), 100).unwrap();
    let p = t.prepare(&ctx, Some(b"xid-1")).unwrap();
    assert_ne!(p.id(), 0);
    // phase 2 goes through even with a finished context
    let done = Context::new();
    done.cancel();
    p.commit(&done).unwrap();

    let t = db.begin_transaction(&ctx).unwrap();
    let b = db.open_btree::<String, i64>(&ctx, "bank", &t).unwrap();
    b.upsert(&ctx, "a".into(), 50).unwrap();
    let p = t.prepare(&ctx, Some(b"xid-2")).unwrap();
    // a prepared key is held: another writer of it is told to back off
    let t2 = db.begin_transaction(&ctx).unwrap();
    let b2 = db.open_btree::<String, i64>(&ctx, "bank", &t2).unwrap();
    let busy = b2
        .upsert(&ctx, "a".into(), 1)
        .and_then(|_| t2.commit(&ctx))
        .unwrap_err();
    assert!(busy.is_retryable(), "{busy}");
    p.rollback(&ctx).unwrap();

    let t = db.begin_read_transaction(&ctx).unwrap();
    let b = db.open_btree::<String, i64>(&ctx, "bank", &t).unwrap();
    assert_eq!(b.get(&ctx, &"a".into()).unwrap(), Some(100));
}

/// A process dies (abort: no destructor runs) with a transaction prepared;
/// the next open lists it with its xid, and it is resolved by id.
#[test]
fn prepared_survives_a_crash_and_is_resolved_by_id() {
    let ctx = Context::new();
    if let Ok(dir) = std::env::var("SOP_TEST_CRASH_DIR") {
        let db = common::open(std::path::Path::new(&dir));
        let t = db.begin_transaction(&ctx).unwrap();
        let b = db.new_btree::<String, i64>(&ctx, "bank", &t, None).unwrap();
        b.add(&ctx, "crash".into(), 7).unwrap();
        let _p = t.prepare(&ctx, Some(b"coord-42")).unwrap();
        eprintln!("child: prepared");
        std::process::abort();
    }
    let dir = tempfile::tempdir().unwrap();
    {
        let db = common::open(dir.path());
        let t = db.begin_transaction(&ctx).unwrap();
        db.new_btree::<String, i64>(&ctx, "bank", &t, None).unwrap();
        t.commit(&ctx).unwrap();
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "prepared_survives_a_crash_and_is_resolved_by_id",
            "--nocapture",
        ])
        .env("SOP_TEST_CRASH_DIR", dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("child: prepared"), "{err}");
    assert!(!out.status.success());

    let db = common::open(dir.path());
    let list = db.prepared(&ctx).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].xid, b"coord-42");
    let t = db.begin_read_transaction(&ctx).unwrap();
    let b = db.open_btree::<String, i64>(&ctx, "bank", &t).unwrap();
    assert_eq!(b.get(&ctx, &"crash".into()).unwrap(), None);
    drop(b);
    drop(t);
    db.commit_prepared(&ctx, list[0].id).unwrap();
    assert!(db.prepared(&ctx).unwrap().is_empty());
    let t = db.begin_read_transaction(&ctx).unwrap();
    let b = db.open_btree::<String, i64>(&ctx, "bank", &t).unwrap();
    assert_eq!(b.get(&ctx, &"crash".into()).unwrap(), Some(7));
}

#[test]
fn prepared_list_and_resolution_by_id() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = Context::new();
    let db = common::open(dir.path());
    let t = db.begin_transaction(&ctx).unwrap();
    let b = db.new_btree::<String, i64>(&ctx, "bank", &t, None).unwrap();
    b.add(&ctx, "a".into(), 1).unwrap();
    let p = t.prepare(&ctx, Some(b"coord-7")).unwrap();
    let list = db.prepared(&ctx).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].xid, b"coord-7");
    assert_eq!(list[0].id, p.id());
    p.commit(&ctx).unwrap();
    assert!(db.prepared(&ctx).unwrap().is_empty());
    assert_eq!(
        db.commit_prepared(&ctx, 12345).unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn zero_copy_views_and_their_guard() {
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Rec<'a> {
        id: u32,
        name: &'a str,
    }
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct RecOwned {
        id: u32,
        name: String,
    }
    let dir = tempfile::tempdir().unwrap();
    let db = common::open(dir.path());
    let ctx = Context::new();
    let t = db.begin_transaction(&ctx).unwrap();
    let b = db.new_btree::<u32, RecOwned>(&ctx, "r", &t, None).unwrap();
    for i in 0..100 {
        b.add(
            &ctx,
            i,
            RecOwned {
                id: i,
                name: format!("n{i}"),
            },
        )
        .unwrap();
    }
    // a borrowed struct decoded from the node bytes, no copy
    let got = b
        .get_with(&ctx, &42, |v| {
            let r: Rec<'_> = sop::value::decode_binary(v).unwrap();
            (r.id, r.name.to_string())
        })
        .unwrap();
    assert_eq!(got, Some((42, "n42".to_string())));
    assert_eq!(b.get_with(&ctx, &1000, |v| v.len()).unwrap(), None);
    let mut seen = Vec::new();
    let n = b
        .scan_with(&ctx, 10..20, |k, _v| {
            seen.push(sop::keys::decode::<u32>(k).unwrap());
            seen.len() < 5
        })
        .unwrap();
    assert_eq!((n, seen), (5, vec![10, 11, 12, 13, 14]));
    assert_eq!(b.scan_with(&ctx, .., |_, _| true).unwrap(), 100);
    // inside a view, every call on the transaction is refused
    let mut it = b.iter();
    b.scan_with(&ctx, ..1, |_, _| {
        assert_eq!(b.get(&ctx, &1).unwrap_err().kind(), ErrorKind::BadState);
        assert_eq!(b.first(&ctx).unwrap_err().kind(), ErrorKind::BadState);
        assert_eq!(b.count(&ctx).unwrap_err().kind(), ErrorKind::BadState);
        assert_eq!(it.next().unwrap().unwrap_err().kind(), ErrorKind::BadState);
        true
    })
    .unwrap();
    // and allowed again afterwards
    assert_eq!(b.get(&ctx, &1).unwrap().unwrap().id, 1);
    drop(it);
    t.commit(&ctx).unwrap();
}
