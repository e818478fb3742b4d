use std::io;
use std::time::Duration;

/// A failed kernel operation, naming what was attempted.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op}: {msg}")]
    Netlink {
        op: String,
        errno: Option<i32>,
        msg: String,
    },
    #[error("{op}: {source}")]
    Io { op: String, source: io::Error },
    /// The kernel did not answer a request in time (see [`crate::REQUEST_TIMEOUT`]).
    #[error("{op}: no answer from the kernel within {after:?}")]
    Timeout { op: String, after: Duration },
    #[error("nftables: {0}")]
    Nft(String),
    #[error("bpf: {0}")]
    Bpf(String),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn netlink(op: impl Into<String>, err: rtnetlink::Error) -> Self {
        let errno = match &err {
            rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
            _ => None,
        };
        let msg = match errno {
            Some(e) => io::Error::from_raw_os_error(e).to_string(),
            None => err.to_string(),
        };
        Error::Netlink {
            op: op.into(),
            errno,
            msg,
        }
    }

    pub(crate) fn io(op: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            op: op.into(),
            source,
        }
    }

    /// The errno behind this error, if the kernel gave one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Netlink { errno, .. } => *errno,
            Error::Io { source, .. } => source.raw_os_error(),
            Error::Timeout { .. } => Some(libc::ETIMEDOUT),
            _ => None,
        }
    }

    /// The kernel did not answer in time: asking again may succeed.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. })
    }

    /// The object already exists (EEXIST).
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(libc::EEXIST)
    }

    /// The object (or the device it hangs on) does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self.errno(),
            Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::ESRCH)
        )
    }
}
