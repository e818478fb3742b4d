//! Overlay port mappings (issue 14, item 3) in the simulated data centre, policy enforcement
//! on: a container publishes a port on its cell's address as Cloud Foundry's netin does.
//! Clients outside the overlay reach it, seen with their own address; a container on the
//! same cell does not get around the policy through it; the VTEP's port cannot be taken.
mod common;
#[path = "common/dc/mod.rs"]
mod dc;

use std::time::Instant;

use common::{exec_plugin, ping_ok, result_ip, wait_until, weft_cni_bin, Ns};
use dc::{Dc, DcOptions, INTERNET_IP, LIVE, UNDERLAY_GW};
use serde_json::{json, Value};

const PORT: u16 = 8080;

/// Cell `cell`'s overlay config with `runtimeConfig.portMappings`.
fn conf_with_ports(dc: &Dc, cell: usize, mappings: Value) -> Value {
    let mut conf = dc.cell(cell).cni_conf();
    conf["runtimeConfig"] = json!({ "portMappings": mappings });
    conf
}

/// Is `ip` in the policy table's `containers` set of cell `cell` (the agent enforces for it)?
fn known(dc: &Dc, cell: usize, ip: &str) -> bool {
    dc.cell_ns(cell)
        .ok("nft list set inet weft-policy containers")
        .contains(&format!("{ip} . "))
}

/// TCP exchange with the echo server behind `addr:PORT`, retried until it answers or `LIVE`.
fn exchange_eventually(dc: &Dc, from: &Ns, addr: &str, msg: &str) -> Option<String> {
    let start = Instant::now();
    while start.elapsed() < LIVE {
        if let Some(r) = dc.tcp_exchange(from, addr, PORT, msg) {
            return Some(r.trim().to_string());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    None
}

#[test]
fn netin_publishes_a_container_on_its_cells_address() {
    let mut dc = Dc::with(DcOptions {
        cells: 2,
        agent_env: vec![("WEFT_POLICY".into(), "on".into())],
        ..Default::default()
    });
    dc.add_internet();
    let cell1 = dc.cell(1).underlay_ip();

    // web on cell 1 publishes its echo server as the cell's PORT.
    let web = Ns::new("ct");
    web.ok("ip link set lo up");
    let conf = conf_with_ports(
        &dc,
        1,
        json!([{ "hostPort": PORT, "containerPort": PORT, "protocol": "tcp" }]),
    );
    let r = exec_plugin(
        weft_cni_bin(),
        &dc.cell_ns(1).path(),
        "ADD",
        "web",
        &web.path(),
        "eth0",
        &conf,
        &[("CNI_ARGS", "WEFT_APP_ID=web")],
    );
    assert!(r.ok, "ADD web with a port mapping: {} {}", r.json, r.stderr);
    let web_ip = result_ip(&r.json);
    let _echo = dc.echo_server(&web, PORT);
    let same_cell = dc.add_container(1, "neighbour", "other");
    let far = dc.add_container(2, "far", "other");
    wait_until("cell 1 enforces for web and neighbour", LIVE, || {
        known(&dc, 1, &web_ip) && known(&dc, 1, &same_cell.ip)
    });

    // From the internet and from the underlay: in, and the server sees the client itself.
    let got = exchange_eventually(&dc, dc.internet_ns(), &cell1, "in");
    eprintln!("attack: netin from the internet to {cell1}:{PORT}: {got:?}");
    assert_eq!(got, Some(format!("{INTERNET_IP} in")));
    let got = exchange_eventually(&dc, dc.underlay_ns(), &cell1, "ul");
    assert_eq!(got, Some(format!("{UNDERLAY_GW} ul")));
    // A container on the same cell does not get to web through the cell's address without
    // a policy: inside the cell it is a container-to-container connection. (Whether a
    // container may reach a cell's underlay address at all is the agent's egress rule.)
    let denied = dc.tcp_exchange(&same_cell.ns, &cell1, PORT, "n");
    assert_eq!(
        denied, None,
        "same-cell container reached web without a policy"
    );

    // The VTEP's UDP port cannot be published: the overlay keeps working.
    let x = Ns::new("ct");
    let r = exec_plugin(
        weft_cni_bin(),
        &dc.cell_ns(1).path(),
        "ADD",
        "vx",
        &x.path(),
        "eth0",
        &conf_with_ports(
            &dc,
            1,
            json!([{ "hostPort": 4789, "containerPort": 4789, "protocol": "udp" }]),
        ),
        &[("CNI_ARGS", "WEFT_APP_ID=other")],
    );
    eprintln!(
        "attack: container mapping the VXLAN port on a cell: ok={} msg={}",
        r.ok, r.json["msg"]
    );
    assert!(!r.ok, "the VXLAN port was mapped: {}", r.json);
    assert_eq!(r.json["code"], 103, "{}", r.json);
    let r = dc.cni(1, "DEL", "vx", &x.path(), "other");
    assert!(r.ok);
    dc.weft("policy add other other --protocol icmp");
    wait_until("far pings neighbour across cells", LIVE, || {
        ping_ok(&far.ns, &same_cell.ip)
    });

    // DEL: the port is gone.
    let r = exec_plugin(
        weft_cni_bin(),
        &dc.cell_ns(1).path(),
        "DEL",
        "web",
        &web.path(),
        "eth0",
        &conf,
        &[("CNI_ARGS", "WEFT_APP_ID=web")],
    );
    assert!(r.ok, "DEL web: {}", r.json);
    assert_eq!(dc.tcp_exchange(dc.internet_ns(), &cell1, PORT, "x"), None);
    let table = dc.cell_ns(1).sh("nft list table inet weft-ports").stdout;
    assert!(
        !String::from_utf8_lossy(&table).contains("elements"),
        "port mappings left: {}",
        String::from_utf8_lossy(&table)
    );
    dc.del_container(same_cell);
    dc.del_container(far);
}
