//! The agent's data path steps beside the policy table: the egress table and the BPF fast
//! path, each made to match what the loop decided.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use weft_kernel::MacAddr;

use super::Agent;
use crate::args::FastpathMode;
use crate::tables::egress;
use crate::{fastpath, local, remote};

impl Agent {
    /// Makes the egress table match the egress state and the apps' tags. A failure is logged
    /// and leaves the kernel as it was (deny mode stays closed); the next sync refills it.
    pub(super) fn sync_egress(&mut self, verify: bool) {
        let mut tags = self.desired.apps.clone();
        tags.extend(self.tags.iter().map(|(k, v)| (k.clone(), *v)));
        let new = egress::elements(&self.desired.egress, &tags);
        let layout = egress::Layout {
            overlay: self.overlay,
            mode: self.desired.egress.mode,
        };
        if self.egress_applied.as_ref() == Some(&(layout.clone(), new.clone())) && !verify {
            return;
        }
        let old = self
            .egress_applied
            .as_ref()
            .filter(|(l, _)| *l == layout)
            .map(|(_, e)| e);
        let started = std::time::Instant::now();
        let result = weft_kernel::nft::Nft::new()
            .and_then(|mut nft| egress::apply(&mut nft, &layout, old, &new, verify));
        match result {
            Ok(wrote) => {
                if wrote {
                    tracing::info!(
                        elements = new.len(),
                        mode = layout.mode.as_str(),
                        took_us = started.elapsed().as_micros() as u64,
                        "egress applied"
                    );
                }
                self.egress_applied = Some((layout, new));
            }
            Err(e) => {
                self.egress_applied = None;
                tracing::warn!(error = %e, "applying egress failed; the kernel keeps what it had");
            }
        }
    }

    /// Loads the fast path (or, with `--fastpath off`, removes one an earlier run left).
    pub(super) async fn start_fastpath(&mut self) -> Result<()> {
        if self.args.fastpath == FastpathMode::Off {
            let mut ifs = vec![self.underlay.dev];
            for c in local::overlay_containers(&self.args.cni_data_dir) {
                if let Ok(Some(l)) = self.nl.link_by_name(&c.host_ifname).await {
                    ifs.push(l.index);
                }
            }
            fastpath::detach_all(ifs);
            return Ok(());
        }
        let loaded = fastpath::FastPath::load().and_then(|fp| {
            weft_kernel::sysctl::set(fastpath::BE_LIBERAL, "1")
                .with_context(|| format!("setting {}", fastpath::BE_LIBERAL))?;
            Ok(fp)
        });
        match loaded {
            Ok(fp) => {
                tracing::info!(
                    "fast path loaded; it attaches once the controller's snapshot is in"
                );
                if let Ok(mut v) = self.view.lock() {
                    v.fastpath = Some(fp.stats.clone());
                }
                self.fastpath = Some(fp);
            }
            Err(e) if self.args.fastpath == FastpathMode::On => {
                return Err(e.context("--fastpath on"))
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "running without the fast path (kernel path only)")
            }
        }
        Ok(())
    }

    /// Makes the fast path's maps match the local containers and remote cells, and attaches
    /// its programs (after the controller's snapshot, like the policy table). Errors are
    /// logged: the kernel path carries everything meanwhile.
    pub(super) async fn sync_fastpath(&mut self) {
        if self.fastpath.is_none() || !self.desired.have_snapshot {
            return;
        }
        let Ok(vtep_mac) = self.lease.vtep_mac.parse::<MacAddr>() else {
            return;
        };
        let links: BTreeMap<String, weft_kernel::link::Link> = match self.nl.links().await {
            Ok(ls) => ls.into_iter().map(|l| (l.name.clone(), l)).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "listing links for the fast path failed");
                return;
            }
        };
        let attached: Vec<fastpath::Attached<'_>> = self
            .containers
            .iter()
            .filter_map(|c| {
                let l = links.get(&c.host_ifname)?;
                Some(fastpath::Attached {
                    container: c,
                    ifindex: l.index,
                    host_mac: l.mac?,
                })
            })
            .collect();
        let veths = attached.iter().map(|a| a.ifindex).collect();
        let mut tags = self.desired.apps.clone();
        tags.extend(self.tags.iter().map(|(k, v)| (k.clone(), *v)));
        let config = fastpath::Config {
            underlay_ip: self.underlay.ip,
            underlay_ifindex: self.underlay.dev,
            vni: self.args.vni,
            port: self.args.vxlan_port,
            vtep_mac,
        };
        let remotes = remote::plan(self.desired.leases.values(), &self.host);
        let desired = fastpath::desired(config, &attached, &tags, &remotes);
        if let Some(fp) = self.fastpath.as_mut() {
            match fp.apply(&desired, &veths) {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    changes = n,
                    endpoints = desired.endpoints.len(),
                    remotes = desired.remotes.len(),
                    "fast path maps updated"
                ),
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "fast path sync failed; the next resync retries")
                }
            }
        }
    }
}
