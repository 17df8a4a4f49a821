//! [`Btree`]: a typed view of one libsop store inside a transaction, with
//! SOP's methods, cursor navigation and Rust iterators.

use std::cell::{Cell, RefCell};
use std::ffi::CStr;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::context::Context;
use crate::db::{store_name, Transaction};
use crate::error::{check, Error, ErrorKind, Result};
use crate::ffi;
use crate::keys::{KeyCodec, KeyMode};
use crate::value::{decode_value, decode_value_in_place, encode_value, value_mode, ValueMode};

/// A key and its value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Item<K, V> {
    /// The key.
    pub key: K,
    /// The value.
    pub value: V,
}

impl<K, V> Item<K, V> {
    /// An item.
    pub fn new(key: K, value: V) -> Self {
        Item { key, value }
    }
}

impl<K, V> From<(K, V)> for Item<K, V> {
    fn from((key, value): (K, V)) -> Self {
        Item { key, value }
    }
}

/// Options of a new store ([`Database::new_btree`](crate::Database::new_btree)),
/// named as in SOP. When the store exists, the options given must agree with
/// the stored ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BtreeOptions {
    /// Items per node (4..=10000); 0: libsop's default (64).
    pub slot_length: usize,
    /// One item per key (the default). `false`: several items may share a key.
    pub is_unique: bool,
    /// Keep small values inside their node (the default); `false` stores
    /// every value in its own blob.
    pub is_value_data_in_node_segment: bool,
}

impl Default for BtreeOptions {
    fn default() -> Self {
        BtreeOptions {
            slot_length: 0,
            is_unique: true,
            is_value_data_in_node_segment: true,
        }
    }
}

/// A store of keys `K` and values `V`, seen through the transaction `'t`.
///
/// It borrows the transaction: it cannot outlive it, and the transaction
/// cannot commit while the `Btree` is still used afterwards. Keys are in
/// `K`'s natural order (see [`keys`](crate::keys)); values are encoded as
/// described in [`value`](crate::value).
///
/// The cursor methods ([`first`](Btree::first), [`next`](Btree::next), ...)
/// move one cursor per `Btree`, as in SOP; [`iter`](Btree::iter) and
/// [`range`](Btree::range) give independent Rust iterators.
///
/// A `Btree` cannot outlive its transaction:
///
/// ```compile_fail,E0597
/// # let ctx = sop::Context::new();
/// # let mut o = sop::DatabaseOptions::default();
/// # o.stores_folders = Some(vec!["/tmp/never-opened".into()]);
/// let db = sop::Database::new(&ctx, o).unwrap();
/// let b = {
///     let trans = db.begin_transaction(&ctx).unwrap();
///     db.new_btree::<u64, u64>(&ctx, "t", &trans, None).unwrap()
/// }; // error: `trans` does not live long enough
/// b.add(&ctx, 1, 1).unwrap();
/// ```
pub struct Btree<'t, K, V> {
    trans: &'t Transaction<'t>,
    store: *mut ffi::sop_store,
    name: String,
    codec: KeyCodec,
    vmode: ValueMode,
    unique: bool,
    cursor: Cell<*mut ffi::sop_cursor>,
    key_buf: RefCell<Vec<u8>>,
    val_buf: RefCell<Vec<u8>>,
    _kv: PhantomData<fn() -> (K, V)>,
}

impl<K, V> std::fmt::Debug for Btree<'_, K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Btree")
            .field("name", &self.name)
            .field("key_spec", &self.codec.spec_text)
            .finish()
    }
}

fn mismatch(name: &str, msg: String) -> Error {
    Error::new(ErrorKind::TypeMismatch, format!("store '{name}': {msg}"))
}

