use crate::netns::Netns;
use crate::{Error, Result};

/// An rtnetlink socket bound to one network namespace.
///
/// The socket is created while the calling thread is inside the namespace; it keeps talking
/// to that namespace afterwards, so one `Netlink` per namespace serves every request.
/// Must be created from inside a tokio runtime.
pub struct Netlink {
    handle: rtnetlink::Handle,
    conn: tokio::task::JoinHandle<()>,
}

impl Netlink {
    /// A socket in the calling thread's current namespace.
    pub fn current() -> Result<Self> {
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(|e| Error::io("open rtnetlink socket", e))?;
        let conn = tokio::spawn(conn);
        Ok(Netlink { handle, conn })
    }

    /// A socket in `ns`; the calling thread is back in its own namespace when this returns.
    pub fn in_netns(ns: &Netns) -> Result<Self> {
        ns.run(Self::current)?
    }

    pub(crate) fn handle(&self) -> &rtnetlink::Handle {
        &self.handle
    }
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.conn.abort();
    }
}
