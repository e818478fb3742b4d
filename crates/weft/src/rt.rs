//! Async from synchronous commands: a runtime whose sockets stay in the namespace of the
//! thread that runs it, and "run this future inside that namespace" (a lab's controller is
//! only reachable from inside the lab).

use anyhow::Result;
use weft_kernel::netns::Netns;

/// A single-threaded runtime: its sockets stay in the namespace of the thread that runs it.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Runs an async block on a thread inside `ns` (sockets, including the HTTP client's, live
/// there: a lab's controller is only reachable from inside the lab).
pub fn block_in<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<T>>>> + Send + 'static,
) -> Result<T> {
    Netns::named(ns)?.run(move || runtime()?.block_on(f()))?
}
