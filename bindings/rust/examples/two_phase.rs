//! Two-phase commit across two databases: a coordinator prepares both
//! transactions (phase 1), then commits both (phase 2). If it crashed in
//! between, `Database::prepared` lists the prepared transactions on reopen,
//! with the coordinator's id, to commit or roll back by id.
//!
//!     cargo run --example two_phase -- ./data

use sop::{Context, Database, DatabaseOptions};

fn open(ctx: &Context, folder: String) -> sop::Result<Database> {
    let mut options = DatabaseOptions::default();
    options.stores_folders = Some(vec![folder]);
    Database::new(ctx, options)
}

fn main() -> sop::Result<()> {
    let base = std::env::args().nth(1).unwrap_or_else(|| "./data".into());
    let ctx = Context::new();
    std::fs::create_dir_all(&base).expect("create the base folder");
    let orders = open(&ctx, format!("{base}/orders"))?;
    let stock = open(&ctx, format!("{base}/stock"))?;

    let t1 = orders.begin_transaction(&ctx)?;
    let t2 = stock.begin_transaction(&ctx)?;
    let o = orders.new_btree::<u64, String>(&ctx, "orders", &t1, None)?;
    let s = stock.new_btree::<String, i64>(&ctx, "stock", &t2, None)?;
    let next_id = o.iter().next_back().transpose()?.map_or(1, |(k, _)| k + 1);
    o.add(&ctx, next_id, "1 x widget".into())?;
    let left = s.get(&ctx, &"widget".into())?.unwrap_or(100);
    s.upsert(&ctx, "widget".into(), left - 1)?;

    let xid = format!("order-{next_id}");
    // Phase 1: both durable as "prepared"; either may still refuse here.
    let p1 = t1.prepare(&ctx, Some(xid.as_bytes()))?;
    let p2 = match t2.prepare(&ctx, Some(xid.as_bytes())) {
        Ok(p) => p,
        Err(e) => {
            p1.rollback(&ctx)?;
            return Err(e);
        }
    };
    println!(
        "prepared {xid}: orders txn {}, stock txn {} (pending: {})",
        p1.id(),
        p2.id(),
        orders.prepared(&ctx)?.len()
    );
    // Phase 2: both commit for sure.
    p1.commit(&ctx)?;
    p2.commit(&ctx)?;
    println!("committed order {next_id}; widgets left: {}", left - 1);
    Ok(())
}
