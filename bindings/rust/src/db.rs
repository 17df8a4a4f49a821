//! [`Database`], [`DatabaseOptions`], [`Transaction`] and the retry helper.

use std::cell::{Cell, RefCell};
use std::ffi::{CStr, CString};
use std::marker::PhantomData;
use std::os::raw::c_char;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::btree::{Btree, BtreeOptions};
use crate::context::Context;
use crate::error::{check, Error, ErrorKind, Result};
use crate::ffi;

/// When a commit is durable (libsop's `sop_sync_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// Commit returns after its log record is on stable storage (group commit). The default.
    #[default]
    Full,
    /// Commit returns after the record is written to the OS; a power cut may
    /// lose the last commits, never expose a partial one.
    Normal,
    /// No fdatasync at all: for bulk loads and tests.
    Off,
}

/// Options of [`Database::new`], named as in SOP. Fields are public; start
/// from `DatabaseOptions::default()` and set what you need.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct DatabaseOptions {
    /// The database folder(s). libsop's embedded engine uses exactly one
    /// folder; more than one (SOP's replicated folders) is an
    /// [`ErrorKind::InvalidArgument`] error for now.
    pub stores_folders: Option<Vec<String>>,
    /// Node-cache budget in bytes; `None`: libsop's default (256 MiB).
    pub cache_size: Option<u64>,
    /// Commit durability.
    pub sync_mode: SyncMode,
    /// Longest a transaction may run; `None`: libsop's default (15 minutes).
    pub transaction_time_limit: Option<Duration>,
    /// Log segment file size in bytes; `None`: libsop's default (64 MiB).
    pub segment_size: Option<u64>,
    /// Fail with [`ErrorKind::NotFound`] instead of creating a missing database.
    pub no_create: bool,
}

/// An open database: one folder. `Send + Sync`: share it between threads by
/// reference (`std::thread::scope`) or in an `Arc`. Closed when dropped.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// use sop::{Context, Database, DatabaseOptions};
/// let ctx = Context::new();
/// let mut options = DatabaseOptions::default();
/// options.stores_folders = Some(vec![dir.path().to_str().unwrap().to_string()]);
/// let db = Database::new(&ctx, options).unwrap();
/// let trans = db.begin_transaction(&ctx).unwrap();
/// let counts = db.new_btree::<u64, String>(&ctx, "counts", &trans, None).unwrap();
/// assert!(counts.add(&ctx, 7, "seven".to_string()).unwrap());
/// assert_eq!(counts.get(&ctx, &7).unwrap().as_deref(), Some("seven"));
/// trans.commit(&ctx).unwrap();
/// ```
pub struct Database {
    raw: *mut ffi::sop_db,
    path: String,
}

// SAFETY: a sop_db may be used by any number of threads at once (sop.h).
unsafe impl Send for Database {}
unsafe impl Sync for Database {}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("path", &self.path)
            .finish()
    }
}

/// Read-write or read-only, as SOP's `TransactionMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionMode {
    /// Reads and writes; validated at commit (serializable).
    ForWriting,
    /// Reads only, from a snapshot; never conflicts.
    ForReading,
}

/// A prepared transaction awaiting phase 2, as listed by [`Database::prepared`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedInfo {
    /// Its id, for [`Database::commit_prepared`] / [`Database::rollback_prepared`].
    pub id: u64,
    /// Log position of its PREPARE record.
    pub lsn: u64,
    /// The external id given to [`Transaction::prepare`].
    pub xid: Vec<u8>,
}

/// How [`Database::run_in_transaction_with`] retries.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all (at least 1).
    pub max_attempts: u32,
    /// First back-off; doubled after each retry, up to `max_backoff`.
    pub initial_backoff: Duration,
    /// Longest back-off.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 100,
            initial_backoff: Duration::from_micros(50),
            max_backoff: Duration::from_millis(20),
        }
    }
}