impl<'t, K, V> Btree<'t, K, V>
where
    K: Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    pub(crate) fn open(
        ctx: &Context,
        trans: &'t Transaction<'t>,
        name: &str,
        create: bool,
        options: Option<BtreeOptions>,
    ) -> Result<Self> {
        ctx.check()?;
        let codec = KeyCodec::of::<K>()?;
        let vmode = value_mode::<V>();
        let cname = store_name(name)?;
        let txn = trans.raw()?;
        let mut store = std::ptr::null_mut();
        // SAFETY: live txn, NUL-terminated name, NULL options (use stored ones).
        let rc =
            unsafe { ffi::sop_store_open(&mut store, txn, cname.as_ptr(), 0, std::ptr::null()) };
        let unique;
        if rc == ffi::SOP_OK {
            let Some(info) = stored_options(trans, store)? else {
                // Created earlier in this same transaction, so not visible
                // to a snapshot: let libsop compare our spec with its own.
                let mut so: ffi::sop_store_options = unsafe { std::mem::zeroed() };
                so.version = ffi::SOP_STORE_OPTIONS_VERSION;
                if let Some(spec) = &codec.spec {
                    so.key_spec = spec.as_ptr().cast();
                    so.key_spec_len = spec.len();
                }
                // SAFETY: live txn; options read during the call.
                let rc = unsafe { ffi::sop_store_open(&mut store, txn, cname.as_ptr(), 0, &so) };
                if rc == ffi::SOP_MISMATCH {
                    return Err(mismatch(name, Error::from_rc(rc).message().to_string()));
                }
                check(rc)?;
                let unique = !matches!(
                    options,
                    Some(BtreeOptions {
                        is_unique: false,
                        ..
                    })
                );
                return Ok(Btree::make(trans, store, name, codec, vmode, unique));
            };
            let stored: &[u8] = if info.options.key_spec_len == 0 {
                &[]
            } else {
                // SAFETY: valid until sop_db_close (the db outlives 't).
                unsafe {
                    std::slice::from_raw_parts(
                        info.options.key_spec as *const u8,
                        info.options.key_spec_len,
                    )
                }
            };
            check_spec(name, &codec, stored)?;
            if !info.options.comparator.is_null() && codec.mode == KeyMode::Tuple {
                // SAFETY: NUL-terminated, owned by the store handle.
                let c = unsafe { CStr::from_ptr(info.options.comparator) };
                return Err(mismatch(
                    name,
                    format!("uses the custom comparator '{}'", c.to_string_lossy()),
                ));
            }
            unique = info.options.flags & ffi::SOP_STORE_DUPLICATES == 0;
            if let Some(o) = &options {
                if o.is_unique != unique {
                    return Err(Error::new(
                        ErrorKind::InvalidArgument,
                        format!(
                            "store '{name}' exists with is_unique = {unique}; asked for {}",
                            o.is_unique
                        ),
                    ));
                }
                if o.slot_length != 0 && o.slot_length != info.options.slot_length as usize {
                    return Err(Error::new(
                        ErrorKind::InvalidArgument,
                        format!(
                            "store '{name}' exists with slot_length {}; asked for {}",
                            info.options.slot_length, o.slot_length
                        ),
                    ));
                }
            }
        } else if rc == ffi::SOP_NOTFOUND && create {
            let o = options.unwrap_or_default();
            // SAFETY: plain data filled by libsop.
            let mut so: ffi::sop_store_options = unsafe { std::mem::zeroed() };
            check(unsafe { ffi::sop_store_options_init(&mut so, ffi::SOP_STORE_OPTIONS_VERSION) })?;
            if !o.is_unique {
                so.flags |= ffi::SOP_STORE_DUPLICATES;
            }
            if !o.is_value_data_in_node_segment {
                so.flags |= ffi::SOP_STORE_VALUES_SEPARATE;
            }
            so.slot_length = u32::try_from(o.slot_length)
                .map_err(|_| Error::new(ErrorKind::InvalidArgument, "slot_length out of range"))?;
            if let Some(spec) = &codec.spec {
                so.key_spec = spec.as_ptr().cast();
                so.key_spec_len = spec.len();
            }
            // SAFETY: options and spec bytes live across the call (copied).
            check(unsafe {
                ffi::sop_store_open(&mut store, txn, cname.as_ptr(), ffi::SOP_STORE_CREATE, &so)
            })?;
            unique = o.is_unique;
        } else {
            return Err(Error::from_rc(rc));
        }
        Ok(Btree::make(trans, store, name, codec, vmode, unique))
    }

    fn make(
        trans: &'t Transaction<'t>,
        store: *mut ffi::sop_store,
        name: &str,
        codec: KeyCodec,
        vmode: ValueMode,
        unique: bool,
    ) -> Self {
        Btree {
            trans,
            store,
            name: name.to_string(),
            codec,
            vmode,
            unique,
            cursor: Cell::new(std::ptr::null_mut()),
            key_buf: RefCell::new(Vec::new()),
            val_buf: RefCell::new(Vec::new()),
            _kv: PhantomData,
        }
    }

    /// The store's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The index specification recorded for `K`, as text, if any.
    pub fn key_spec(&self) -> Option<&str> {
        self.codec.spec_text.as_deref()
    }

    /// True unless the store allows several items per key.
    pub fn is_unique(&self) -> bool {
        self.unique
    }

    /// Run `f` on the encoded `key`: a text key's own bytes (no copy), or
    /// the compound encoding written into the key buffer.
    #[inline]
    fn with_key<R>(&self, key: &K, f: impl FnOnce(&ffi::sop_val) -> Result<R>) -> Result<R> {
        if self.codec.mode == KeyMode::Text {
            return self.codec.with_text_key(key, |b| f(&ffi::sop_val::of(b)));
        }
        let mut local;
        let mut guard = self.key_buf.try_borrow_mut();
        let buf: &mut Vec<u8> = match &mut guard {
            Ok(b) => b,
            Err(_) => {
                local = Vec::new();
                &mut local
            }
        };
        self.codec.encode(buf, key)?;
        f(&ffi::sop_val::of(buf))
    }

    fn with_kv<R>(
        &self,
        key: &K,
        value: &V,
        f: impl FnOnce(&ffi::sop_val, &ffi::sop_val) -> Result<R>,
    ) -> Result<R> {
        let mut local;
        let mut guard = self.val_buf.try_borrow_mut();
        let vb: &mut Vec<u8> = match &mut guard {
            Ok(b) => b,
            Err(_) => {
                local = Vec::new();
                &mut local
            }
        };
        encode_value(self.vmode, vb, value)?;
        let vv = ffi::sop_val::of(vb);
        self.with_key(key, |k| f(k, &vv))
    }

    fn write(
        &self,
        ctx: &Context,
        key: &K,
        value: &V,
        op: unsafe extern "C" fn(
            *mut ffi::sop_txn,
            *mut ffi::sop_store,
            *const ffi::sop_val,
            *const ffi::sop_val,
        ) -> i32,
        soft: i32,
    ) -> Result<bool> {
        ctx.check()?;
        let txn = self.trans.raw()?;
        self.with_kv(key, value, |k, v| {
            // SAFETY: live txn and store; key and value read during the call.
            match unsafe { op(txn, self.store, k, v) } {
                ffi::SOP_OK => Ok(true),
                rc if rc == soft => Ok(false),
                rc => Err(Error::from_rc(rc)),
            }
        })
    }

    /// Add an item. `Ok(false)` when a unique store already has the key
    /// (nothing changed); a duplicate-key store always adds.
    pub fn add(&self, ctx: &Context, key: K, value: V) -> Result<bool> {
        self.write(ctx, &key, &value, ffi::sop_add, ffi::SOP_KEYEXIST)
    }

    /// Add only if no item has this key (in any store); `Ok(false)` otherwise.
    pub fn add_if_not_exist(&self, ctx: &Context, key: K, value: V) -> Result<bool> {
        self.write(ctx, &key, &value, ffi::sop_add_if_absent, ffi::SOP_KEYEXIST)
    }

    /// Replace the value if the key exists, else add the item. Always `Ok(true)`.
    pub fn upsert(&self, ctx: &Context, key: K, value: V) -> Result<bool> {
        self.write(ctx, &key, &value, ffi::sop_upsert, ffi::SOP_OK)
    }

    /// Replace the value of the item with this key; `Ok(false)` if none.
    pub fn update(&self, ctx: &Context, key: K, value: V) -> Result<bool> {
        self.write(ctx, &key, &value, ffi::sop_update, ffi::SOP_NOTFOUND)
    }

    /// Remove the item with this key (every item with it in a duplicate-key
    /// store); `Ok(false)` if none.
    pub fn remove(&self, ctx: &Context, key: &K) -> Result<bool> {
        ctx.check()?;
        let txn = self.trans.raw()?;
        self.with_key(key, |k| {
            // SAFETY: live txn and store.
            match unsafe { ffi::sop_remove(txn, self.store, k) } {
                ffi::SOP_OK => Ok(true),
                ffi::SOP_NOTFOUND => Ok(false),
                rc => Err(Error::from_rc(rc)),
            }
        })
    }

    /// The value of the item with this key, if any (the first one in a
    /// duplicate-key store). Decoded straight from libsop's node bytes.
    pub fn get(&self, ctx: &Context, key: &K) -> Result<Option<V>> {
        ctx.check()?;
        let txn = self.trans.raw()?;
        self.with_key(key, |k| {
            let mut v = ffi::sop_val::empty();
            // SAFETY: live txn and store; v borrowed until the next call on txn.
            match unsafe { ffi::sop_get(&mut v, txn, self.store, k) } {
                ffi::SOP_OK => decode_value(self.vmode, unsafe { v.as_slice() }).map(Some),
                ffi::SOP_NOTFOUND => Ok(None),
                rc => Err(Error::from_rc(rc)),
            }
        })
    }

    /// Zero-copy read: run `f` on the stored value bytes of `key`, straight
    /// from libsop's node (text values: their UTF-8; binary values: see
    /// [`value::decode_binary`](crate::value::decode_binary), which can
    /// borrow `&str` fields from them). Inside `f` every other call on this
    /// transaction fails with [`ErrorKind::BadState`], since it could move
    /// or free those bytes.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let mut options = sop::DatabaseOptions::default();
    /// # options.stores_folders = Some(vec![dir.path().to_str().unwrap().to_string()]);
    /// # let ctx = sop::Context::new();
    /// # let db = sop::Database::new(&ctx, options).unwrap();
    /// let trans = db.begin_transaction(&ctx).unwrap();
    /// let b = db.new_btree::<u32, String>(&ctx, "t", &trans, None).unwrap();
    /// b.add(&ctx, 1, "hello".to_string()).unwrap();
    /// assert_eq!(b.get_with(&ctx, &1, |v| v.len()).unwrap(), Some(5));
    /// let inner = b.get_with(&ctx, &1, |_| b.get(&ctx, &1)).unwrap().unwrap();
    /// assert_eq!(inner.unwrap_err().kind(), sop::ErrorKind::BadState);
    /// ```
    pub fn get_with<R>(
        &self,
        ctx: &Context,
        key: &K,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<Option<R>> {
        ctx.check()?;
        let txn = self.trans.raw()?;
        self.with_key(key, |k| {
            let mut v = ffi::sop_val::empty();
            // SAFETY: live txn and store; the bytes are used only inside f,
            // during which the view guard refuses every call on the txn.
            match unsafe { ffi::sop_get(&mut v, txn, self.store, k) } {
                ffi::SOP_OK => {
                    let _g = self.trans.enter_view();
                    Ok(Some(f(unsafe { v.as_slice() })))
                }
                ffi::SOP_NOTFOUND => Ok(None),
                rc => Err(Error::from_rc(rc)),
            }
        })
    }

    /// Zero-copy scan: call `f` with the key and value bytes of each item in
    /// `range`, in order, until it returns `false`; returns how many items
    /// it was called for. Keys are as stored (text keys: their UTF-8; other
    /// keys: the compound encoding, see [`keys::decode`](crate::keys::decode)).
    /// The same rule as [`get_with`](Btree::get_with) holds inside `f`.
    pub fn scan_with<R, F>(&self, ctx: &Context, range: R, mut f: F) -> Result<u64>
    where
        R: RangeBounds<K>,
        F: FnMut(&[u8], &[u8]) -> bool,
    {
        ctx.check()?;
        let mut it = self.range(range).with_context(ctx);
        let mut n = 0u64;
        loop {
            // SAFETY: the bytes are used only inside f, under the view guard.
            match unsafe { it.front_raw() } {
                None => return Ok(n),
                Some(Err(e)) => return Err(e),
                Some(Ok((k, v))) => {
                    n += 1;
                    let _g = self.trans.enter_view();
                    if !f(k, v) {
                        return Ok(n);
                    }
                }
            }
        }
    }

    /// Position the cursor on the (first) item with this key; `Ok(false)` if
    /// there is none (the cursor is then unpositioned).
    pub fn find(&self, ctx: &Context, key: &K) -> Result<bool> {
        ctx.check()?;
        let c = self.nav_cursor()?;
        self.with_key(key, |k| {
            // SAFETY: live cursor.
            match unsafe {
                ffi::sop_cursor_get(
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    c,
                    ffi::SOP_SEEK,
                    k,
                )
            } {
                ffi::SOP_OK => Ok(true),
                ffi::SOP_NOTFOUND => Ok(false),
                rc => Err(Error::from_rc(rc)),
            }
        })
    }

    /// Number of items in the transaction's view (its own changes included).
    pub fn count(&self, ctx: &Context) -> Result<u64> {
        ctx.check()?;
        let mut n = 0u64;
        // SAFETY: live txn and store.
        check(unsafe { ffi::sop_count(&mut n, self.trans.raw()?, self.store) })?;
        Ok(n)
    }

    /// [`add`](Btree::add) each item; returns how many were added.
    pub fn add_items<I: IntoIterator<Item = Item<K, V>>>(
        &self,
        ctx: &Context,
        items: I,
    ) -> Result<usize> {
        let mut n = 0;
        for it in items {
            n += usize::from(self.add(ctx, it.key, it.value)?);
        }
        Ok(n)
    }

    /// [`upsert`](Btree::upsert) each item; returns how many.
    pub fn upsert_items<I: IntoIterator<Item = Item<K, V>>>(
        &self,
        ctx: &Context,
        items: I,
    ) -> Result<usize> {
        let mut n = 0;
        for it in items {
            n += usize::from(self.upsert(ctx, it.key, it.value)?);
        }
        Ok(n)
    }

    /// [`update`](Btree::update) each item; returns how many existed.
    pub fn update_items<I: IntoIterator<Item = Item<K, V>>>(
        &self,
        ctx: &Context,
        items: I,
    ) -> Result<usize> {
        let mut n = 0;
        for it in items {
            n += usize::from(self.update(ctx, it.key, it.value)?);
        }
        Ok(n)
    }

    /// [`remove`](Btree::remove) each key; returns how many existed.
    pub fn remove_items<'k, I>(&self, ctx: &Context, keys: I) -> Result<usize>
    where
        I: IntoIterator<Item = &'k K>,
        K: 'k,
    {
        let mut n = 0;
        for k in keys {
            n += usize::from(self.remove(ctx, k)?);
        }
        Ok(n)
    }

    /// [`get`](Btree::get) each key.
    pub fn get_items<'k, I>(&self, ctx: &Context, keys: I) -> Result<Vec<Option<V>>>
    where
        I: IntoIterator<Item = &'k K>,
        K: 'k,
    {
        keys.into_iter().map(|k| self.get(ctx, k)).collect()
    }

    // ---- SOP-style cursor navigation ----

    fn nav_cursor(&self) -> Result<*mut ffi::sop_cursor> {
        self.trans.not_in_view()?;
        let c = self.cursor.get();
        if !c.is_null() {
            return Ok(c);
        }
        let c = self.trans.open_cursor(self.store)?;
        self.cursor.set(c);
        Ok(c)
    }

    fn nav(&self, ctx: &Context, op: ffi::sop_cursor_op) -> Result<bool> {
        ctx.check()?;
        let c = self.nav_cursor()?;
        // SAFETY: live cursor.
        match unsafe {
            ffi::sop_cursor_get(
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                c,
                op,
                std::ptr::null(),
            )
        } {
            ffi::SOP_OK => Ok(true),
            ffi::SOP_NOTFOUND => Ok(false),
            rc => Err(Error::from_rc(rc)),
        }
    }

    /// Move the cursor to the first item; `Ok(false)` if the store is empty.
    pub fn first(&self, ctx: &Context) -> Result<bool> {
        self.nav(ctx, ffi::SOP_FIRST)
    }

    /// Move the cursor to the last item; `Ok(false)` if the store is empty.
    pub fn last(&self, ctx: &Context) -> Result<bool> {
        self.nav(ctx, ffi::SOP_LAST)
    }

    /// Move the cursor to the next item (the first if unpositioned);
    /// `Ok(false)` at the end (the cursor stays on the last item).
    pub fn next(&self, ctx: &Context) -> Result<bool> {
        self.nav(ctx, ffi::SOP_NEXT)
    }

    /// Move the cursor to the previous item (the last if unpositioned);
    /// `Ok(false)` at the start.
    pub fn previous(&self, ctx: &Context) -> Result<bool> {
        self.nav(ctx, ffi::SOP_PREV)
    }

    fn current_raw<R>(&self, f: impl FnOnce(&[u8], &[u8]) -> Result<R>) -> Result<Option<R>> {
        self.trans.not_in_view()?;
        let c = self.cursor.get();
        if c.is_null() {
            return Ok(None);
        }
        let mut k = ffi::sop_val::empty();
        let mut v = ffi::sop_val::empty();
        // SAFETY: live cursor; bytes borrowed until the next call on the txn.
        match unsafe { ffi::sop_cursor_get(&mut k, &mut v, c, ffi::SOP_CURRENT, std::ptr::null()) }
        {
            ffi::SOP_OK => f(unsafe { k.as_slice() }, unsafe { v.as_slice() }).map(Some),
            ffi::SOP_NOTFOUND | ffi::SOP_INVAL => Ok(None), // unpositioned
            rc => Err(Error::from_rc(rc)),
        }
    }

    /// The key at the cursor (`None` when unpositioned).
    pub fn current_key(&self, ctx: &Context) -> Result<Option<K>> {
        ctx.check()?;
        self.current_raw(|k, _| self.codec.decode(k))
    }

    /// The value at the cursor (`None` when unpositioned).
    pub fn current_value(&self, ctx: &Context) -> Result<Option<V>> {
        ctx.check()?;
        self.current_raw(|_, v| decode_value(self.vmode, v))
    }

    /// The item at the cursor (`None` when unpositioned).
    pub fn current_item(&self, ctx: &Context) -> Result<Option<Item<K, V>>> {
        ctx.check()?;
        self.current_raw(|k, v| {
            Ok(Item {
                key: self.codec.decode(k)?,
                value: decode_value(self.vmode, v)?,
            })
        })
    }

    // ---- Rust iterators ----

    /// Every item in key order; `.rev()` walks backwards.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let mut options = sop::DatabaseOptions::default();
    /// # options.stores_folders = Some(vec![dir.path().to_str().unwrap().to_string()]);
    /// # let ctx = sop::Context::new();
    /// # let db = sop::Database::new(&ctx, options).unwrap();
    /// let trans = db.begin_transaction(&ctx).unwrap();
    /// let b = db.new_btree::<i64, String>(&ctx, "n", &trans, None).unwrap();
    /// for i in [3, -1, 2] { b.add(&ctx, i, i.to_string()).unwrap(); }
    /// let keys: Vec<i64> = b.iter().map(|r| r.unwrap().0).collect();
    /// assert_eq!(keys, [-1, 2, 3]);
    /// let back: Vec<i64> = b.range(0..).rev().map(|r| r.unwrap().0).collect();
    /// assert_eq!(back, [3, 2]);
    /// ```
    pub fn iter(&self) -> Iter<'_, 't, K, V> {
        Iter::new(self, Bound::Unbounded, Bound::Unbounded)
    }

    /// The items whose keys are in `range`, in key order; `.rev()` walks
    /// backwards. Bounds are compared as encoded keys, which is `K`'s order.
    pub fn range<R: RangeBounds<K>>(&self, range: R) -> Iter<'_, 't, K, V> {
        let enc = |b: Bound<&K>| -> Result<Bound<Vec<u8>>> {
            Ok(match b {
                Bound::Unbounded => Bound::Unbounded,
                Bound::Included(k) => Bound::Included(self.encode_bound(k)?),
                Bound::Excluded(k) => Bound::Excluded(self.encode_bound(k)?),
            })
        };
        match (enc(range.start_bound()), enc(range.end_bound())) {
            (Ok(lo), Ok(hi)) => Iter::new(self, lo, hi),
            (Err(e), _) | (_, Err(e)) => Iter::failed(self, e),
        }
    }

    /// The items whose keys start with `prefix`: a leading part of the key,
    /// e.g. `("US",)` or `("US", "Sales")` for a key `(String, String, i64)`
    /// or a struct with those first fields, or a `&str` prefix of a text key.
    pub fn prefix<P: Serialize + ?Sized>(&self, prefix: &P) -> Iter<'_, 't, K, V> {
        let lo = match self.codec.mode {
            KeyMode::Text => {
                let mut b = Vec::new();
                prefix
                    .serialize(crate::value::TextSer { out: &mut b })
                    .map(|_| b)
                    .map_err(Error::encoding)
            }
            KeyMode::Tuple => crate::keys::encode(prefix),
        };
        let lo = match lo {
            Ok(lo) => lo,
            Err(e) => return Iter::failed(self, e),
        };
        let hi = prefix_end(&lo);
        Iter::new(
            self,
            if lo.is_empty() {
                Bound::Unbounded
            } else {
                Bound::Included(lo)
            },
            match hi {
                Some(h) => Bound::Excluded(h),
                None => Bound::Unbounded,
            },
        )
    }

    fn encode_bound(&self, k: &K) -> Result<Vec<u8>> {
        let mut b = Vec::new();
        self.codec.encode(&mut b, k)?;
        Ok(b)
    }
}

