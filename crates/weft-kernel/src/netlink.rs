use std::future::Future;
use std::time::Duration;

use futures::{Stream, TryStreamExt};

use crate::netns::Netns;
use crate::{Error, Result};

/// How long one request may wait for the kernel's answer (for a listing: the whole dump).
///
/// The kernel answers an rtnetlink request while it handles it, in microseconds, or seconds
/// when the RTNL lock is contended (e.g. while many namespaces are torn down). An answer can
/// still be lost: when the socket's receive buffer is full the kernel drops it and reports
/// ENOBUFS, which the connection takes as an unsolicited overrun, not as the answer to the
/// request, and the request would wait forever. Past this bound it fails with
/// [`Error::Timeout`] naming the request; the caller's retry (the agent's next resync) asks
/// again.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// An rtnetlink socket bound to one network namespace.
///
/// The socket is created while the calling thread is inside the namespace; it keeps talking
/// to that namespace afterwards, so one `Netlink` per namespace serves every request.
/// Must be created from inside a tokio runtime. Every request is bounded in time
/// ([`REQUEST_TIMEOUT`], or [`Netlink::with_timeout`]).
pub struct Netlink {
    handle: rtnetlink::Handle,
    conn: tokio::task::JoinHandle<()>,
    timeout: Duration,
}

impl Netlink {
    /// A socket in the calling thread's current namespace.
    pub fn current() -> Result<Self> {
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(|e| Error::io("open rtnetlink socket", e))?;
        let conn = tokio::spawn(conn);
        Ok(Netlink {
            handle,
            conn,
            timeout: REQUEST_TIMEOUT,
        })
    }

    /// A socket in `ns`, made on a thread inside it ([`Netns::run`]); the calling thread
    /// never leaves its own namespace. Must be called from inside a tokio runtime.
    pub fn in_netns(ns: &Netns) -> Result<Self> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| Error::Invalid(format!("a netlink socket needs a tokio runtime: {e}")))?;
        ns.run(move || {
            let _in_runtime = runtime.enter();
            Self::current()
        })?
    }

    /// The same socket, each request waiting at most `timeout` for the kernel's answer.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub(crate) fn handle(&self) -> &rtnetlink::Handle {
        &self.handle
    }

    /// The kernel's answer to one request (`what` names it in errors), waited for at most
    /// the socket's timeout.
    pub(crate) async fn answer<T>(
        &self,
        what: impl Into<String>,
        request: impl Future<Output = std::result::Result<T, rtnetlink::Error>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.timeout, request).await {
            Ok(r) => r.map_err(|e| Error::netlink(what, e)),
            Err(_) => Err(Error::Timeout {
                op: what.into(),
                after: self.timeout,
            }),
        }
    }

    /// Every message of a dump, all of them within the socket's timeout.
    pub(crate) async fn dump<M>(
        &self,
        what: impl Into<String>,
        messages: impl Stream<Item = std::result::Result<M, rtnetlink::Error>>,
    ) -> Result<Vec<M>> {
        self.answer(what, messages.try_collect()).await
    }
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Netlink {
        /// A socket whose connection is never driven: requests are never sent, so no answer
        /// ever comes (as when the kernel's answer is lost).
        fn unanswered() -> Netlink {
            let (conn, handle, _) = rtnetlink::new_connection().expect("rtnetlink socket");
            let conn = tokio::spawn(async move {
                let _held = conn;
                std::future::pending::<()>().await
            });
            Netlink {
                handle,
                conn,
                timeout: REQUEST_TIMEOUT,
            }
        }
    }

    /// A request whose answer never comes fails with a timeout naming it, for requests,
    /// single gets and dumps alike, instead of waiting forever.
    #[tokio::test]
    async fn a_request_without_an_answer_times_out() {
        let nl = Netlink::unanswered().with_timeout(Duration::from_millis(200));
        let calls = async {
            let dump = nl.links().await.expect_err("links");
            let get = nl.link_by_name("lo").await.expect_err("link_by_name");
            let set = nl.set_up(1).await.expect_err("set_up");
            (dump, get, set)
        };
        let (dump, get, set) = tokio::time::timeout(Duration::from_secs(10), calls)
            .await
            .expect("a netlink request without an answer was waited for past its timeout");
        for (e, op) in [
            (dump, "list links"),
            (get, "get link lo"),
            (set, "set link #1 up"),
        ] {
            assert!(e.is_timeout(), "{e}");
            assert_eq!(e.errno(), Some(libc::ETIMEDOUT), "{e}");
            assert!(
                !e.is_not_found(),
                "a lost answer is not a missing link: {e}"
            );
            assert_eq!(
                e.to_string(),
                format!("{op}: no answer from the kernel within 200ms")
            );
        }
    }

    /// The same requests on a driven socket are answered well within the bound.
    #[tokio::test]
    async fn answered_requests_are_not_affected() {
        let nl = Netlink::current()
            .expect("rtnetlink socket")
            .with_timeout(Duration::from_secs(5));
        let links = nl.links().await.expect("links");
        assert!(links.iter().any(|l| l.name == "lo"), "{links:?}");
        assert!(nl.link_by_name("lo").await.expect("lo").is_some());
        assert!(nl
            .link_by_name("no-such-link0")
            .await
            .expect("missing link")
            .is_none());
    }
}
