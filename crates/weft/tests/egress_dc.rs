//! Issue 18 item 1: egress policy in the simulated data centre (see `common/dc/mod.rs`). A
//! container's traffic out of the overlay (to the "internet" namespace, 203.0.113.2) passes in
//! mode allow (today's behaviour); in mode deny only what an egress policy allows passes,
//! exactly its range, protocol and port; removing the policy closes it again; an agent that
//! starts without a table and without an answer from the controller writes it in deny mode.
//!
//! "Denied" means the connection gets no answer while a server listens on the port, so a
//! refusal cannot pass for a denial. Waits are bounded liveness waits, never speed assertions.
mod common;
#[path = "common/dc/mod.rs"]
mod dc;

use common::{ping_ok, wait_until};
use dc::{Dc, DcOptions, INTERNET_IP, LIVE};

/// `weft egress ARGS` against the data centre's controller; panics on failure.
fn egress(dc: &Dc, args: &str) -> String {
    let out = dc.weft(&format!("egress {args}"));
    assert!(
        out.status.success(),
        "weft egress {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn reaches(dc: &Dc, c: &dc::Container, port: u16) -> bool {
    dc.tcp_exchange(&c.ns, INTERNET_IP, port, "egress")
        .is_some()
}

#[test]
fn deny_mode_allows_exactly_the_egress_rules() {
    let mut dc = Dc::with(DcOptions {
        cells: 1,
        ..Default::default()
    });
    let db = dc.add_container(1, "eg-db", "db");
    let api = dc.add_container(1, "eg-api", "api");
    dc.add_internet();
    let inet = dc.internet_ns();
    let _web = dc.echo_server(inet, 80);
    let _other = dc.echo_server(inet, 81);

    // Allow mode (the default): everything outside the overlay is reachable, as before.
    wait_until("db reaches the internet in allow mode", LIVE, || {
        reaches(&dc, &db, 80)
    });
    assert!(reaches(&dc, &db, 81));
    assert!(reaches(&dc, &api, 80));
    let table = dc.cell_ns(1).ok("nft list table inet weft-egress");
    assert!(table.contains("mode=allow"), "{table}");

    // Deny mode: nothing leaves.
    egress(&dc, "mode deny");
    wait_until("egress denied", LIVE, || !reaches(&dc, &db, 80));
    assert!(!reaches(&dc, &api, 80));
    assert!(!ping_ok(&db.ns, INTERNET_IP), "icmp denied too");
    // Traffic inside the overlay is not egress.
    let _local = dc.echo_server(&api.ns, 7000);
    assert!(
        dc.tcp_exchange(&db.ns, &api.ip, 7000, "c2c").is_some(),
        "c2c is the policy table's job, not egress's"
    );

    // One rule: db to 203.0.113.0/24, tcp port 80. Exactly that passes.
    egress(&dc, "add db 203.0.113.0/24 --protocol tcp --ports 80");
    let list: serde_json::Value =
        serde_json::from_str(&egress(&dc, "list --json")).expect("list --json");
    assert_eq!(list["mode"], "deny");
    assert_eq!(list["egress_policies"][0]["source"]["id"], "db");
    assert_eq!(list["destinations"][0]["rules"][0]["ports"], "80");
    wait_until("db reaches port 80", LIVE, || reaches(&dc, &db, 80));
    assert!(!reaches(&dc, &db, 81), "another port stays denied");
    assert!(
        !ping_ok(&db.ns, INTERNET_IP),
        "another protocol stays denied"
    );
    assert!(!reaches(&dc, &api, 80), "another app stays denied");
    let counted = dc
        .cell_ns(1)
        .ok("nft list map inet weft-egress allow_ports");
    assert!(
        counted.contains("203.0.113.0/24 . tcp . 80 counter packets"),
        "{counted}"
    );

    // Removing the rule closes it again.
    egress(&dc, "rm db 203.0.113.0/24 --protocol tcp --ports 80");
    let list: serde_json::Value =
        serde_json::from_str(&egress(&dc, "list --json")).expect("list --json");
    assert_eq!(
        list["destinations"],
        serde_json::json!([]),
        "the destination went too"
    );
    wait_until("port 80 denied again", LIVE, || !reaches(&dc, &db, 80));

    // Back to allow: as before.
    egress(&dc, "mode allow");
    wait_until("allow mode again", LIVE, || reaches(&dc, &api, 81));
}

/// A missing table is written again: by the resync while the agent runs, and in deny mode
/// (the fence) by an agent that starts without one, before it knows the mode.
#[test]
fn a_missing_egress_table_denies() {
    let mut dc = Dc::with(DcOptions {
        cells: 1,
        ..Default::default()
    });
    let db = dc.add_container(1, "eg-db2", "db");
    dc.add_internet();
    let inet = dc.internet_ns();
    let _web = dc.echo_server(inet, 80);
    wait_until("allow mode reaches", LIVE, || reaches(&dc, &db, 80));

    // Deny mode, then the table disappears under the running agent: the resync writes it
    // again (deny).
    egress(&dc, "mode deny");
    wait_until("denied", LIVE, || !reaches(&dc, &db, 80));
    dc.cell_ns(1).ok("nft delete table inet weft-egress");
    wait_until("table back", LIVE, || {
        dc.cell_ns(1)
            .sh("nft list table inet weft-egress")
            .status
            .success()
    });
    assert!(!reaches(&dc, &db, 80));

    // The agent restarts with no table: before it hears the controller it writes the table
    // in deny mode (the fence), so nothing leaves while it does not know the mode.
    dc.stop_agent(1);
    dc.cell_ns(1).ok("nft delete table inet weft-egress");
    dc.start_agent(1);
    let log = dc.cell(1).agent_log();
    assert!(
        log.contains("no egress table: written in deny mode until the controller answers"),
        "{log}"
    );
    let table = dc.cell_ns(1).ok("nft list table inet weft-egress");
    assert!(table.contains("mode=deny"), "{table}");
    assert!(!reaches(&dc, &db, 80));
}