/// The smallest byte string above every string starting with `p`.
fn prefix_end(p: &[u8]) -> Option<Vec<u8>> {
    let mut e = p.to_vec();
    while let Some(&last) = e.last() {
        if last == 0xFF {
            e.pop();
        } else {
            *e.last_mut().unwrap() += 1;
            return Some(e);
        }
    }
    None
}

/// An iterator over a [`Btree`]'s items (or a range of them), yielding
/// `Result<(K, V)>`. Double-ended: `.rev()` walks backwards. It has its own
/// libsop cursors, bounded to the range by libsop (`sop_cursor_set_range`)
/// and closed when it is dropped. In a read-write transaction the range it
/// covers joins the transaction's read set.
///
/// [`next_ref`](Iter::next_ref) / [`next_back_ref`](Iter::next_back_ref)
/// lend each item instead, decoded into a key and a value the iterator keeps
/// and reuses (no allocation per item for `String` and byte keys/values).
///
/// It checks its [`Context`] (see [`with_context`](Iter::with_context))
/// every 64 items and ends with the error when the context is done.
pub struct Iter<'b, 't, K, V> {
    btree: &'b Btree<'t, K, V>,
    lo: Bound<Vec<u8>>,
    hi: Bound<Vec<u8>>,
    front: *mut ffi::sop_cursor,
    back: *mut ffi::sop_cursor,
    /// last key yielded by each end, kept while both ends are in use
    front_last: Option<Vec<u8>>,
    back_last: Option<Vec<u8>>,
    /// the front cursor is positioned and the only one in use, so `next`
    /// may just step it (libsop checks the bounds)
    fast: bool,
    done: bool,
    error: Option<Error>,
    ctx: Option<Context>,
    steps: u32,
    /// the item lent by next_ref / next_back_ref, reused
    slot: Option<(K, V)>,
}

