//! Retrying the agent's start-up steps: the controller's first answers with backoff, and
//! kernel requests that went unanswered (any other kernel failure stops the agent).

use std::time::Duration;

use anyhow::Result;

/// Retries `f` with backoff until it succeeds (the controller may not be up yet).
pub(crate) async fn with_retry<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut delay = Duration::from_millis(100);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "{what} failed; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// The kernel did not answer one of the requests behind `e` in time: asking again may work.
pub(crate) fn unanswered(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<weft_kernel::Error>()
            .is_some_and(weft_kernel::Error::is_timeout)
    })
}

/// Runs `f` again while it fails only because the kernel did not answer in time.
pub(crate) async fn retry_unanswered<T, F, Fut>(what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    loop {
        match f().await {
            Err(e) if unanswered(&e) => {
                tracing::warn!(error = %format!("{e:#}"), "{what} failed; retrying")
            }
            r => return r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::anyhow;

    fn timeout() -> anyhow::Error {
        anyhow::Error::new(weft_kernel::Error::Timeout {
            op: "get link weft.vtep".into(),
            after: Duration::from_secs(10),
        })
        .context("setting up the VTEP")
    }

    /// A step whose kernel request went unanswered is made again; any other failure is
    /// returned at once (the agent stops with it).
    #[tokio::test]
    async fn unanswered_kernel_requests_are_retried_other_errors_are_not() {
        assert!(unanswered(&timeout()));
        let mut calls = 0;
        let r = retry_unanswered("setting up", || {
            calls += 1;
            let n = calls;
            async move {
                if n < 3 {
                    Err(timeout())
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(r.expect("third attempt"), 3);

        let mut calls = 0;
        let r: Result<()> = retry_unanswered("setting up", || {
            calls += 1;
            async {
                Err(anyhow!(weft_kernel::Error::Invalid(
                    "no such device".into()
                )))
            }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 1);
        assert!(!unanswered(&r.unwrap_err()));
    }
}
