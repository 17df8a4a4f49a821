//! The Rust binding against libsop's C API (called directly through the
//! same extern declarations, no binding layer), rusqlite and lmdb, on the
//! same workloads in one run:
//!
//! * fillrandom: N puts in random key order, 1000 per transaction
//! * readrandom: N gets in random order, in read-only transactions
//! * scan: forward passes over all N items (10 of them, timed together)
//!
//! Keys are 16-byte decimal strings, values 100 bytes. No engine syncs to
//! disk (libsop SyncMode::Off, LMDB NO_SYNC, SQLite synchronous=OFF) so the
//! numbers compare the code paths, not the disk. Each engine verifies every
//! value it reads. Usage: sop-bench [N] [runs] [dir]

use std::time::Instant;

use sop::__private::raw as ffi;

const BATCH: usize = 1000;
const VLEN: usize = 100;
const SCAN_PASSES: usize = 10;
/// engines: 0 C API, 1 C API owned, 2 binding, 3 lmdb, 4 rusqlite,
/// 5 binding views, 6 binding next_ref
const ENGINES: usize = 7;

fn key(i: u64) -> String {
    format!(
        "{:016}",
        i.wrapping_mul(0x9E37_79B9_7F4A_7C15) % 10_000_000_000_000_000
    )
}

fn value(i: u64) -> String {
    let mut v = format!("{i:020}");
    while v.len() < VLEN {
        v.push((b'a' + (v.len() % 26) as u8) as char);
    }
    v
}

/// A fixed permutation of 0..n (xorshift Fisher-Yates).
fn order(n: usize, seed: u64) -> Vec<u64> {
    let mut v: Vec<u64> = (0..n as u64).collect();
    let mut s = seed | 1;
    for i in (1..n).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        v.swap(i, (s % (i as u64 + 1)) as usize);
    }
    v
}

struct Workload {
    keys: Vec<String>,
    values: Vec<String>,
    put_order: Vec<u64>,
    get_order: Vec<u64>,
}

trait Engine {
    fn name(&self) -> &'static str;
    fn fill(&mut self, w: &Workload);
    fn read(&mut self, w: &Workload) -> u64;
    fn scan(&mut self, w: &Workload) -> u64;
}

// ---- the binding -------------------------------------------------------

struct Binding {
    db: sop::Database,
    /// read through get_with/scan_with (borrowed bytes, no copies)
    zero_copy: bool,
    /// scan with the lending Iter::next_ref (owned K/V reused item to item)
    lend: bool,
}

impl Binding {
    fn new(dir: &str, zero_copy: bool, lend: bool) -> Self {
        let mut o = sop::DatabaseOptions::default();
        o.stores_folders = Some(vec![dir.to_string()]);
        o.sync_mode = sop::SyncMode::Off;
        Binding {
            db: sop::Database::new(&sop::Context::new(), o).unwrap(),
            zero_copy,
            lend,
        }
    }
}

impl Engine for Binding {
    fn name(&self) -> &'static str {
        if self.zero_copy {
            "sop (binding, views)"
        } else if self.lend {
            "sop (binding, next_ref)"
        } else {
            "sop (Rust binding)"
        }
    }
    fn fill(&mut self, w: &Workload) {
        let ctx = sop::Context::new();
        for chunk in w.put_order.chunks(BATCH) {
            let t = self.db.begin_transaction(&ctx).unwrap();
            let b = self
                .db
                .new_btree::<String, String>(&ctx, "kv", &t, None)
                .unwrap();
            for &i in chunk {
                let i = i as usize;
                b.upsert(&ctx, w.keys[i].clone(), w.values[i].clone())
                    .unwrap();
            }
            t.commit(&ctx).unwrap();
        }
    }
    fn read(&mut self, w: &Workload) -> u64 {
        let ctx = sop::Context::new();
        let mut n = 0;
        for chunk in w.get_order.chunks(BATCH) {
            let t = self.db.begin_read_transaction(&ctx).unwrap();
            let b = self
                .db
                .open_btree::<String, String>(&ctx, "kv", &t)
                .unwrap();
            if self.zero_copy {
                for &i in chunk {
                    let len = b.get_with(&ctx, &w.keys[i as usize], |v| v.len()).unwrap();
                    assert_eq!(len, Some(VLEN));
                    n += 1;
                }
                continue;
            }
            for &i in chunk {
                let v = b.get(&ctx, &w.keys[i as usize]).unwrap().unwrap();
                assert_eq!(std::hint::black_box(v).len(), VLEN);
                n += 1;
            }
        }
        n
    }
    fn scan(&mut self, _w: &Workload) -> u64 {
        let ctx = sop::Context::new();
        let t = self.db.begin_read_transaction(&ctx).unwrap();
        let b = self
            .db
            .open_btree::<String, String>(&ctx, "kv", &t)
            .unwrap();
        if self.zero_copy {
            return b
                .scan_with(&ctx, .., |k, v| {
                    assert_eq!((k.len(), v.len()), (16, VLEN));
                    true
                })
                .unwrap();
        }
        let mut n = 0;
        if self.lend {
            let mut it = b.iter();
            while let Some(r) = it.next_ref() {
                let (k, v) = std::hint::black_box(r.unwrap());
                assert_eq!((k.len(), v.len()), (16, VLEN));
                n += 1;
            }
            return n;
        }
        for r in b.iter() {
            let (k, v) = std::hint::black_box(r.unwrap());
            assert_eq!((k.len(), v.len()), (16, VLEN));
            n += 1;
        }
        n
    }
}