impl<'b, 't, K, V> Iter<'b, 't, K, V>
where
    K: Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    fn new(btree: &'b Btree<'t, K, V>, lo: Bound<Vec<u8>>, hi: Bound<Vec<u8>>) -> Self {
        Iter {
            btree,
            lo,
            hi,
            front: std::ptr::null_mut(),
            back: std::ptr::null_mut(),
            front_last: None,
            back_last: None,
            fast: false,
            done: false,
            error: None,
            ctx: None,
            steps: 0,
            slot: None,
        }
    }

    fn failed(btree: &'b Btree<'t, K, V>, e: Error) -> Self {
        let mut it = Iter::new(btree, Bound::Unbounded, Bound::Unbounded);
        it.error = Some(e);
        it
    }

    /// Honour `ctx`: the iterator ends with its error once it is cancelled
    /// or past its deadline.
    pub fn with_context(mut self, ctx: &Context) -> Self {
        self.ctx = Some(ctx.clone());
        self
    }

    /// A cursor bounded to the iterator's range by libsop.
    fn open(&self) -> Result<*mut ffi::sop_cursor> {
        let mut c = std::ptr::null_mut();
        // SAFETY: live txn and store; closed in Drop (or below on error).
        check(unsafe { ffi::sop_cursor_open(&mut c, self.btree.trans.raw()?, self.btree.store) })?;
        let side = |b: &Bound<Vec<u8>>, excl: std::os::raw::c_uint| match b {
            Bound::Unbounded => (None, 0),
            Bound::Included(k) => (Some(ffi::sop_val::of(k)), 0),
            Bound::Excluded(k) => (Some(ffi::sop_val::of(k)), excl),
        };
        let (lo, lf) = side(&self.lo, ffi::SOP_RANGE_LO_EXCLUSIVE);
        let (hi, hf) = side(&self.hi, ffi::SOP_RANGE_HI_EXCLUSIVE);
        if lo.is_some() || hi.is_some() {
            let ptr = |v: &Option<ffi::sop_val>| {
                v.as_ref()
                    .map_or(std::ptr::null(), |x| x as *const ffi::sop_val)
            };
            // SAFETY: live cursor; the bounds are copied by libsop.
            let rc = unsafe { ffi::sop_cursor_set_range(c, ptr(&lo), ptr(&hi), lf | hf) };
            if rc != ffi::SOP_OK {
                let e = Error::from_rc(rc);
                // SAFETY: ours, not stored anywhere yet.
                unsafe { ffi::sop_cursor_close(c) };
                return Err(e);
            }
        }
        Ok(c)
    }

    /// The checks made on the first step and every 64th.
    fn tick(&mut self) -> Result<()> {
        self.btree.trans.not_in_view()?;
        if let Some(c) = &self.ctx {
            c.check()?;
        }
        self.btree.trans.raw()?;
        Ok(())
    }

    fn fail<T>(&mut self, e: Error) -> Option<Result<T>> {
        self.done = true;
        self.fast = false;
        Some(Err(e))
    }

    fn finish<T>(&mut self) -> Option<T> {
        self.done = true;
        self.fast = false;
        None
    }

    #[inline]
    fn decode(&self, k: &[u8], v: &[u8]) -> Result<(K, V)> {
        Ok((
            self.btree.codec.decode(k)?,
            decode_value(self.btree.vmode, v)?,
        ))
    }

    /// Decode into the lent slot, reusing its allocations.
    #[inline]
    fn decode_slot(&mut self, k: &[u8], v: &[u8]) -> Result<(&K, &V)> {
        match &mut self.slot {
            Some((sk, sv)) => {
                self.btree.codec.decode_in_place(k, sk)?;
                decode_value_in_place(self.btree.vmode, v, sv)?;
            }
            None => {
                let kv = self.decode(k, v)?;
                self.slot = Some(kv);
            }
        }
        let (k, v) = self.slot.as_ref().expect("slot filled above");
        Ok((k, v))
    }

    /// Lending iteration: the next item, decoded into a key and a value
    /// that the iterator keeps and reuses from item to item (a `String` key
    /// or value is overwritten in place: no allocation once it is large
    /// enough). `None` at the end; the borrow ends before the next call.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let mut options = sop::DatabaseOptions::default();
    /// # options.stores_folders = Some(vec![dir.path().to_str().unwrap().to_string()]);
    /// # let ctx = sop::Context::new();
    /// # let db = sop::Database::new(&ctx, options).unwrap();
    /// let trans = db.begin_transaction(&ctx).unwrap();
    /// let b = db.new_btree::<String, String>(&ctx, "t", &trans, None).unwrap();
    /// for k in ["a", "b", "c"] { b.add(&ctx, k.to_string(), k.repeat(3)).unwrap(); }
    /// let mut it = b.range("b".to_string()..);
    /// let mut seen = Vec::new();
    /// while let Some(r) = it.next_ref() {
    ///     let (k, v) = r.unwrap();
    ///     seen.push(format!("{k}={v}"));
    /// }
    /// assert_eq!(seen, ["b=bbb", "c=ccc"]);
    /// ```
    pub fn next_ref(&mut self) -> Option<Result<(&K, &V)>> {
        // SAFETY: the bytes are decoded before any other libsop call.
        match unsafe { self.front_raw() }? {
            Ok((k, v)) => Some(self.decode_slot(k, v)),
            Err(e) => Some(Err(e)),
        }
    }

    /// [`next_ref`](Iter::next_ref) from the back end (as `next_back`).
    pub fn next_back_ref(&mut self) -> Option<Result<(&K, &V)>> {
        // SAFETY: as in next_ref.
        match unsafe { self.back_raw() }? {
            Ok((k, v)) => Some(self.decode_slot(k, v)),
            Err(e) => Some(Err(e)),
        }
    }

    /// The next item's key and value bytes, as libsop holds them.
    ///
    /// # Safety
    /// The slices are valid only until the next libsop call on the
    /// transaction (any cursor, any store); the caller must be done with
    /// them before that (the returned lifetime is not checked).
    #[inline]
    unsafe fn front_raw<'x>(&mut self) -> Option<Result<(&'x [u8], &'x [u8])>> {
        self.steps = self.steps.wrapping_add(1);
        if self.fast && self.steps & 63 != 0 && !self.btree.trans.in_view() {
            let mut k = ffi::sop_val::empty();
            let mut v = ffi::sop_val::empty();
            let rc =
                ffi::sop_cursor_get(&mut k, &mut v, self.front, ffi::SOP_NEXT, std::ptr::null());
            if rc == ffi::SOP_OK {
                return Some(Ok((k.as_slice(), v.as_slice())));
            }
            return self.step_failed(rc);
        }
        self.front_slow()
    }

    #[cold]
    #[inline(never)]
    fn step_failed<T>(&mut self, rc: i32) -> Option<Result<T>> {
        if rc == ffi::SOP_NOTFOUND {
            self.finish()
        } else {
            self.fail(Error::from_rc(rc))
        }
    }

    /// The key at the cursor `c` of the other end, copied (`None` when it is
    /// not in use or not positioned).
    unsafe fn current_key_of(c: *mut ffi::sop_cursor) -> Result<Option<Vec<u8>>> {
        if c.is_null() {
            return Ok(None);
        }
        let mut k = ffi::sop_val::empty();
        match ffi::sop_cursor_get(
            &mut k,
            std::ptr::null_mut(),
            c,
            ffi::SOP_CURRENT,
            std::ptr::null(),
        ) {
            ffi::SOP_OK => Ok(Some(k.as_slice().to_vec())),
            ffi::SOP_NOTFOUND | ffi::SOP_INVAL => Ok(None),
            rc => Err(Error::from_rc(rc)),
        }
    }

    /// `front_raw` on the first step, every 64th, and while both ends are
    /// in use.
    #[inline(never)]
    unsafe fn front_slow<'x>(&mut self) -> Option<Result<(&'x [u8], &'x [u8])>> {
        self.fast = false;
        if self.done {
            return None;
        }
        if let Some(e) = self.error.take() {
            return self.fail(e);
        }
        if let Err(e) = self.tick() {
            return self.fail(e);
        }
        let op = if self.front.is_null() {
            match self.open() {
                Ok(c) => self.front = c,
                Err(e) => return self.fail(e),
            }
            match Self::current_key_of(self.back) {
                Ok(b) => self.back_last = b,
                Err(e) => return self.fail(e),
            }
            ffi::SOP_FIRST
        } else {
            ffi::SOP_NEXT
        };
        let mut k = ffi::sop_val::empty();
        let mut v = ffi::sop_val::empty();
        let rc = ffi::sop_cursor_get(&mut k, &mut v, self.front, op, std::ptr::null());
        if rc != ffi::SOP_OK {
            return self.step_failed(rc);
        }
        let (k, v) = (k.as_slice(), v.as_slice());
        if self.back.is_null() {
            self.fast = true;
        } else {
            if matches!(&self.back_last, Some(b) if k >= &b[..]) {
                return self.finish();
            }
            self.front_last = Some(k.to_vec());
        }
        Some(Ok((k, v)))
    }

    /// The previous item from the back end (as `front_raw`).
    unsafe fn back_raw<'x>(&mut self) -> Option<Result<(&'x [u8], &'x [u8])>> {
        self.fast = false;
        if self.done {
            return None;
        }
        if let Some(e) = self.error.take() {
            return self.fail(e);
        }
        self.steps = self.steps.wrapping_add(1);
        if let Err(e) = self.tick() {
            return self.fail(e);
        }
        let op = if self.back.is_null() {
            match self.open() {
                Ok(c) => self.back = c,
                Err(e) => return self.fail(e),
            }
            // both ends now in use: remember where the front is
            match Self::current_key_of(self.front) {
                Ok(f) => self.front_last = f,
                Err(e) => return self.fail(e),
            }
            ffi::SOP_LAST
        } else {
            ffi::SOP_PREV
        };
        let mut k = ffi::sop_val::empty();
        let mut v = ffi::sop_val::empty();
        let rc = ffi::sop_cursor_get(&mut k, &mut v, self.back, op, std::ptr::null());
        if rc != ffi::SOP_OK {
            return self.step_failed(rc);
        }
        let (k, v) = (k.as_slice(), v.as_slice());
        if !self.front.is_null() {
            if matches!(&self.front_last, Some(f) if k <= &f[..]) {
                return self.finish();
            }
            self.back_last = Some(k.to_vec());
        }
        Some(Ok((k, v)))
    }
}

