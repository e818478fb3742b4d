//! Applying the policy table, and what happens when that fails: the agent keeps what it
//! last applied, and after a failed transaction it retries with backoff and counts the
//! failure (`weft_policy_apply_failures_total`).
//!
//! Fail closed: an nftables transaction is atomic, so a failed one leaves the kernel's
//! table as it was: the fence (no policy, no cell) or the last policy applied, never a half
//! written table and never more than was allowed before. Until a write succeeds the agent
//! does not believe the kernel holds anything (`applied` is `None`): the next attempt
//! checks the table's structure and refills every set in one transaction.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::policy::{self, Elements, Layout};
use super::Kernel;

/// Exponential backoff: `first`, doubled after every failure, at most `max`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Backoff {
            first,
            max,
            next: first,
        }
    }

    /// A failure: how long to wait before the next attempt.
    pub fn failed(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// A success: the next failure waits `first` again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

/// The policy table as this process applied it, and the retry after a failure.
#[derive(Debug)]
pub struct PolicySync {
    /// The elements this process last applied (None until the first sync, and after a
    /// failure).
    applied: Option<Elements>,
    backoff: Backoff,
    /// When to try again after a failed transaction (None: nothing failed).
    retry_at: Option<Instant>,
    /// Failed transactions (the fence's and the policy's), for the metrics.
    failures: Arc<AtomicU64>,
}

/// The first retry after a failure waits this long; each further one twice as long, up to
/// [`RETRY_MAX`].
pub const RETRY_FIRST: Duration = Duration::from_millis(100);
pub const RETRY_MAX: Duration = Duration::from_secs(5);

impl PolicySync {
    pub fn new(failures: Arc<AtomicU64>) -> Self {
        PolicySync {
            applied: None,
            backoff: Backoff::new(RETRY_FIRST, RETRY_MAX),
            retry_at: None,
            failures,
        }
    }

    /// What this process last applied.
    pub fn applied(&self) -> Option<&Elements> {
        self.applied.as_ref()
    }

    /// When a failed write is due to be tried again.
    pub fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// Failed transactions so far.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Is there nothing to do for `new` (it is applied, nothing failed, no check asked)?
    pub fn is_current(&self, new: &Elements, verify: bool) -> bool {
        !verify && self.retry_at.is_none() && self.applied.as_ref() == Some(new)
    }

    /// Makes the kernel's table hold `new` (see [`policy::apply`]). Returns whether it
    /// wrote. On failure the kernel keeps what it had, `applied` is forgotten and a retry
    /// is due after the backoff.
    pub fn sync(
        &mut self,
        kernel: &mut impl Kernel,
        layout: &Layout,
        new: Elements,
        verify: bool,
    ) -> weft_kernel::Result<bool> {
        if self.is_current(&new, verify) {
            return Ok(false);
        }
        let r = policy::apply(kernel, layout, self.applied.as_ref(), &new, verify);
        let r = self.outcome(r);
        if r.is_ok() {
            self.applied = Some(new);
        }
        r
    }

    /// Writes the fencing table unless a table is there (see [`policy::fence`]); a failure
    /// counts and is retried like a sync's.
    pub fn fence(
        &mut self,
        kernel: &mut impl Kernel,
        layout: &Layout,
        elements: &Elements,
    ) -> weft_kernel::Result<bool> {
        let r = policy::fence(kernel, layout, elements);
        self.outcome(r)
    }

    fn outcome(&mut self, r: weft_kernel::Result<bool>) -> weft_kernel::Result<bool> {
        match &r {
            Ok(_) => {
                self.backoff.reset();
                self.retry_at = None;
            }
            Err(_) => {
                self.applied = None;
                self.failures.fetch_add(1, Ordering::Relaxed);
                self.retry_at = Some(Instant::now() + self.backoff.failed());
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_and_starts_over() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let waits: Vec<u128> = (0..5).map(|_| b.failed().as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 500, 500]);
        b.reset();
        assert_eq!(b.failed(), Duration::from_millis(100));
    }

    use crate::policy::{self, sets, LocalContainer};
    use std::collections::BTreeMap;
    use weft_api::model::{Policy, Protocol};
    use weft_kernel::nft::{Family, Nft, Table, Transaction, Value, Verdict};

    /// The kernel, but its next `fail` transactions fail (as one the kernel refuses would:
    /// nothing of it is applied).
    struct Faulty {
        nft: Nft,
        fail: usize,
    }

    impl Kernel for Faulty {
        fn table_matches(&mut self, f: Family, n: &str, fp: &str) -> weft_kernel::Result<bool> {
            Kernel::table_matches(&mut self.nft, f, n, fp)
        }
        fn table_exists(&mut self, f: Family, n: &str) -> weft_kernel::Result<bool> {
            Kernel::table_exists(&mut self.nft, f, n)
        }
        fn apply(&mut self, tx: &Transaction) -> weft_kernel::Result<()> {
            if self.fail > 0 {
                self.fail -= 1;
                return Err(weft_kernel::Error::Nft("injected failure".into()));
            }
            Kernel::apply(&mut self.nft, tx)
        }
    }

    fn layout() -> Layout {
        Layout::test(true, None)
    }

    /// app-b (tag 11) -> app-a's container 10.255.1.1, tcp `port`.
    fn allowing(port: Option<u16>) -> Elements {
        let tags = BTreeMap::from([("app-a".to_string(), 10), ("app-b".to_string(), 11)]);
        let c = LocalContainer {
            ip: "10.255.1.1".parse().unwrap(),
            host_ifname: "weftaaaa".into(),
            app: Some("app-a".into()),
            mac: None,
        };
        let ps: Vec<Policy> = port
            .map(|p| {
                Policy::new(
                    "app-b",
                    "app-a",
                    Protocol::Tcp,
                    Some(weft_api::model::Ports { start: p, end: p }),
                )
            })
            .into_iter()
            .collect();
        policy::elements(&ps, &tags, &[c], &[])
    }

    /// What the kernel does with a new tcp connection from app-b to 10.255.1.1:`port`, read
    /// from its table: accept when an element of `allow_ports` takes it, otherwise the
    /// forward chain's last rule, which must be the unconditional default deny.
    fn verdict(t: &Table, port: u16) -> Verdict {
        let key = Value::concat([
            Value::Int(11),
            Value::literal("10.255.1.1"),
            Value::literal("tcp"),
            port.into(),
        ]);
        let allowed = t.set(sets::ALLOW_PORTS).and_then(|s| s.lookup(&key));
        match allowed
            .and_then(|e| e.value.as_ref())
            .and_then(Value::as_verdict)
        {
            Some(v) => v.clone(),
            None => {
                let last = t
                    .chain(policy::chains::FORWARD)
                    .and_then(|c| c.rules.last());
                let last = last.expect("a forward chain with rules");
                assert_eq!(last.comment.as_deref(), Some(policy::drops::DEFAULT_DENY));
                assert!(last.expr.is_empty(), "the last rule matches everything");
                last.verdict.clone().expect("a verdict")
            }
        }
    }

    /// Needs root (skipped otherwise), in a namespace of its own. A policy transaction that
    /// fails (injected, then one the kernel refuses for real: an element deleted behind the
    /// agent's back) leaves the fence or the last table in place: what was denied stays
    /// denied. Each failure counts and sets a retry; the retry converges once the fault is
    /// gone.
    #[test]
    fn a_failed_apply_stays_denied_counts_and_converges_on_retry() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        weft_kernel::netns::in_new_netns(|| {
            let list = || {
                Nft::new()
                    .expect("libnftables")
                    .list_table(policy::FAMILY, policy::TABLE)
                    .expect("list")
                    .expect("the table")
            };
            let failures = Arc::new(AtomicU64::new(0));
            let mut sync = PolicySync::new(failures.clone());
            let mut k = Faulty {
                nft: Nft::new().expect("libnftables"),
                fail: 1,
            };
            // The fence fails first: no table, a retry is due; then it is written.
            assert!(sync.fence(&mut k, &layout(), &allowing(None)).is_err());
            assert_eq!((sync.failures(), sync.retry_at().is_some()), (1, true));
            assert!(sync
                .fence(&mut k, &layout(), &allowing(None))
                .expect("fence"));
            assert_eq!(sync.retry_at(), None);
            assert_eq!(verdict(&list(), 80), Verdict::Drop);

            // The first policy sync fails twice: the fence stays, the connection is denied.
            k.fail = 2;
            for n in [2, 3] {
                assert!(sync
                    .sync(&mut k, &layout(), allowing(Some(80)), false)
                    .is_err());
                assert_eq!(failures.load(Ordering::Relaxed), n);
                assert!(sync.retry_at().is_some());
                assert_eq!(sync.applied(), None);
                assert_eq!(verdict(&list(), 80), Verdict::Drop);
            }
            // The fault is gone: the retry applies it.
            assert!(sync
                .sync(&mut k, &layout(), allowing(Some(80)), true)
                .expect("retry"));
            assert_eq!(sync.retry_at(), None);
            assert_eq!(sync.applied(), Some(&allowing(Some(80))));
            assert_eq!(verdict(&list(), 80), Verdict::Accept);
            assert_eq!(verdict(&list(), 81), Verdict::Drop);
            // Nothing more to do: no transaction at all.
            k.fail = 1;
            assert!(!sync
                .sync(&mut k, &layout(), allowing(Some(80)), false)
                .expect("noop"));
            k.fail = 0;

            // A real refusal: someone deleted the element the agent would delete, so the
            // kernel refuses the diff (move 80 -> 81) as a whole: 81 is not allowed.
            let t = policy::table(&layout());
            let mut tx = Transaction::new();
            tx.delete_elements(
                &t,
                sets::ALLOW_PORTS,
                &allowing(Some(80))
                    .allow_ports
                    .into_iter()
                    .collect::<Vec<_>>(),
            );
            k.nft.apply(&tx).expect("delete behind the agent's back");
            let e = sync.sync(&mut k, &layout(), allowing(Some(81)), false);
            assert!(e.is_err(), "the kernel refuses to delete a missing element");
            assert_eq!(failures.load(Ordering::Relaxed), 4);
            assert_eq!(verdict(&list(), 81), Verdict::Drop);
            assert_eq!(verdict(&list(), 80), Verdict::Drop);
            // The retry refills every set in one transaction: converged.
            assert!(sync
                .sync(&mut k, &layout(), allowing(Some(81)), true)
                .expect("retry"));
            assert_eq!(verdict(&list(), 81), Verdict::Accept);
            assert_eq!(verdict(&list(), 80), Verdict::Drop);
            assert_eq!(list().elements(sets::ALLOW_PORTS).len(), 1);
        })
        .expect("a thread in a namespace of its own");
    }
}