impl Database {
    /// Open (creating if needed) the database in `options.stores_folders[0]`.
    /// Only one handle may have a folder open at a time, across processes
    /// ([`ErrorKind::Busy`] otherwise).
    pub fn new(ctx: &Context, options: DatabaseOptions) -> Result<Database> {
        ctx.check()?;
        let folders = options.stores_folders.unwrap_or_default();
        let path = match folders.as_slice() {
            [p] => p.clone(),
            [] => {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    "DatabaseOptions.stores_folders must name the database folder",
                ))
            }
            _ => {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    "libsop stores a database in one folder; several stores_folders \
                     (replication) are not supported yet",
                ))
            }
        };
        let cpath = CString::new(path.as_str())
            .map_err(|_| Error::new(ErrorKind::InvalidArgument, "folder path contains NUL"))?;
        // SAFETY: plain-old-data struct filled by libsop.
        let mut o: ffi::sop_db_options = unsafe { std::mem::zeroed() };
        check(unsafe { ffi::sop_db_options_init(&mut o, ffi::SOP_DB_OPTIONS_VERSION) })?;
        o.sync = match options.sync_mode {
            SyncMode::Full => ffi::SOP_SYNC_FULL,
            SyncMode::Normal => ffi::SOP_SYNC_NORMAL,
            SyncMode::Off => ffi::SOP_SYNC_OFF,
        };
        o.cache_bytes = options.cache_size.unwrap_or(0);
        o.segment_bytes = options.segment_size.unwrap_or(0);
        o.txn_time_limit_ms = options
            .transaction_time_limit
            .map(|d| (d.as_millis().min(u64::MAX as u128) as u64).max(1))
            .unwrap_or(0);
        if options.no_create {
            o.flags |= ffi::SOP_DB_NOCREATE;
        }
        let mut raw = std::ptr::null_mut();
        // SAFETY: valid out-pointer, NUL-terminated path, initialised options.
        check(unsafe { ffi::sop_db_open(&mut raw, cpath.as_ptr(), &o) })?;
        Ok(Database { raw, path })
    }

    pub(crate) fn raw_db(&self) -> *mut ffi::sop_db {
        self.raw
    }

    /// The folder.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Begin a read-write transaction on the newest committed snapshot.
    pub fn begin_transaction(&self, ctx: &Context) -> Result<Transaction<'_>> {
        self.begin_transaction_mode(ctx, TransactionMode::ForWriting)
    }

    /// Begin a read-only transaction (a snapshot; never conflicts).
    pub fn begin_read_transaction(&self, ctx: &Context) -> Result<Transaction<'_>> {
        self.begin_transaction_mode(ctx, TransactionMode::ForReading)
    }

    /// Begin a transaction of the given mode.
    pub fn begin_transaction_mode(
        &self,
        ctx: &Context,
        mode: TransactionMode,
    ) -> Result<Transaction<'_>> {
        ctx.check()?;
        let mut raw = std::ptr::null_mut();
        let flags = match mode {
            TransactionMode::ForWriting => 0,
            TransactionMode::ForReading => ffi::SOP_TXN_READONLY,
        };
        // SAFETY: live db, valid out-pointer.
        check(unsafe { ffi::sop_txn_begin(&mut raw, self.raw, flags) })?;
        Ok(Transaction {
            db: self,
            raw: Cell::new(raw),
            cursors: RefCell::new(Vec::new()),
            mode,
            in_view: Cell::new(false),
            _not_sync: PhantomData,
        })
    }

    /// Create the store `name` for keys `K` and values `V`, or open it if it
    /// exists and its stored options agree (same key specification, same
    /// uniqueness when `options` is given). `K`'s index specification is
    /// recorded with a new store (see [`keys`](crate::keys)).
    pub fn new_btree<'t, K, V>(
        &self,
        ctx: &Context,
        name: &str,
        trans: &'t Transaction<'_>,
        options: Option<BtreeOptions>,
    ) -> Result<Btree<'t, K, V>>
    where
        K: Serialize + DeserializeOwned,
        V: Serialize + DeserializeOwned,
    {
        self.same_db(trans)?;
        Btree::open(ctx, trans, name, true, options)
    }

    /// Open the existing store `name` ([`ErrorKind::NotFound`] if none).
    pub fn open_btree<'t, K, V>(
        &self,
        ctx: &Context,
        name: &str,
        trans: &'t Transaction<'_>,
    ) -> Result<Btree<'t, K, V>>
    where
        K: Serialize + DeserializeOwned,
        V: Serialize + DeserializeOwned,
    {
        self.same_db(trans)?;
        Btree::open(ctx, trans, name, false, None)
    }

    /// Remove the store `name` and all its items (when `trans` commits).
    /// `Ok(false)` if there is no such store.
    pub fn remove_btree(&self, ctx: &Context, name: &str, trans: &Transaction<'_>) -> Result<bool> {
        ctx.check()?;
        self.same_db(trans)?;
        let cname = store_name(name)?;
        // SAFETY: live txn, NUL-terminated name.
        match unsafe { ffi::sop_store_remove(trans.raw()?, cname.as_ptr()) } {
            ffi::SOP_OK => Ok(true),
            ffi::SOP_NOTFOUND => Ok(false),
            rc => Err(Error::from_rc(rc)),
        }
    }

    /// Names of the stores visible to `trans`, sorted bytewise.
    pub fn list_btrees(&self, ctx: &Context, trans: &Transaction<'_>) -> Result<Vec<String>> {
        ctx.check()?;
        self.same_db(trans)?;
        let mut names: *mut *mut c_char = std::ptr::null_mut();
        let mut n = 0usize;
        // SAFETY: out-pointers; the array is freed with sop_store_list_free.
        check(unsafe { ffi::sop_store_list(&mut names, &mut n, trans.raw()?) })?;
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            // SAFETY: n NUL-terminated strings.
            out.push(
                unsafe { CStr::from_ptr(*names.add(i)) }
                    .to_string_lossy()
                    .into_owned(),
            );
        }
        unsafe { ffi::sop_store_list_free(names, n) };
        Ok(out)
    }

    /// Run `f` in a new read-write transaction and commit it; when `f` or the
    /// commit fails with a retryable error ([`Error::is_retryable`]: a
    /// conflict with a concurrent commit, a busy key), roll back, back off and
    /// run it again, with the default [`RetryPolicy`]. `f` must therefore be
    /// safe to run more than once.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let mut options = sop::DatabaseOptions::default();
    /// # options.stores_folders = Some(vec![dir.path().to_str().unwrap().to_string()]);
    /// # let ctx = sop::Context::new();
    /// # let db = sop::Database::new(&ctx, options).unwrap();
    /// let total = db.run_in_transaction(&ctx, |trans| {
    ///     let b = db.new_btree::<String, u64>(&ctx, "counters", trans, None)?;
    ///     let n = b.get(&ctx, &"hits".to_string())?.unwrap_or(0) + 1;
    ///     b.upsert(&ctx, "hits".to_string(), n)?;
    ///     Ok(n)
    /// }).unwrap();
    /// assert_eq!(total, 1);
    /// ```
    pub fn run_in_transaction<T, F>(&self, ctx: &Context, f: F) -> Result<T>
    where
        F: FnMut(&Transaction<'_>) -> Result<T>,
    {
        self.run_in_transaction_with(ctx, &RetryPolicy::default(), f)
    }

    /// [`run_in_transaction`](Database::run_in_transaction) with a given policy.
    pub fn run_in_transaction_with<T, F>(
        &self,
        ctx: &Context,
        policy: &RetryPolicy,
        mut f: F,
    ) -> Result<T>
    where
        F: FnMut(&Transaction<'_>) -> Result<T>,
    {
        let mut backoff = policy.initial_backoff;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let trans = self.begin_transaction(ctx)?;
            let r = f(&trans).and_then(|v| trans.commit(ctx).map(|()| v));
            match r {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retryable() && attempt < policy.max_attempts.max(1) => {
                    ctx.check()?;
                    // jitter: spread concurrent retriers apart
                    let j = jitter(backoff);
                    let sleep = match ctx.remaining() {
                        Some(left) if left < j => left,
                        _ => j,
                    };
                    std::thread::sleep(sleep);
                    backoff = (backoff * 2).min(policy.max_backoff);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Prepared transactions awaiting phase 2 (oldest first), e.g. after a
    /// crash: resolve each with [`commit_prepared`](Database::commit_prepared)
    /// or [`rollback_prepared`](Database::rollback_prepared).
    pub fn prepared(&self, ctx: &Context) -> Result<Vec<PreparedInfo>> {
        ctx.check()?;
        let mut n = 0usize;
        // SAFETY: cap 0 with a NULL array asks for the count.
        check(unsafe { ffi::sop_db_prepared_list(std::ptr::null_mut(), 0, &mut n, self.raw) })?;
        let mut v: Vec<ffi::sop_prepared_info> = Vec::with_capacity(n);
        let mut got = 0usize;
        // SAFETY: room for n entries; libsop writes min(n, count).
        check(unsafe { ffi::sop_db_prepared_list(v.as_mut_ptr(), n, &mut got, self.raw) })?;
        unsafe { v.set_len(got.min(n)) };
        Ok(v.iter()
            .map(|p| PreparedInfo {
                id: p.id,
                lsn: p.lsn,
                xid: p.xid[..p.xid_len.min(ffi::SOP_MAX_XID_LEN)].to_vec(),
            })
            .collect())
    }

    /// Phase 2 by id: commit a prepared transaction.
    pub fn commit_prepared(&self, ctx: &Context, id: u64) -> Result<()> {
        ctx.check()?;
        // SAFETY: live db.
        check(unsafe { ffi::sop_db_prepared_commit(self.raw, id) })
    }

    /// Phase 2 by id: roll a prepared transaction back.
    pub fn rollback_prepared(&self, ctx: &Context, id: u64) -> Result<()> {
        ctx.check()?;
        // SAFETY: live db.
        check(unsafe { ffi::sop_db_prepared_rollback(self.raw, id) })
    }

    /// Write a checkpoint now (normally automatic).
    pub fn checkpoint(&self, ctx: &Context) -> Result<()> {
        ctx.check()?;
        // SAFETY: live db.
        check(unsafe { ffi::sop_db_checkpoint(self.raw) })
    }

    /// Close the database, reporting a failure of the final checkpoint
    /// (dropping it closes it too, ignoring errors).
    pub fn close(mut self) -> Result<()> {
        let raw = std::mem::replace(&mut self.raw, std::ptr::null_mut());
        // SAFETY: no transaction can be alive (they borrow self).
        check(unsafe { ffi::sop_db_close(raw) })
    }

    fn same_db(&self, trans: &Transaction<'_>) -> Result<()> {
        if std::ptr::eq(trans.db, self) {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::InvalidArgument,
                "the transaction belongs to another database",
            ))
        }
    }
}

fn jitter(d: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(d.as_nanos() as u64);
    let r = h.finish() % 1000;
    d / 2 + d * (r as u32) / 2000
}

impl Drop for Database {
    fn drop(&mut self) {
        if !self.raw.is_null() {
            // SAFETY: transactions borrow the Database, so none is alive.
            unsafe { ffi::sop_db_close(self.raw) };
        }
    }
}

pub(crate) fn store_name(name: &str) -> Result<CString> {
    CString::new(name)
        .map_err(|_| Error::new(ErrorKind::InvalidArgument, "store name contains NUL"))
}

/// A transaction. Reads see the snapshot it began on plus its own writes;
/// a read-write transaction is validated at [`commit`](Transaction::commit)
/// (serializable). Dropping an uncommitted transaction rolls it back.
///
/// [`Btree`]s borrow their transaction, so they cannot outlive it, and
/// `commit`/`rollback` consume it, so a finished transaction cannot be used:
///
/// ```compile_fail,E0505
/// # let ctx = sop::Context::new();
/// # let mut o = sop::DatabaseOptions::default();
/// # o.stores_folders = Some(vec!["/tmp/x".into()]);
/// let db = sop::Database::new(&ctx, o).unwrap();
/// let trans = db.begin_transaction(&ctx).unwrap();
/// let b = db.new_btree::<u64, u64>(&ctx, "t", &trans, None).unwrap();
/// trans.commit(&ctx).unwrap();
/// b.add(&ctx, 1, 1).unwrap(); // error: `trans` was moved while borrowed
/// ```
///
/// A transaction may move between threads (`Send`) but is used by one at a
/// time (not `Sync`).
pub struct Transaction<'db> {
    db: &'db Database,
    raw: Cell<*mut ffi::sop_txn>,
    cursors: RefCell<Vec<*mut ffi::sop_cursor>>,
    mode: TransactionMode,
    /// inside a zero-copy view (get_with/scan_with): libsop's borrowed bytes
    /// are in use, so every call that could move or free them is refused
    in_view: Cell<bool>,
    _not_sync: PhantomData<Cell<()>>,
}

#[cold]
#[inline(never)]
fn in_view_error() -> Error {
    Error::from_code(
        ffi::SOP_BADSTATE,
        "not allowed inside get_with/scan_with: the bytes being viewed belong to libsop",
    )
}

/// Clears the view flag when the view's closure returns or panics.
pub(crate) struct ViewGuard<'a>(&'a Cell<bool>);

