//! Threads updating the same keys concurrently. Conflicting commits fail with
//! a retryable error; `run_in_transaction` retries them, so the totals are exact.
//!
//!     cargo run --example threads -- ./data

use sop::{Context, Database, DatabaseOptions, SyncMode};

fn main() -> sop::Result<()> {
    let folder = std::env::args().nth(1).unwrap_or_else(|| "./data".into());
    let ctx = Context::new();
    let mut options = DatabaseOptions::default();
    options.stores_folders = Some(vec![folder]);
    options.sync_mode = SyncMode::Normal;
    let db = Database::new(&ctx, options)?;

    const THREADS: u64 = 4;
    const TRANSFERS: u64 = 200;
    db.run_in_transaction(&ctx, |t| {
        let b = db.new_btree::<String, i64>(&ctx, "accounts", t, None)?;
        b.upsert(&ctx, "alice".into(), 1_000_000)?;
        b.upsert(&ctx, "bob".into(), 0)?;
        Ok(())
    })?;

    let attempts = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                for _ in 0..TRANSFERS {
                    db.run_in_transaction(&ctx, |t| {
                        attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let b = db.open_btree::<String, i64>(&ctx, "accounts", t)?;
                        let a = b.get(&ctx, &"alice".into())?.unwrap_or(0);
                        let c = b.get(&ctx, &"bob".into())?.unwrap_or(0);
                        b.update(&ctx, "alice".into(), a - 1)?;
                        b.update(&ctx, "bob".into(), c + 1)?;
                        Ok(())
                    })
                    .expect("transfer");
                }
            });
        }
    });

    let t = db.begin_read_transaction(&ctx)?;
    let b = db.open_btree::<String, i64>(&ctx, "accounts", &t)?;
    let alice = b.get(&ctx, &"alice".into())?.unwrap();
    let bob = b.get(&ctx, &"bob".into())?.unwrap();
    println!(
        "alice {alice}, bob {bob}, sum {} ({} transfers, {} attempts)",
        alice + bob,
        THREADS * TRANSFERS,
        attempts.into_inner()
    );
    assert_eq!(bob, (THREADS * TRANSFERS) as i64);
    assert_eq!(alice + bob, 1_000_000);
    Ok(())
}
