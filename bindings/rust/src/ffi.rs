//! Hand-written declarations of the libsop C API (include/sop.h,
//! include/sop_keys.h) that the binding uses. Layouts follow the headers.
#![allow(non_camel_case_types, dead_code, missing_docs)]

use std::os::raw::{c_char, c_int, c_uint, c_void};

#[repr(C)]
pub struct sop_db {
    _p: [u8; 0],
}
#[repr(C)]
pub struct sop_txn {
    _p: [u8; 0],
}
#[repr(C)]
pub struct sop_store {
    _p: [u8; 0],
}
#[repr(C)]
pub struct sop_cursor {
    _p: [u8; 0],
}
#[repr(C)]
pub struct sop_keyspec {
    _p: [u8; 0],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct sop_val {
    pub data: *const c_void,
    pub len: usize,
}

impl sop_val {
    #[inline]
    pub fn of(b: &[u8]) -> sop_val {
        sop_val {
            data: b.as_ptr() as *const c_void,
            len: b.len(),
        }
    }
    #[inline]
    pub const fn empty() -> sop_val {
        sop_val {
            data: std::ptr::null(),
            len: 0,
        }
    }
    /// # Safety
    /// data must point at len readable bytes for the returned lifetime.
    #[inline]
    pub unsafe fn as_slice<'a>(&self) -> &'a [u8] {
        if self.len == 0 {
            &[]
        } else {
            std::slice::from_raw_parts(self.data as *const u8, self.len)
        }
    }
}

pub const SOP_OK: c_int = 0;
pub const SOP_NOTFOUND: c_int = -1;
pub const SOP_KEYEXIST: c_int = -2;
pub const SOP_CONFLICT: c_int = -3;
pub const SOP_BUSY: c_int = -4;
pub const SOP_TIMEOUT: c_int = -5;
pub const SOP_READONLY: c_int = -6;
pub const SOP_INVAL: c_int = -7;
pub const SOP_BADSTATE: c_int = -8;
pub const SOP_NOMEM: c_int = -9;
pub const SOP_NOSPC: c_int = -10;
pub const SOP_IOERR: c_int = -11;
pub const SOP_CORRUPT: c_int = -12;
pub const SOP_VERSION: c_int = -13;
pub const SOP_UNKNOWN_OUTCOME: c_int = -14;
pub const SOP_PANIC: c_int = -15;
pub const SOP_MISMATCH: c_int = -16;

pub const SOP_MAX_KEY_LEN: usize = 4096;
pub const SOP_MAX_XID_LEN: usize = 128;

pub type sop_sync_mode = c_uint;
pub const SOP_SYNC_FULL: sop_sync_mode = 0;
pub const SOP_SYNC_NORMAL: sop_sync_mode = 1;
pub const SOP_SYNC_OFF: sop_sync_mode = 2;

pub const SOP_DB_NOCREATE: u32 = 0x1;
pub const SOP_TXN_READONLY: c_uint = 0x1;
pub const SOP_STORE_DUPLICATES: u32 = 0x1;
pub const SOP_STORE_VALUES_SEPARATE: u32 = 0x2;
pub const SOP_STORE_CREATE: c_uint = 0x1;

#[repr(C)]
pub struct sop_db_options {
    pub version: u32,
    pub flags: u32,
    pub sync: sop_sync_mode,
    pub cache_bytes: u64,
    pub txn_time_limit_ms: u64,
    pub segment_bytes: u64,
    pub comparators: *const c_void,
    pub comparator_count: usize,
    pub vfs: *const c_void,
}
pub const SOP_DB_OPTIONS_VERSION: u32 = 1;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct sop_store_options {
    pub version: u32,
    pub flags: u32,
    pub slot_length: u32,
    pub max_inline_value: u32,
    pub comparator: *const c_char,
    pub key_spec: *const c_void,
    pub key_spec_len: usize,
}
pub const SOP_STORE_OPTIONS_VERSION: u32 = 1;

#[repr(C)]
pub struct sop_store_info {
    pub version: u32,
    pub count: u64,
    pub options: sop_store_options,
    pub id: u64,
}

#[repr(C)]
pub struct sop_prepared_info {
    pub id: u64,
    pub lsn: u64,
    pub xid_len: usize,
    pub xid: [u8; SOP_MAX_XID_LEN],
}

#[repr(C)]
#[derive(Default)]
pub struct sop_db_stat_info {
    pub version: u32,
    pub last_lsn: u64,
    pub checkpoint_lsn: u64,
    pub commits: u64,
    pub conflicts: u64,
    pub merges: u64,
    pub syncs: u64,
    pub node_loads: u64,
    pub node_hits: u64,
    pub cache_bytes: u64,
    pub dirty_bytes: u64,
    pub disk_bytes: u64,
    pub live_bytes: u64,
    pub segments: u64,
    pub prepared: u64,
    pub active_txns: u64,
}

pub const SOP_STORE_INFO_VERSION: u32 = 1;
pub const SOP_DB_STAT_VERSION: u32 = 2;

pub type sop_cursor_op = c_uint;
pub const SOP_FIRST: sop_cursor_op = 0;
pub const SOP_LAST: sop_cursor_op = 1;
pub const SOP_NEXT: sop_cursor_op = 2;
pub const SOP_PREV: sop_cursor_op = 3;
pub const SOP_SEEK: sop_cursor_op = 4;
pub const SOP_SEEK_GE: sop_cursor_op = 5;
pub const SOP_CURRENT: sop_cursor_op = 6;
pub const SOP_RANGE_LO_EXCLUSIVE: c_uint = 0x1;
pub const SOP_RANGE_HI_EXCLUSIVE: c_uint = 0x2;

// sop_keys.h
pub type sop_key_type = c_uint;
pub const SOP_KEY_NULL: sop_key_type = 0;
pub const SOP_KEY_BOOL: sop_key_type = 1;
pub const SOP_KEY_INT64: sop_key_type = 2;
pub const SOP_KEY_UINT64: sop_key_type = 3;
pub const SOP_KEY_DOUBLE: sop_key_type = 4;
pub const SOP_KEY_TIMESTAMP: sop_key_type = 5;
pub const SOP_KEY_STRING: sop_key_type = 6;
pub const SOP_KEY_BYTES: sop_key_type = 7;
pub const SOP_KEY_UUID: sop_key_type = 8;
pub const SOP_KEY_DESC: c_uint = 0x1;
pub const SOP_KEY_NULLABLE: c_uint = 0x2;
pub const SOP_KEYSPEC_MAX_LEN: usize = 4096;

#[repr(C)]
#[derive(Clone, Copy)]
pub union sop_key_value_u {
    pub b: c_int,
    pub i64_: i64,
    pub u64_: u64,
    pub f64_: f64,
    pub str_: sop_val,
    pub uuid: [u8; 16],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct sop_key_value {
    pub type_: sop_key_type,
    pub flags: c_uint,
    pub u: sop_key_value_u,
}

extern "C" {
    pub fn sop_strerror(rc: c_int) -> *const c_char;
    pub fn sop_errmsg() -> *const c_char;
    pub fn sop_rc_is_retryable(rc: c_int) -> c_int;

    pub fn sop_db_options_init(opts: *mut sop_db_options, version: u32) -> c_int;
    pub fn sop_db_open(
        db_out: *mut *mut sop_db,
        path: *const c_char,
        opts: *const sop_db_options,
    ) -> c_int;
    pub fn sop_db_close(db: *mut sop_db) -> c_int;
    pub fn sop_db_checkpoint(db: *mut sop_db) -> c_int;
    pub fn sop_db_stat(out: *mut sop_db_stat_info, db: *mut sop_db) -> c_int;

    pub fn sop_txn_begin(txn_out: *mut *mut sop_txn, db: *mut sop_db, flags: c_uint) -> c_int;
    pub fn sop_txn_commit(txn: *mut sop_txn) -> c_int;
    pub fn sop_txn_abort(txn: *mut sop_txn) -> c_int;
    pub fn sop_txn_prepare(txn: *mut sop_txn, xid: *const sop_val) -> c_int;
    pub fn sop_txn_release(txn: *mut sop_txn) -> c_int;
    pub fn sop_txn_id(txn: *const sop_txn) -> u64;
    pub fn sop_db_prepared_list(
        out: *mut sop_prepared_info,
        cap: usize,
        count_out: *mut usize,
        db: *mut sop_db,
    ) -> c_int;
    pub fn sop_db_prepared_commit(db: *mut sop_db, id: u64) -> c_int;
    pub fn sop_db_prepared_rollback(db: *mut sop_db, id: u64) -> c_int;

    pub fn sop_store_options_init(opts: *mut sop_store_options, version: u32) -> c_int;
    pub fn sop_store_open(
        store_out: *mut *mut sop_store,
        txn: *mut sop_txn,
        name: *const c_char,
        flags: c_uint,
        opts: *const sop_store_options,
    ) -> c_int;
    pub fn sop_store_remove(txn: *mut sop_txn, name: *const c_char) -> c_int;
    pub fn sop_store_list(
        names_out: *mut *mut *mut c_char,
        count_out: *mut usize,
        txn: *mut sop_txn,
    ) -> c_int;
    pub fn sop_store_list_free(names: *mut *mut c_char, count: usize);
    pub fn sop_store_info_get(
        out: *mut sop_store_info,
        txn: *mut sop_txn,
        store: *mut sop_store,
    ) -> c_int;

    pub fn sop_add(
        txn: *mut sop_txn,
        store: *mut sop_store,
        key: *const sop_val,
        value: *const sop_val,
    ) -> c_int;
    pub fn sop_add_if_absent(
        txn: *mut sop_txn,
        store: *mut sop_store,
        key: *const sop_val,
        value: *const sop_val,
    ) -> c_int;
    pub fn sop_update(
        txn: *mut sop_txn,
        store: *mut sop_store,
        key: *const sop_val,
        value: *const sop_val,
    ) -> c_int;
    pub fn sop_upsert(
        txn: *mut sop_txn,
        store: *mut sop_store,
        key: *const sop_val,
        value: *const sop_val,
    ) -> c_int;
    pub fn sop_remove(txn: *mut sop_txn, store: *mut sop_store, key: *const sop_val) -> c_int;
    pub fn sop_get(
        value_out: *mut sop_val,
        txn: *mut sop_txn,
        store: *mut sop_store,
        key: *const sop_val,
    ) -> c_int;
    pub fn sop_count(count_out: *mut u64, txn: *mut sop_txn, store: *mut sop_store) -> c_int;

    pub fn sop_cursor_open(
        cursor_out: *mut *mut sop_cursor,
        txn: *mut sop_txn,
        store: *mut sop_store,
    ) -> c_int;
    pub fn sop_cursor_close(cursor: *mut sop_cursor);
    pub fn sop_cursor_get(
        key_out: *mut sop_val,
        value_out: *mut sop_val,
        cursor: *mut sop_cursor,
        op: sop_cursor_op,
        key: *const sop_val,
    ) -> c_int;

    pub fn sop_cursor_set_range(
        cursor: *mut sop_cursor,
        lo: *const sop_val,
        hi: *const sop_val,
        flags: c_uint,
    ) -> c_int;

    pub fn sop_key_free(ptr: *mut c_void);
    pub fn sop_key_decode(
        values_out: *mut sop_key_value,
        values_cap: usize,
        count_out: *mut usize,
        scratch: *mut c_void,
        scratch_cap: usize,
        key: *const sop_val,
    ) -> c_int;
    pub fn sop_key_validate(field_count_out: *mut usize, key: *const sop_val) -> c_int;
    pub fn sop_key_prefix_end(
        buf: *mut c_void,
        buf_cap: usize,
        hi_len_out: *mut usize,
        prefix: *const sop_val,
    ) -> c_int;
    pub fn sop_key_format_alloc(
        text_out: *mut *mut c_char,
        spec: *const sop_keyspec,
        key: *const sop_val,
        flags: c_uint,
    ) -> c_int;

    pub fn sop_keyspec_new(spec_out: *mut *mut sop_keyspec) -> c_int;
    pub fn sop_keyspec_free(spec: *mut sop_keyspec);
    pub fn sop_keyspec_add(
        spec: *mut sop_keyspec,
        name: *const c_char,
        type_: sop_key_type,
        flags: c_uint,
    ) -> c_int;
    pub fn sop_keyspec_encode(
        buf: *mut c_void,
        buf_cap: usize,
        len_out: *mut usize,
        spec: *const sop_keyspec,
    ) -> c_int;
    pub fn sop_keyspec_decode(
        spec_out: *mut *mut sop_keyspec,
        data: *const c_void,
        len: usize,
    ) -> c_int;
    pub fn sop_keyspec_format(text_out: *mut *mut c_char, spec: *const sop_keyspec) -> c_int;
    pub fn sop_keyspec_check_key(
        spec: *const sop_keyspec,
        key: *const sop_val,
        flags: c_uint,
    ) -> c_int;
}