impl Drop for ViewGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.0.set(false);
    }
}

// SAFETY: a sop_txn (and its cursors) may be used by any thread, one at a
// time; Transaction is !Sync, so a shared borrow never crosses threads.
unsafe impl Send for Transaction<'_> {}

impl std::fmt::Debug for Transaction<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("mode", &self.mode)
            .finish()
    }
}

impl<'db> Transaction<'db> {
    #[inline]
    pub(crate) fn not_in_view(&self) -> Result<()> {
        if self.in_view.get() {
            return Err(in_view_error());
        }
        Ok(())
    }

    /// Inside a zero-copy view's closure.
    #[inline]
    pub(crate) fn in_view(&self) -> bool {
        self.in_view.get()
    }

    #[inline]
    pub(crate) fn enter_view(&self) -> ViewGuard<'_> {
        self.in_view.set(true);
        ViewGuard(&self.in_view)
    }

    /// The live handle, or `BadState` inside a view or after the end.
    #[inline]
    pub(crate) fn raw(&self) -> Result<*mut ffi::sop_txn> {
        let r = self.raw.get();
        if self.in_view.get() || r.is_null() {
            return Err(self.raw_error());
        }
        Ok(r)
    }

    #[cold]
    #[inline(never)]
    fn raw_error(&self) -> Error {
        if self.in_view.get() {
            in_view_error()
        } else {
            Error::from_code(ffi::SOP_BADSTATE, "the transaction has ended")
        }
    }

    /// The database.
    pub fn database(&self) -> &'db Database {
        self.db
    }

    /// Read-write or read-only.
    pub fn mode(&self) -> TransactionMode {
        self.mode
    }

    /// A cursor owned by the transaction (closed when it ends).
    pub(crate) fn open_cursor(&self, store: *mut ffi::sop_store) -> Result<*mut ffi::sop_cursor> {
        let mut c = std::ptr::null_mut();
        // SAFETY: live txn and store.
        check(unsafe { ffi::sop_cursor_open(&mut c, self.raw()?, store) })?;
        self.cursors.borrow_mut().push(c);
        Ok(c)
    }

    fn close_cursors(&self) {
        for c in self.cursors.borrow_mut().drain(..) {
            // SAFETY: closing is allowed after the txn ended.
            unsafe { ffi::sop_cursor_close(c) };
        }
    }

    /// Commit. On [`ErrorKind::Conflict`] (or any other error) nothing was
    /// written and the transaction is gone; run it again (see
    /// [`Database::run_in_transaction`]). On a prepared transaction this is
    /// phase 2. A [`ErrorKind::Busy`] commit (a prepared transaction of
    /// someone else holds a key) has ended the transaction too, and is
    /// retryable.
    pub fn commit(self, ctx: &Context) -> Result<()> {
        ctx.check()?; // self is dropped: rolled back
        self.commit_now()
    }

    fn commit_now(self) -> Result<()> {
        let raw = self.raw()?;
        // SAFETY: live txn; freed by commit whatever it returns.
        let rc = unsafe { ffi::sop_txn_commit(raw) };
        self.raw.set(std::ptr::null_mut());
        check(rc)
    }

    /// Roll back (the same as dropping the transaction, but explicit and
    /// with the result: the rollback of a prepared transaction writes a
    /// durable record, which can fail; it then stays prepared).
    pub fn rollback(self, ctx: &Context) -> Result<()> {
        let _ = ctx;
        let raw = self.raw.replace(std::ptr::null_mut());
        if raw.is_null() {
            return Ok(());
        }
        // SAFETY: live txn, ended here whatever abort returns.
        check(unsafe { ffi::sop_txn_abort(raw) })
    }

    /// Two-phase commit, phase 1: validate and make the transaction durable
    /// as prepared, with an optional external id (up to 128 bytes) for a
    /// coordinator. Then only [`PreparedTransaction::commit`] (which cannot
    /// fail from a conflict) or [`PreparedTransaction::rollback`] remain.
    /// Dropping the returned handle rolls back; after a crash, a prepared
    /// transaction is found again with [`Database::prepared`].
    pub fn prepare(self, ctx: &Context, xid: Option<&[u8]>) -> Result<PreparedTransaction<'db>> {
        ctx.check()?;
        let raw = self.raw()?;
        let xv = xid.map(ffi::sop_val::of);
        let xp = xv
            .as_ref()
            .map_or(std::ptr::null(), |v| v as *const ffi::sop_val);
        // SAFETY: live txn; xid read during the call.
        check(unsafe { ffi::sop_txn_prepare(raw, xp) })?;
        // SAFETY: prepared txn.
        let id = unsafe { ffi::sop_txn_id(raw) };
        Ok(PreparedTransaction { trans: self, id })
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        let raw = self.raw.replace(std::ptr::null_mut());
        if !raw.is_null() {
            // SAFETY: live txn, ended here.
            unsafe { ffi::sop_txn_abort(raw) };
        }
        self.close_cursors();
    }
}

