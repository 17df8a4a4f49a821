//! [`Error`]: every libsop return code as an [`ErrorKind`], the detail
//! message, and [`Error::is_retryable`].

use std::ffi::CStr;
use std::fmt;
use std::os::raw::c_int;

use crate::ffi;

/// What went wrong. One kind per libsop return code (`SOP_*` in sop.h), plus
/// the binding's own kinds (cancellation, encoding, type mismatch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// `SOP_NOTFOUND`: no such key, store or database.
    NotFound,
    /// `SOP_KEYEXIST`: the key is already present.
    KeyExists,
    /// `SOP_CONFLICT`: a concurrent commit invalidated this transaction; retry it.
    Conflict,
    /// `SOP_BUSY`: held elsewhere (another process, a prepared transaction); back off and retry.
    Busy,
    /// `SOP_TIMEOUT`: a time limit passed: the transaction's, or the [`Context`](crate::Context) deadline.
    Timeout,
    /// `SOP_READONLY`: a write through a read-only transaction.
    ReadOnly,
    /// `SOP_INVAL`: a bad argument; nothing changed.
    InvalidArgument,
    /// `SOP_BADSTATE`: not allowed now (transaction ended or failed).
    BadState,
    /// `SOP_NOMEM`: out of memory.
    OutOfMemory,
    /// `SOP_NOSPC`: disk or quota full.
    NoSpace,
    /// `SOP_IOERR`: an operating-system I/O error.
    Io,
    /// `SOP_CORRUPT`: a checksum or format check failed.
    Corrupt,
    /// `SOP_VERSION`: the files were written by a newer libsop.
    Version,
    /// `SOP_UNKNOWN_OUTCOME`: the commit was sent but its outcome is unknown.
    UnknownOutcome,
    /// `SOP_PANIC`: an earlier fatal error poisoned the database; reopen it.
    Panic,
    /// `SOP_MISMATCH`: store options contradict the stored ones; nothing changed.
    Mismatch,
    /// A libsop code this binding does not know yet (the number is in [`Error::code`]).
    Other,
    /// The [`Context`](crate::Context) was cancelled.
    Cancelled,
    /// A key or value could not be encoded or decoded (serde).
    Encoding,
    /// The store exists with other key or value types than the ones asked for.
    TypeMismatch,
}

impl ErrorKind {
    /// The kind of a libsop return code (negative `SOP_*`).
    pub fn from_code(code: i32) -> ErrorKind {
        match code {
            ffi::SOP_NOTFOUND => ErrorKind::NotFound,
            ffi::SOP_KEYEXIST => ErrorKind::KeyExists,
            ffi::SOP_CONFLICT => ErrorKind::Conflict,
            ffi::SOP_BUSY => ErrorKind::Busy,
            ffi::SOP_TIMEOUT => ErrorKind::Timeout,
            ffi::SOP_READONLY => ErrorKind::ReadOnly,
            ffi::SOP_INVAL => ErrorKind::InvalidArgument,
            ffi::SOP_BADSTATE => ErrorKind::BadState,
            ffi::SOP_NOMEM => ErrorKind::OutOfMemory,
            ffi::SOP_NOSPC => ErrorKind::NoSpace,
            ffi::SOP_IOERR => ErrorKind::Io,
            ffi::SOP_CORRUPT => ErrorKind::Corrupt,
            ffi::SOP_VERSION => ErrorKind::Version,
            ffi::SOP_UNKNOWN_OUTCOME => ErrorKind::UnknownOutcome,
            ffi::SOP_PANIC => ErrorKind::Panic,
            ffi::SOP_MISMATCH => ErrorKind::Mismatch,
            _ => ErrorKind::Other,
        }
    }

