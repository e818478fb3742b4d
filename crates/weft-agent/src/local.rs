//! This host's containers, as weft-cni records them, and a watch on those records: the agent
//! learns of a new or removed container within milliseconds (inotify), not at the next resync.

use std::path::{Path, PathBuf};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::sync::mpsc;
use weft_api::records::{self, Plan, ATTACHMENTS};

use crate::policy::LocalContainer;

/// The overlay containers among the recorded attachments.
pub fn overlay_containers(cni_data_dir: &Path) -> Vec<LocalContainer> {
    records::attachments(cni_data_dir)
        .into_iter()
        .filter_map(|p| match p {
            Plan::Overlay(o) => Some(LocalContainer {
                ip: o.ip,
                mac: Some(o.container_mac),
                host_ifname: o.host_veth,
                app: o.app_id,
            }),
            Plan::Bridge(_) => None,
        })
        .collect()
}

/// Starts a thread that sends `()` once its watches are in place and then whenever an
/// attachment record under `dir` is created, replaced or removed (also in networks created
/// later). Ends when the receiver is dropped.
pub fn watch(dir: PathBuf) -> mpsc::UnboundedReceiver<()> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        if let Err(e) = run(&dir, &tx) {
            tracing::warn!(dir = %dir.display(), error = %e, "watching container records failed; relying on resync");
        }
    });
    rx
}

fn run(dir: &Path, tx: &mpsc::UnboundedSender<()>) -> nix::Result<()> {
    std::fs::create_dir_all(dir).map_err(|_| nix::errno::Errno::EIO)?;
    let ino = Inotify::init(InitFlags::IN_CLOEXEC)?;
    let dir_flags = AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO;
    let rec_flags =
        AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_DELETE | AddWatchFlags::IN_CLOSE_WRITE;
    let top = ino.add_watch(dir, dir_flags)?;
    let watch_network = |net: &Path| {
        let att = net.join(ATTACHMENTS);
        if att.is_dir() {
            let _ = ino.add_watch(&att, rec_flags);
        } else if net.is_dir() {
            // The network directory is new: its attachments directory follows at once.
            let _ = ino.add_watch(net, dir_flags);
        }
    };
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            watch_network(&e.path());
        }
    }
    // Records written after the agent's first read but before these watches were in place
    // would otherwise wait for the next resync: one rescan now that the watches are there.
    if tx.send(()).is_err() {
        return Ok(());
    }
    loop {
        let events = ino.read_events()?;
        let mut changed = false;
        for ev in events {
            if ev.wd == top {
                if let Some(name) = &ev.name {
                    watch_network(&dir.join(name));
                    // Records may have been written before the watch was in place: rescan.
                    changed = true;
                }
            } else if let Some(name) = &ev.name {
                if name == ATTACHMENTS {
                    // Created inside a new network directory (records written before the
                    // watch below was added are caught by the rescan this triggers).
                    if let Ok(rd) = std::fs::read_dir(dir) {
                        for e in rd.flatten() {
                            watch_network(&e.path());
                        }
                    }
                }
                changed |= name.to_string_lossy().ends_with(".json") || name == ATTACHMENTS;
            }
        }
        if changed && tx.send(()).is_err() {
            return Ok(());
        }
    }
}
