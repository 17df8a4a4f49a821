//! Compiles libsop's C sources (../../src/*.c) into a static archive with the
//! system C compiler and links it into the crate. No -flto: rustc links
//! through rust-lld, which cannot read GCC's LTO objects.

use std::env;
use std::path::PathBuf;
use std::process::{Child, Command};

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest
        .join("../..")
        .canonicalize()
        .expect("libsop source tree");
    let src = root.join("src");
    let include = root.join("include");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let cc = env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let jobs: usize = env::var("NUM_JOBS")
        .ok()
        .and_then(|j| j.parse().ok())
        .unwrap_or(2)
        .max(1);
    // libsop is always optimised: a debug build of the binding should not
    // pay for an unoptimised engine.
    let profile_opt = "-O2";

    println!("cargo:rerun-if-changed={}", src.display());
    println!("cargo:rerun-if-changed={}", include.display());
    println!("cargo:rerun-if-env-changed=CC");
    println!("cargo:rerun-if-env-changed=SOP_SANITIZE");
    // SOP_SANITIZE=address: libsop compiled with AddressSanitizer (and the
    // runtime linked), so the binding's tests check every C access made on
    // behalf of Rust (buffers handed across, borrowed bytes, cursor and txn
    // lifetimes). `make rust-asan` uses it.
    let sanitize = env::var("SOP_SANITIZE").ok().filter(|s| !s.is_empty());

    let mut sources: Vec<PathBuf> = std::fs::read_dir(&src)
        .expect("read src/")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().map(|x| x == "c").unwrap_or(false))
        .collect();
    sources.sort();
    for s in &sources {
        println!("cargo:rerun-if-changed={}", s.display());
    }
    if let Ok(rd) = std::fs::read_dir(&src) {
        for e in rd.flatten() {
            let p = e.path();
            if p.extension()
                .map(|x| x == "h" || x == "def")
                .unwrap_or(false)
            {
                println!("cargo:rerun-if-changed={}", p.display());
            }
        }
    }

    let mut objects = Vec::new();
    let mut running: Vec<(Child, PathBuf)> = Vec::new();
    for s in &sources {
        let obj = out.join(format!("{}.o", s.file_stem().unwrap().to_string_lossy()));
        let child = Command::new(&cc)
            .args([
                "-std=c11",
                "-D_GNU_SOURCE",
                profile_opt,
                "-g",
                "-pthread",
                "-fPIC",
                "-fvisibility=hidden",
                "-fno-lto",
            ])
            .args(
                sanitize
                    .iter()
                    .flat_map(|s| [format!("-fsanitize={s}"), "-fno-omit-frame-pointer".into()]),
            )
            .arg("-I")
            .arg(&include)
            .arg("-I")
            .arg(&src)
            .arg("-c")
            .arg(s)
            .arg("-o")
            .arg(&obj)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run the C compiler '{cc}': {e}"));
        running.push((child, s.clone()));
        objects.push(obj);
        if running.len() >= jobs {
            wait_one(&mut running);
        }
    }
    while !running.is_empty() {
        wait_one(&mut running);
    }

    let lib = out.join("libsop.a");
    let _ = std::fs::remove_file(&lib);
    let status = Command::new(env::var("AR").unwrap_or_else(|_| "ar".to_string()))
        .arg("rcs")
        .arg(&lib)
        .args(&objects)
        .status()
        .expect("run ar");
    assert!(status.success(), "ar failed");
    println!("cargo:rustc-link-search=native={}", out.display());
    println!("cargo:rustc-link-lib=static=sop");
    println!("cargo:rustc-link-lib=dylib=pthread");
    if let Some(s) = &sanitize {
        let rt = match s.as_str() {
            "address" => "asan",
            "undefined" => "ubsan",
            other => panic!("SOP_SANITIZE={other}: only address or undefined"),
        };
        println!("cargo:rustc-link-lib=dylib={rt}");
    }
    println!("cargo:include={}", include.display());
}

fn wait_one(running: &mut Vec<(Child, PathBuf)>) {
    let (mut child, src) = running.remove(0);
    let status = child.wait().expect("wait for the C compiler");
    assert!(status.success(), "compiling {} failed", src.display());
}