    /// The libsop code of this kind, or 0 for the binding's own kinds.
    pub fn code(self) -> i32 {
        match self {
            ErrorKind::NotFound => ffi::SOP_NOTFOUND,
            ErrorKind::KeyExists => ffi::SOP_KEYEXIST,
            ErrorKind::Conflict => ffi::SOP_CONFLICT,
            ErrorKind::Busy => ffi::SOP_BUSY,
            ErrorKind::Timeout => ffi::SOP_TIMEOUT,
            ErrorKind::ReadOnly => ffi::SOP_READONLY,
            ErrorKind::InvalidArgument => ffi::SOP_INVAL,
            ErrorKind::BadState => ffi::SOP_BADSTATE,
            ErrorKind::OutOfMemory => ffi::SOP_NOMEM,
            ErrorKind::NoSpace => ffi::SOP_NOSPC,
            ErrorKind::Io => ffi::SOP_IOERR,
            ErrorKind::Corrupt => ffi::SOP_CORRUPT,
            ErrorKind::Version => ffi::SOP_VERSION,
            ErrorKind::UnknownOutcome => ffi::SOP_UNKNOWN_OUTCOME,
            ErrorKind::Panic => ffi::SOP_PANIC,
            ErrorKind::Mismatch => ffi::SOP_MISMATCH,
            _ => 0,
        }
    }
}

/// An error from libsop or from the binding: a kind, the libsop code (0 for
/// the binding's own errors) and a one-line detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    code: i32,
    message: String,
}

/// `Result<T, sop::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of the binding's own (no libsop code).
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            code: kind.code(),
            message: message.into(),
        }
    }

    /// The error for libsop return code `rc`, with the detail libsop recorded
    /// on this thread (`sop_errmsg()`). Call right after the failing call.
    pub(crate) fn from_rc(rc: c_int) -> Error {
        // SAFETY: both return constant or thread-local NUL-terminated strings.
        let detail = unsafe { CStr::from_ptr(ffi::sop_errmsg()) }
            .to_string_lossy()
            .into_owned();
        Error::from_code(rc, detail)
    }

    /// The error for a libsop return code with a given detail message.
    pub fn from_code(code: i32, detail: impl Into<String>) -> Error {
        Error {
            kind: ErrorKind::from_code(code),
            code,
            message: detail.into(),
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The libsop return code (`SOP_*`, negative), or 0 for the binding's own errors.
    pub fn code(&self) -> i32 {
        self.code
    }

    /// The detail message (may be empty).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// True when running the whole transaction again may succeed: a conflict
    /// with a concurrent commit, or a busy resource.
    pub fn is_retryable(&self) -> bool {
        if self.code != 0 {
            // SAFETY: a pure function of its argument.
            return unsafe { ffi::sop_rc_is_retryable(self.code) } != 0;
        }
        matches!(self.kind, ErrorKind::Conflict | ErrorKind::Busy)
    }

    pub(crate) fn encoding(message: impl fmt::Display) -> Error {
        Error::new(ErrorKind::Encoding, message.to_string())
    }
}

/// libsop's constant English text for a return code (`sop_strerror`).
pub fn strerror(code: i32) -> &'static str {
    // SAFETY: sop_strerror returns a static NUL-terminated string.
    unsafe { CStr::from_ptr(ffi::sop_strerror(code)) }
        .to_str()
        .unwrap_or("unknown error")
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.code != 0 {
            strerror(self.code).to_string()
        } else {
            match self.kind {
                ErrorKind::Cancelled => "cancelled".to_string(),
                ErrorKind::Encoding => "key or value encoding".to_string(),
                ErrorKind::TypeMismatch => "type mismatch".to_string(),
                ErrorKind::Timeout => "deadline exceeded".to_string(),
                k => format!("{k:?}"),
            }
        };
        if self.message.is_empty() {
            write!(f, "{what}")
        } else {
            write!(f, "{what}: {}", self.message)
        }
    }
}

impl std::error::Error for Error {}

/// `Ok(())` for `SOP_OK`, else the error.
pub(crate) fn check(rc: c_int) -> Result<()> {
    if rc == ffi::SOP_OK {
        Ok(())
    } else {
        Err(Error::from_rc(rc))
    }
}