/// A transaction after [`Transaction::prepare`] (2PC phase 1 done): commit
/// it, roll it back, or [`release`](PreparedTransaction::release) it to
/// resolve it later by id.
#[derive(Debug)]
pub struct PreparedTransaction<'db> {
    trans: Transaction<'db>,
    id: u64,
}

impl PreparedTransaction<'_> {
    /// The id libsop gave it ([`Database::commit_prepared`] takes it).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Phase 2: commit. This runs even when `ctx` is already done: after
    /// phase 1 the coordinator's decision must not be lost to a timeout.
    pub fn commit(self, ctx: &Context) -> Result<()> {
        let _ = ctx;
        self.trans.commit_now()
    }

    /// Phase 2: roll back.
    pub fn rollback(self, ctx: &Context) -> Result<()> {
        self.trans.rollback(ctx)
    }

    /// Let go of the handle and leave the transaction prepared
    /// (`sop_txn_release`): for a coordinator that decides phase 2 later,
    /// possibly after a restart. The transaction stays durable and holds
    /// its keys; resolve it by the returned id with
    /// [`Database::commit_prepared`] or [`Database::rollback_prepared`], in
    /// this process or after reopening the database (it is listed by
    /// [`Database::prepared`]).
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let mut options = sop::DatabaseOptions::default();
    /// # options.stores_folders = Some(vec![dir.path().to_str().unwrap().to_string()]);
    /// # let ctx = sop::Context::new();
    /// # let db = sop::Database::new(&ctx, options).unwrap();
    /// let trans = db.begin_transaction(&ctx).unwrap();
    /// db.new_btree::<u32, String>(&ctx, "t", &trans, None).unwrap()
    ///     .add(&ctx, 1, "one".to_string()).unwrap();
    /// let id = trans.prepare(&ctx, Some(b"order-9")).unwrap().release(&ctx).unwrap();
    /// assert_eq!(db.prepared(&ctx).unwrap()[0].id, id);
    /// db.commit_prepared(&ctx, id).unwrap();
    /// ```
    pub fn release(self, ctx: &Context) -> Result<u64> {
        let _ = ctx; // as commit: a decision after phase 1 is not cancelled
        let raw = self.trans.raw.replace(std::ptr::null_mut());
        if raw.is_null() {
            return Err(Error::from_code(
                ffi::SOP_BADSTATE,
                "the transaction has ended",
            ));
        }
        // SAFETY: live prepared txn; on SOP_OK libsop freed the handle.
        let rc = unsafe { ffi::sop_txn_release(raw) };
        if rc != ffi::SOP_OK {
            // not released: the handle is still ours, and dropping the
            // transaction ends it
            let e = Error::from_rc(rc);
            self.trans.raw.set(raw);
            return Err(e);
        }
        Ok(self.id)
    }
}
