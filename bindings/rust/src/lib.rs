//! # sop: ACID B-tree storage for Rust, embedded, no server
//!
//! A safe, zero-copy-on-read binding of libsop (the C engine in this
//! repository), with the API of SOP's Rust announcement:
//!
//! ```no_run
//! use sop::{Context, Database, DatabaseOptions, Item};
//!
//! let ctx = Context::new();
//! let mut options = DatabaseOptions::default();
//! options.stores_folders = Some(vec!["./data".to_string()]);
//! let db = Database::new(&ctx, options).unwrap();
//! let trans = db.begin_transaction(&ctx).unwrap();
//! let btree = db.new_btree::<String, String>(&ctx, "sys_config", &trans, None).unwrap();
//! btree.add(&ctx, "max_connections".to_string(), "10000".to_string()).unwrap();
//! btree.add(&ctx, "timeout_ms".to_string(), "500".to_string()).unwrap();
//! trans.commit(&ctx).unwrap();
//! # let _ = Item::new(1, 2);
//! ```
//!
//! * [`Database`] is one folder (`Send + Sync`); [`Transaction`]s are
//!   serializable snapshots, validated at commit; [`Btree`] is a typed store.
//! * Keys: any `Serialize + DeserializeOwned` type, in its natural order,
//!   through libsop's order-preserving compound-key encoding ([`keys`]);
//!   `String` keys and values are stored as plain text, so C programs and the
//!   `sop` tool read the same data.
//! * Values: text, raw bytes, or versioned bincode ([`value`]).
//! * Errors: [`Error`] with an [`ErrorKind`] per libsop code and
//!   [`Error::is_retryable`]; [`Database::run_in_transaction`] retries
//!   conflicts.
//!
//! The C library is compiled from `../../src` by `build.rs` and linked
//! statically.
#![deny(missing_docs)]

mod btree;
mod context;
mod db;
mod error;
#[doc(hidden)]
pub mod ffi;
pub mod keys;
pub mod value;

pub use btree::{Btree, BtreeOptions, Item, Iter};
pub use context::Context;
pub use db::{
    Database, DatabaseOptions, PreparedInfo, PreparedTransaction, RetryPolicy, SyncMode,
    Transaction, TransactionMode,
};
pub use error::{strerror, Error, ErrorKind, Result};
pub use keys::Desc;

/// Raw access for tests of the binding against the C library (not part of
/// the stable API).
#[doc(hidden)]
pub mod __private {
    /// The hand-written C declarations (the benchmark's C-API baseline).
    pub use crate::ffi as raw;

    /// Render `key` with libsop's `sop_key_format`, with encoded `spec` bytes if given.
    pub fn c_format_with(spec: Option<&[u8]>, key: &[u8]) -> crate::Result<String> {
        crate::keys::format_key(spec, key)
    }

    /// Decode `key` with libsop's C decoder (`sop_key_decode`) and render it
    /// with `sop_key_format` (typed, no spec). `Err(code)` if C rejects it.
    pub fn c_format(key: &[u8]) -> Result<String, i32> {
        crate::keys::format_key(None, key).map_err(|e| e.code())
    }

    /// Validate `key` with libsop's C decoder; the field count.
    pub fn c_validate(key: &[u8]) -> Result<usize, i32> {
        let mut n = 0usize;
        let v = crate::ffi::sop_val::of(key);
        // SAFETY: key read during the call.
        let rc = unsafe { crate::ffi::sop_key_validate(&mut n, &v) };
        if rc == 0 {
            Ok(n)
        } else {
            Err(rc)
        }
    }
}