impl<K, V> Iterator for Iter<'_, '_, K, V>
where
    K: Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    type Item = Result<(K, V)>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        // SAFETY: the bytes are decoded before any other libsop call.
        match unsafe { self.front_raw() }? {
            Ok((k, v)) => Some(self.decode(k, v)),
            Err(e) => Some(Err(e)),
        }
    }
}

impl<K, V> DoubleEndedIterator for Iter<'_, '_, K, V>
where
    K: Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    fn next_back(&mut self) -> Option<Self::Item> {
        // SAFETY: as in next().
        match unsafe { self.back_raw() }? {
            Ok((k, v)) => Some(self.decode(k, v)),
            Err(e) => Some(Err(e)),
        }
    }
}

impl<K, V> std::iter::FusedIterator for Iter<'_, '_, K, V>
where
    K: Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
}

impl<K, V> Drop for Iter<'_, '_, K, V> {
    fn drop(&mut self) {
        // SAFETY: NULL-safe; allowed after the txn ended.
        unsafe {
            ffi::sop_cursor_close(self.front);
            ffi::sop_cursor_close(self.back);
        }
    }
}

impl<'b, 't, K, V> IntoIterator for &'b Btree<'t, K, V>
where
    K: Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    type Item = Result<(K, V)>;
    type IntoIter = Iter<'b, 't, K, V>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// The stored options of `store`, read through a separate read-only