// ---- the C API, directly -----------------------------------------------

struct CApi {
    db: *mut ffi::sop_db,
    /// produce owned Strings like the binding does (copy inputs, results)
    owned: bool,
}

fn rc(r: i32) {
    assert_eq!(r, 0, "{}", sop::strerror(r));
}

impl CApi {
    fn new(dir: &str, owned: bool) -> Self {
        let path = std::ffi::CString::new(dir).unwrap();
        let mut o: ffi::sop_db_options = unsafe { std::mem::zeroed() };
        unsafe {
            rc(ffi::sop_db_options_init(
                &mut o,
                ffi::SOP_DB_OPTIONS_VERSION,
            ));
            o.sync = ffi::SOP_SYNC_OFF;
            let mut db = std::ptr::null_mut();
            rc(ffi::sop_db_open(&mut db, path.as_ptr(), &o));
            CApi { db, owned }
        }
    }
    fn store(&self, t: *mut ffi::sop_txn, flags: u32) -> *mut ffi::sop_store {
        let mut s = std::ptr::null_mut();
        unsafe {
            rc(ffi::sop_store_open(
                &mut s,
                t,
                c"kv".as_ptr(),
                flags,
                std::ptr::null(),
            ))
        };
        s
    }
}

impl Drop for CApi {
    fn drop(&mut self) {
        unsafe { rc(ffi::sop_db_close(self.db)) };
    }
}

impl Engine for CApi {
    fn name(&self) -> &'static str {
        if self.owned {
            "sop (C API, owned)"
        } else {
            "sop (C API)"
        }
    }
    fn fill(&mut self, w: &Workload) {
        for chunk in w.put_order.chunks(BATCH) {
            unsafe {
                let mut t = std::ptr::null_mut();
                rc(ffi::sop_txn_begin(&mut t, self.db, 0));
                let s = self.store(t, ffi::SOP_STORE_CREATE);
                for &i in chunk {
                    let i = i as usize;
                    if self.owned {
                        let (ko, vo) =
                            std::hint::black_box((w.keys[i].clone(), w.values[i].clone()));
                        let k = ffi::sop_val::of(ko.as_bytes());
                        let v = ffi::sop_val::of(vo.as_bytes());
                        rc(ffi::sop_upsert(t, s, &k, &v));
                    } else {
                        let k = ffi::sop_val::of(w.keys[i].as_bytes());
                        let v = ffi::sop_val::of(w.values[i].as_bytes());
                        rc(ffi::sop_upsert(t, s, &k, &v));
                    }
                }
                rc(ffi::sop_txn_commit(t));
            }
        }
    }
    fn read(&mut self, w: &Workload) -> u64 {
        let mut n = 0;
        for chunk in w.get_order.chunks(BATCH) {
            unsafe {
                let mut t = std::ptr::null_mut();
                rc(ffi::sop_txn_begin(&mut t, self.db, ffi::SOP_TXN_READONLY));
                let s = self.store(t, 0);
                for &i in chunk {
                    let k = ffi::sop_val::of(w.keys[i as usize].as_bytes());
                    let mut v = ffi::sop_val::empty();
                    rc(ffi::sop_get(&mut v, t, s, &k));
                    if self.owned {
                        let o = String::from_utf8(v.as_slice().to_vec()).unwrap();
                        assert_eq!(std::hint::black_box(o).len(), VLEN);
                    }
                    assert_eq!(v.len, VLEN);
                    n += 1;
                }
                ffi::sop_txn_abort(t);
            }
        }
        n
    }
    fn scan(&mut self, _w: &Workload) -> u64 {
        let mut n = 0;
        unsafe {
            let mut t = std::ptr::null_mut();
            rc(ffi::sop_txn_begin(&mut t, self.db, ffi::SOP_TXN_READONLY));
            let s = self.store(t, 0);
            let mut c = std::ptr::null_mut();
            rc(ffi::sop_cursor_open(&mut c, t, s));
            let mut k = ffi::sop_val::empty();
            let mut v = ffi::sop_val::empty();
            while ffi::sop_cursor_get(&mut k, &mut v, c, ffi::SOP_NEXT, std::ptr::null()) == 0 {
                if self.owned {
                    let ko = String::from_utf8(k.as_slice().to_vec()).unwrap();
                    let vo = String::from_utf8(v.as_slice().to_vec()).unwrap();
                    let (ko, vo) = std::hint::black_box((ko, vo));
                    assert_eq!((ko.len(), vo.len()), (16, VLEN));
                }
                assert_eq!((k.len, v.len), (16, VLEN));
                n += 1;
            }
            ffi::sop_cursor_close(c);
            ffi::sop_txn_abort(t);
        }
        n
    }
}

