//! [`Context`]: cancellation and a deadline, honoured by every call.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind, Result};

/// Carries cancellation and an optional deadline, like SOP's `Context`.
///
/// Every call of the binding checks its context before it starts, and long
/// calls (iteration, batches, the retry helper's back-off) check it as they
/// go. Clones share the cancellation flag: cancelling one cancels all.
/// [`Context::new`] never expires.
///
/// ```
/// use std::time::Duration;
/// let ctx = sop::Context::with_timeout(Duration::from_secs(5));
/// assert!(ctx.check().is_ok());
/// ctx.cancel();
/// assert_eq!(ctx.check().unwrap_err().kind(), sop::ErrorKind::Cancelled);
/// ```
#[derive(Clone, Debug, Default)]
pub struct Context {
    cancelled: Arc<AtomicBool>,
    deadline: Option<Instant>,
}

impl Context {
    /// A context that is never cancelled by itself and never expires.
    pub fn new() -> Context {
        Context::default()
    }

    /// A context that expires `timeout` from now.
    pub fn with_timeout(timeout: Duration) -> Context {
        Context::new().deadline_at(Instant::now() + timeout)
    }

    /// This context (sharing its cancellation) with a deadline at `deadline`
    /// (the earlier of the two if it already had one).
    pub fn deadline_at(&self, deadline: Instant) -> Context {
        let deadline = match self.deadline {
            Some(d) if d < deadline => d,
            _ => deadline,
        };
        Context {
            cancelled: self.cancelled.clone(),
            deadline: Some(deadline),
        }
    }

    /// The deadline, if any.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Cancel this context and every clone of it.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    /// True once [`cancel`](Context::cancel) was called.
    #[inline]
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// `Err` with [`ErrorKind::Cancelled`] or [`ErrorKind::Timeout`] when the
    /// context is done, else `Ok`.
    #[inline]
    pub fn check(&self) -> Result<()> {
        // Every call of the binding starts here: keep the common case (not
        // cancelled, no deadline) to a load and two tests, inlined.
        if !self.is_cancelled() && self.deadline.is_none() {
            return Ok(());
        }
        self.check_slow()
    }

    #[cold]
    #[inline(never)]
    fn check_slow(&self) -> Result<()> {
        if self.is_cancelled() {
            return Err(Error::new(
                ErrorKind::Cancelled,
                "the context was cancelled",
            ));
        }
        if let Some(d) = self.deadline {
            if Instant::now() >= d {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    "the context's deadline passed",
                ));
            }
        }
        Ok(())
    }

    /// Time left before the deadline (`None`: no deadline).
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }
}
