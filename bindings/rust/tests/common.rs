// Shared helpers for the integration tests.
#![allow(dead_code)]

use sop::{Context, Database, DatabaseOptions, SyncMode};

pub fn open(dir: &std::path::Path) -> Database {
    let mut o = DatabaseOptions::default();
    o.stores_folders = Some(vec![dir.to_str().unwrap().to_string()]);
    o.sync_mode = SyncMode::Off; // tests: no fsync
    Database::new(&Context::new(), o).unwrap()
}
