//! Network namespaces against a real kernel: named ones (add, open, list, delete, the
//! errors), `Netns::run` (inside, and always back), and children started inside.

mod common;

use std::process::Command;

use common::{unique, DelOnDrop, TestNs};
use weft_kernel::netns::{self, CommandExt as _, Netns};
use weft_kernel::Netlink;

#[test]
fn named_namespace_add_open_list_delete() {
    if common::skip() {
        return;
    }
    let name = unique("life");
    let made = netns::add_named(&name).expect("add");
    let _del = DelOnDrop(name.clone());
    assert_eq!(made.path(), netns::named_path(&name));
    assert!(netns::list_named().expect("list").contains(&name));

    // Opened again by name or by path: the same namespace, not the caller's.
    let by_name = Netns::named(&name).expect("open by name");
    assert!(by_name.same_as(&made).expect("compare"));
    let by_path = Netns::open(netns::named_path(&name)).expect("open by path");
    assert!(by_path.same_as(&made).expect("compare"));
    assert!(!made
        .same_as(&Netns::current().expect("current"))
        .expect("compare"));

    // Adding it again is refused and leaves the first one alone.
    let again = netns::add_named(&name).expect_err("second add");
    assert!(again.to_string().contains("already exists"), "{again}");
    assert!(Netns::named(&name)
        .expect("still there")
        .same_as(&made)
        .unwrap());

    netns::del_named(&name).expect("delete");
    assert!(!netns::list_named().expect("list").contains(&name));
    assert!(!netns::named_path(&name).exists());
    // Gone: deleting or opening it again names it.
    let gone = netns::del_named(&name).expect_err("second delete");
    assert!(gone.to_string().contains("does not exist"), "{gone}");
    let gone = Netns::named(&name).expect_err("open deleted");
    assert!(gone.is_not_found(), "{gone}");
    // An open handle keeps the namespace itself alive, and usable.
    assert!(made
        .run(|| Netns::current().unwrap().same_as(&made).unwrap())
        .unwrap());
}

#[test]
fn names_and_files_that_are_not_namespaces() {
    if common::skip() {
        return;
    }
    for bad in ["", ".", "..", "a/b", "a b", "tab\there"] {
        assert!(netns::add_named(bad).is_err(), "{bad:?} accepted");
        assert!(Netns::named(bad).is_err(), "{bad:?} opened");
    }
    let e = Netns::open("/proc/self/status").expect_err("not a namespace");
    assert!(e.to_string().contains("is not a network namespace"), "{e}");
}

#[test]
fn run_is_inside_and_the_caller_never_moves() {
    if common::skip() {
        return;
    }
    let t = TestNs::new("run");
    let before = Netns::current().expect("current");

    // Inside: the thread's namespace is the target; outside, nothing changed.
    let inside =
        t.ns.run(|| Netns::current().and_then(|n| n.same_as(&t.ns)))
            .expect("run")
            .expect("compare");
    assert!(inside);
    assert!(Netns::current().unwrap().same_as(&before).unwrap());

    // The closure borrows from the caller, and what it returns comes back.
    let mut seen = Vec::new();
    let n =
        t.ns.run(|| {
            seen.push(std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap());
            seen.len()
        })
        .expect("run");
    assert_eq!((n, seen.len()), (1, 1));

    // A panic comes back as an error naming the namespace; the caller is unmoved.
    let e =
        t.ns.run(|| -> u8 { panic!("boom inside") })
            .expect_err("panic");
    assert!(e.to_string().contains("boom inside"), "{e}");
    assert!(e.to_string().contains(&t.name), "{e}");
    assert!(Netns::current().unwrap().same_as(&before).unwrap());

    // The path form.
    let inside = netns::in_netns(netns::named_path(&t.name), || {
        Netns::current().unwrap().same_as(&t.ns).unwrap()
    })
    .expect("in_netns");
    assert!(inside);
    assert!(netns::in_netns("/run/netns/no-such-namespace-wk", || ()).is_err());
}

#[test]
fn a_new_namespace_of_its_own_lives_as_long_as_its_thread() {
    if common::skip() {
        return;
    }
    let before = Netns::current().expect("current");
    // Each call gets a namespace of its own: not the caller's, not the previous call's.
    let id = || {
        netns::in_new_netns(|| {
            let ns = Netns::current().expect("current");
            assert!(!ns.same_as(&before).expect("compare"));
            // Only a `lo` (procfs answers for the reading thread's namespace).
            let dev = std::fs::read_to_string("/proc/thread-self/net/dev").expect("net/dev");
            let links: Vec<String> = dev
                .lines()
                .skip(2)
                .filter_map(|l| l.split(':').next().map(|n| n.trim().to_string()))
                .collect();
            (ns.id().expect("id"), links)
        })
        .expect("in_new_netns")
    };
    let ((a, links), (b, _)) = (id(), id());
    assert_ne!(a, b);
    assert_eq!(links, ["lo"]);
    assert!(Netns::current().unwrap().same_as(&before).unwrap());
    // A panic comes back as an error; the caller is unmoved.
    let e = netns::in_new_netns(|| -> u8 { panic!("boom in a new one") }).expect_err("panic");
    assert!(e.to_string().contains("boom in a new one"), "{e}");
    assert!(Netns::current().unwrap().same_as(&before).unwrap());
}

#[tokio::test]
async fn sockets_made_inside_stay_inside() {
    if common::skip() {
        return;
    }
    let t = TestNs::new("sock");
    // A fresh namespace has only `lo`; the caller's has more (or at least another index
    // space): the socket talks to the namespace it was made in, after `run` returned.
    let nl = Netlink::in_netns(&t.ns).expect("socket");
    let links = nl.links().await.expect("links");
    assert_eq!(
        links.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(),
        ["lo"]
    );
    assert!(links[0].up, "the test bed brought lo up");
}

#[test]
fn netlink_outside_a_runtime_is_an_error_not_a_panic() {
    if common::skip() {
        return;
    }
    let t = TestNs::new("nort");
    let e = Netlink::in_netns(&t.ns).err().expect("no runtime");
    assert!(e.to_string().contains("tokio runtime"), "{e}");
}

#[test]
fn a_child_process_runs_inside() {
    if common::skip() {
        return;
    }
    let t = TestNs::new("exec");
    let (_, inode) = t.ns.id().expect("id");
    let mut cmd = Command::new("readlink");
    cmd.arg("/proc/self/ns/net");
    {
        // The command keeps its own handle: the one it was given may be gone by the spawn.
        let ns = Netns::named(&t.name).expect("open");
        cmd.netns(&ns).expect("netns");
    }
    let out = cmd.output().expect("spawn");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("net:[{inode}]")
    );
    // The parent did not move.
    let mine = std::fs::read_link("/proc/thread-self/ns/net").expect("own namespace");
    assert_ne!(mine.to_string_lossy(), format!("net:[{inode}]"));
}