/// snapshot: `sop_store_info_get` also counts the items, and in a read-write
/// transaction a count puts the whole store into the read set, so every
/// concurrent writer of the store would conflict with us. `None` when the
/// store is not in the newest snapshot (created inside `trans`).
fn stored_options(
    trans: &Transaction<'_>,
    store: *mut ffi::sop_store,
) -> Result<Option<ffi::sop_store_info>> {
    let mut ro = std::ptr::null_mut();
    // SAFETY: live db; the snapshot txn is aborted below on every path.
    check(unsafe {
        ffi::sop_txn_begin(&mut ro, trans.database().raw_db(), ffi::SOP_TXN_READONLY)
    })?;
    let mut info: ffi::sop_store_info = unsafe { std::mem::zeroed() };
    info.version = ffi::SOP_STORE_INFO_VERSION;
    // SAFETY: live txn and store handle; info is plain data whose pointers
    // belong to the store handle (valid until the db closes).
    let rc = unsafe { ffi::sop_store_info_get(&mut info, ro, store) };
    unsafe { ffi::sop_txn_abort(ro) };
    match rc {
        ffi::SOP_OK => Ok(Some(info)),
        ffi::SOP_BADSTATE => Ok(None),
        rc => Err(Error::from_code(rc, "reading the store's options")),
    }
}

fn check_spec(name: &str, codec: &KeyCodec, stored: &[u8]) -> Result<()> {
    let ours: &[u8] = codec.spec.as_deref().unwrap_or(&[]);
    if stored == ours {
        return Ok(());
    }
    let theirs = if stored.is_empty() {
        "keys without an index specification (raw bytes, e.g. text)".to_string()
    } else {
        format!("keys {}", crate::keys::spec_bytes_to_text(stored))
    };
    let want = match (&codec.mode, &codec.spec_text) {
        (KeyMode::Text, _) => "stores keys as raw UTF-8 text".to_string(),
        (_, Some(t)) => format!("needs keys {t}"),
        (_, None) => "has no fixed field list (enum, sequence...)".to_string(),
    };
    Err(mismatch(
        name,
        format!(
            "the store holds {theirs}, but the key type {} {want}",
            codec.type_name
        ),
    ))
}