// ---- rusqlite ------------------------------------------------------------

struct Sqlite {
    c: rusqlite::Connection,
}

impl Sqlite {
    fn new(dir: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let c = rusqlite::Connection::open(format!("{dir}/kv.sqlite")).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF;
             CREATE TABLE IF NOT EXISTS kv(k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID;",
        )
        .unwrap();
        Sqlite { c }
    }
}

impl Engine for Sqlite {
    fn name(&self) -> &'static str {
        "SQLite (rusqlite)"
    }
    fn fill(&mut self, w: &Workload) {
        for chunk in w.put_order.chunks(BATCH) {
            let t = self.c.transaction().unwrap();
            {
                let mut st = t
                    .prepare_cached("INSERT OR REPLACE INTO kv VALUES (?1, ?2)")
                    .unwrap();
                for &i in chunk {
                    let i = i as usize;
                    st.execute((w.keys[i].as_bytes(), w.values[i].as_bytes()))
                        .unwrap();
                }
            }
            t.commit().unwrap();
        }
    }
    fn read(&mut self, w: &Workload) -> u64 {
        let mut n = 0;
        for chunk in w.get_order.chunks(BATCH) {
            let t = self.c.transaction().unwrap();
            {
                let mut st = t.prepare_cached("SELECT v FROM kv WHERE k = ?1").unwrap();
                for &i in chunk {
                    let len = st
                        .query_row([w.keys[i as usize].as_bytes()], |r| {
                            r.get_ref(0).map(|v| v.as_blob().unwrap().len())
                        })
                        .unwrap();
                    assert_eq!(len, VLEN);
                    n += 1;
                }
            }
            t.commit().unwrap();
        }
        n
    }
    fn scan(&mut self, _w: &Workload) -> u64 {
        let mut st = self.c.prepare("SELECT k, v FROM kv ORDER BY k").unwrap();
        let mut rows = st.query([]).unwrap();
        let mut n = 0;
        while let Some(r) = rows.next().unwrap() {
            let k = r.get_ref(0).unwrap().as_blob().unwrap().len();
            let v = r.get_ref(1).unwrap().as_blob().unwrap().len();
            assert_eq!((k, v), (16, VLEN));
            n += 1;
        }
        n
    }
}

// ---- lmdb ------------------------------------------------------------------

struct Lmdb {
    env: lmdb::Environment,
    db: lmdb::Database,
}

impl Lmdb {
    fn new(dir: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let env = lmdb::Environment::new()
            .set_flags(lmdb::EnvironmentFlags::NO_SYNC)
            .set_map_size(4 << 30)
            .open(std::path::Path::new(dir))
            .unwrap();
        let db = env.open_db(None).unwrap();
        Lmdb { env, db }
    }
}

