//! A mode's kernel side behind one small trait (netavark's network driver): make the kernel
//! match a plan, undo it, compare it. [`crate::bridge::apply`] and [`crate::overlay::apply`]
//! implement it for their plans; [`Plan`] dispatches to the plan's mode, and [`result`] to
//! its plan module, so [`crate::commands`] never asks which mode it runs.

use weft_kernel::netns::Netns;
use weft_kernel::Netlink;

use crate::spec::{CniError, CniResult};
use weft_api::records::Plan;

// Not `Send`-bounded on purpose: the plugin runs one command on a current-thread runtime.
#[allow(async_fn_in_trait)]
pub trait Driver {
    /// The host end of the attachment's veth pair.
    fn host_veth(&self) -> &str;
    /// Makes the kernel match the plan (the host's side and the container's, in `ns`).
    /// Applying it again changes nothing.
    async fn setup(&self, host: &Netlink, ns: &Netns) -> Result<(), CniError>;
    /// Removes what `setup` made for this container: in both modes its veth pair (removing
    /// the host end removes both, with their addresses, routes and neighbours, also when the
    /// container's namespace is already gone). What the network's other containers share (the
    /// bridge, the network's table) stays.
    async fn teardown(&self, host: &Netlink) -> Result<(), CniError> {
        host.del_link_by_name(self.host_veth()).await?;
        Ok(())
    }
    /// CHECK: the first difference between the kernel and the plan, as code 104.
    async fn check(&self, host: &Netlink, ns: &Netns) -> Result<(), CniError>;
}

impl Driver for Plan {
    fn host_veth(&self) -> &str {
        Plan::host_veth(self)
    }
    async fn setup(&self, host: &Netlink, ns: &Netns) -> Result<(), CniError> {
        match self {
            Plan::Bridge(p) => p.setup(host, ns).await,
            Plan::Overlay(p) => p.setup(host, ns).await,
        }
    }
    async fn check(&self, host: &Netlink, ns: &Netns) -> Result<(), CniError> {
        match self {
            Plan::Bridge(p) => p.check(host, ns).await,
            Plan::Overlay(p) => p.check(host, ns).await,
        }
    }
}

/// The CNI result an attachment produces.
pub fn result(plan: &Plan) -> CniResult {
    match plan {
        Plan::Bridge(p) => crate::bridge::plan::result(p),
        Plan::Overlay(p) => crate::overlay::plan::result(p),
    }
}
