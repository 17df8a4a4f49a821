//! Read what the C quickstart (examples/quickstart.c) or the announcement
//! program stored: text keys and values, read-only, in key order.
//!
//!     make demo && cargo run --example read_quickstart -- ../../build/release/demo/data

use sop::{Context, Database, DatabaseOptions};

fn main() -> sop::Result<()> {
    let folder = std::env::args().nth(1).unwrap_or_else(|| "./data".into());
    let ctx = Context::new();
    let mut options = DatabaseOptions::default();
    options.stores_folders = Some(vec![folder]);
    options.no_create = true;
    let db = Database::new(&ctx, options)?;
    let trans = db.begin_read_transaction(&ctx)?;
    let config = db.open_btree::<String, String>(&ctx, "sys_config", &trans)?;
    for item in config.iter() {
        let (key, value) = item?;
        println!("{key} = {value}");
    }
    Ok(())
}