impl Engine for Lmdb {
    fn name(&self) -> &'static str {
        "LMDB (lmdb)"
    }
    fn fill(&mut self, w: &Workload) {
        use lmdb::Transaction;
        for chunk in w.put_order.chunks(BATCH) {
            let mut t = self.env.begin_rw_txn().unwrap();
            for &i in chunk {
                let i = i as usize;
                t.put(self.db, &w.keys[i], &w.values[i], lmdb::WriteFlags::empty())
                    .unwrap();
            }
            t.commit().unwrap();
        }
    }
    fn read(&mut self, w: &Workload) -> u64 {
        use lmdb::Transaction;
        let mut n = 0;
        for chunk in w.get_order.chunks(BATCH) {
            let t = self.env.begin_ro_txn().unwrap();
            for &i in chunk {
                let v = t.get(self.db, &w.keys[i as usize]).unwrap();
                assert_eq!(v.len(), VLEN);
                n += 1;
            }
        }
        n
    }
    fn scan(&mut self, _w: &Workload) -> u64 {
        use lmdb::{Cursor, Transaction};
        let t = self.env.begin_ro_txn().unwrap();
        let mut c = t.open_ro_cursor(self.db).unwrap();
        let mut n = 0;
        for (k, v) in c.iter_start() {
            assert_eq!((k.len(), v.len()), (16, VLEN));
            n += 1;
        }
        n
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).map_or(200_000, |a| a.parse().unwrap());
    let runs: usize = args.get(2).map_or(3, |a| a.parse().unwrap());
    let base = args.get(3).cloned().unwrap_or_else(|| "bench-data".into());
    std::fs::create_dir_all(&base).unwrap();
    let w = Workload {
        keys: (0..n as u64).map(key).collect(),
        values: (0..n as u64).map(value).collect(),
        put_order: order(n, 0x1234),
        get_order: order(n, 0x9876),
    };
    println!("N = {n} keys (16 B) x values ({VLEN} B), batches of {BATCH}, median of {runs} runs, no fsync");
    println!(
        "{:<24} {:>14} {:>14} {:>14}",
        "engine", "fillrandom", "readrandom", "scan"
    );
    println!(
        "{:<24} {:>14} {:>14} {:>14}",
        "", "(ops/s)", "(ops/s)", "(items/s)"
    );
    // Engines take turns run by run (not all runs of one, then the next), so
    // a change in machine load hits all of them alike; median of `runs`.
    let only: Option<usize> = std::env::var("SOP_BENCH_ONLY")
        .ok()
        .map(|v| v.parse().unwrap());
    // SOP_BENCH_STOP=1: fill only, 2: fill and read (for instruction counts
    // per phase with `perf stat`, which machine load does not disturb).
    let stop: u32 = std::env::var("SOP_BENCH_STOP").map_or(3, |v| v.parse().unwrap());
    let mut all: Vec<[Vec<f64>; 3]> = (0..ENGINES).map(|_| Default::default()).collect();
    let mut names = [""; ENGINES];
    for run in 0..runs {
        for e in 0..ENGINES {
            if only.is_some_and(|o| o != e) {
                continue;
            }
            let dir = format!("{base}/e{e}r{run}");
            let _ = std::fs::remove_dir_all(&dir);
            let mut eng: Box<dyn Engine> = match e {
                0 => Box::new(CApi::new(&dir, false)),
                1 => Box::new(CApi::new(&dir, true)),
                2 => Box::new(Binding::new(&dir, false, false)),
                5 => Box::new(Binding::new(&dir, true, false)),
                6 => Box::new(Binding::new(&dir, false, true)),
                3 => Box::new(Lmdb::new(&dir)),
                _ => Box::new(Sqlite::new(&dir)),
            };
            names[e] = eng.name();
            let t = Instant::now();
            eng.fill(&w);
            let fill = n as f64 / t.elapsed().as_secs_f64();
            if stop == 1 {
                continue;
            }
            let t = Instant::now();
            assert_eq!(eng.read(&w), n as u64);
            let read = n as f64 / t.elapsed().as_secs_f64();
            if stop == 2 {
                continue;
            }
            // a pass takes milliseconds: time several for a stable rate
            let t = Instant::now();
            for _ in 0..SCAN_PASSES {
                assert_eq!(eng.scan(&w), n as u64);
            }
            let scan = (SCAN_PASSES * n) as f64 / t.elapsed().as_secs_f64();
            for (a, x) in all[e].iter_mut().zip([fill, read, scan]) {
                a.push(x);
            }
            drop(eng);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    // median of the runs (the middle one, or the mean of the middle two)
    let median = |v: &Vec<f64>| {
        let mut v = v.clone();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => 0.0,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    };
    let best: Vec<[f64; 3]> = all
        .iter()
        .map(|a| [median(&a[0]), median(&a[1]), median(&a[2])])
        .collect();
    let mut results: Vec<(&'static str, [f64; 3])> = Vec::new();
    for e in 0..ENGINES {
        println!(
            "{:<24} {:>14.0} {:>14.0} {:>14.0}",
            names[e], best[e][0], best[e][1], best[e][2]
        );
        results.push((names[e], best[e]));
    }
    if only.is_some() {
        return;
    }
    for (label, b, c) in [
        ("binding / C API", results[2].1, results[0].1),
        ("binding / C owned", results[2].1, results[1].1),
        ("views / C API", results[5].1, results[0].1),
        ("next_ref / C API", results[6].1, results[0].1),
    ] {
        println!(
            "{label:<24} {:>13.3}x {:>13.3}x {:>13.3}x   (time {:+.1}% {:+.1}% {:+.1}%)",
            b[0] / c[0],
            b[1] / c[1],
            b[2] / c[2],
            (c[0] / b[0] - 1.0) * 100.0,
            (c[1] / b[1] - 1.0) * 100.0,
            (c[2] / b[2] - 1.0) * 100.0
        );
    }
}
