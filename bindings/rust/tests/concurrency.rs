//! Threads: conflicts are retryable and the retry helper gives exact totals;
//! writers of different keys in one node both commit.

mod common;

use sop::{Context, ErrorKind};

#[test]
fn counter_with_retry_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::open(dir.path());
    let ctx = Context::new();
    let t = db.begin_transaction(&ctx).unwrap();
    let b = db.new_btree::<String, u64>(&ctx, "ctr", &t, None).unwrap();
    for k in ["a", "b"] {
        b.add(&ctx, k.into(), 0).unwrap();
    }
    t.commit(&ctx).unwrap();
    const THREADS: u64 = 4;
    const PER: u64 = 50;
    // Each thread's first attempt reads both counters, then waits until
    // every thread has read them: all four start from the same snapshot, so
    // at most one of those commits can win and the others must conflict and
    // be retried (the retry count below is then certain, not likely).
    let gate = std::sync::Barrier::new(THREADS as usize);
    let attempts = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                let mut first = true;
                for _ in 0..PER {
                    db.run_in_transaction(&ctx, |t| {
                        attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let b = db.open_btree::<String, u64>(&ctx, "ctr", t)?;
                        let n: Vec<u64> = ["a", "b"]
                            .iter()
                            .map(|k| b.get(&ctx, &k.to_string()).map(|v| v.unwrap()))
                            .collect::<sop::Result<_>>()?;
                        if std::mem::take(&mut first) {
                            gate.wait();
                        }
                        for (k, n) in ["a", "b"].iter().zip(n) {
                            b.update(&ctx, k.to_string(), n + 1)?;
                        }
                        Ok(())
                    })
                    .unwrap();
                }
            });
        }
    });
    let attempts = attempts.into_inner();
    assert!(
        attempts >= THREADS * PER + (THREADS - 1),
        "{attempts} attempts: the gated first round must have conflicted"
    );
    let t = db.begin_read_transaction(&ctx).unwrap();
    let b = db.open_btree::<String, u64>(&ctx, "ctr", &t).unwrap();
    assert_eq!(b.get(&ctx, &"a".into()).unwrap(), Some(THREADS * PER));
    assert_eq!(b.get(&ctx, &"b".into()).unwrap(), Some(THREADS * PER));
}

#[test]
fn same_key_conflicts_are_retryable_and_other_keys_merge() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::open(dir.path());
    let ctx = Context::new();
    let t = db.begin_transaction(&ctx).unwrap();
    let b = db.new_btree::<u32, u32>(&ctx, "n", &t, None).unwrap();
    for i in 0..10 {
        b.add(&ctx, i, 0).unwrap();
    }
    t.commit(&ctx).unwrap();

    // same key: the second commit conflicts, retryably
    let t1 = db.begin_transaction(&ctx).unwrap();
    let t2 = db.begin_transaction(&ctx).unwrap();
    let b1 = db.open_btree::<u32, u32>(&ctx, "n", &t1).unwrap();
    let b2 = db.open_btree::<u32, u32>(&ctx, "n", &t2).unwrap();
    let v1 = b1.get(&ctx, &3).unwrap().unwrap();
    let v2 = b2.get(&ctx, &3).unwrap().unwrap();
    b1.update(&ctx, 3, v1 + 1).unwrap();
    b2.update(&ctx, 3, v2 + 1).unwrap();
    t1.commit(&ctx).unwrap();
    let e = t2.commit(&ctx).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert!(e.is_retryable());

    // different keys of the same node (10 keys, one leaf): both commit
    let t1 = db.begin_transaction(&ctx).unwrap();
    let t2 = db.begin_transaction(&ctx).unwrap();
    let b1 = db.open_btree::<u32, u32>(&ctx, "n", &t1).unwrap();
    let b2 = db.open_btree::<u32, u32>(&ctx, "n", &t2).unwrap();
    b1.update(&ctx, 1, 11).unwrap();
    b2.update(&ctx, 8, 88).unwrap();
    t1.commit(&ctx).unwrap();
    t2.commit(&ctx).unwrap();
    let t = db.begin_read_transaction(&ctx).unwrap();
    let b = db.open_btree::<u32, u32>(&ctx, "n", &t).unwrap();
    assert_eq!(b.get(&ctx, &1).unwrap(), Some(11));
    assert_eq!(b.get(&ctx, &8).unwrap(), Some(88));
    assert_eq!(b.get(&ctx, &3).unwrap(), Some(1));
}

#[test]
fn database_is_send_sync_and_transaction_is_send() {
    fn ss<T: Send + Sync>() {}
    fn s<T: Send>() {}
    ss::<sop::Database>();
    s::<sop::Transaction<'static>>();
    ss::<sop::Context>();
    ss::<sop::Error>();
}
