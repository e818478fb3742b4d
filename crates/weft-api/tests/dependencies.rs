//! The agent and the CNI plugin run on every host: their normal dependencies hold none of the
//! controller's server crates (no HTTP server, no SQL, no certificate generator), because they
//! speak to the controller through this crate only. Read from `cargo tree`, as a person would
//! check it; the same reading of `weft-controller` must find the server crates, so the check
//! cannot pass by reading nothing.

use std::collections::BTreeSet;
use std::process::Command;

/// Crates only the controller (the server) needs.
const SERVER_ONLY: &[&str] = &[
    "axum",
    "rusqlite",
    "libsqlite3-sys",
    "tokio-postgres",
    "deadpool-postgres",
    "rcgen",
    // The OpenAPI generator (weft-api's `openapi` feature).
    "utoipa",
    "weft-controller",
];

/// The crates that run on every host.
const HOST_CRATES: &[&str] = &["weft-agent", "weft-cni", "weft-api"];

/// `cargo tree --prefix none ARGS` for the workspace: one line per node.
fn cargo_tree(args: &[&str]) -> (bool, Vec<String>) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["tree", "--offline", "--prefix", "none"])
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    let text = String::from_utf8_lossy(&out.stdout);
    (
        out.status.success(),
        text.lines().map(|l| l.trim().to_string()).collect(),
    )
}

/// The names of the packages `package` depends on (itself included), normal edges only.
fn normal_dependencies(package: &str) -> BTreeSet<String> {
    let (ok, lines) = cargo_tree(&["-p", package, "-e", "normal"]);
    assert!(ok, "cargo tree -p {package} failed");
    lines
        .iter()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn hosts_build_no_server_crates() {
    let controller = normal_dependencies("weft-controller");
    for c in ["axum", "rusqlite", "tokio-postgres", "rcgen", "utoipa"] {
        assert!(
            controller.contains(c),
            "the check reads cargo tree wrong: weft-controller should depend on {c}"
        );
    }
    for host in HOST_CRATES {
        let deps = normal_dependencies(host);
        assert!(deps.contains(*host), "cargo tree -p {host} shows no {host}");
        let found: Vec<&&str> = SERVER_ONLY.iter().filter(|c| deps.contains(**c)).collect();
        assert!(
            found.is_empty(),
            "{host} depends on server crates {found:?} (see `cargo tree -p {host} -e normal -i CRATE`)"
        );
    }
}

/// Who may depend on whom among weft's own crates: the agent reads the plugin's records
/// through this crate, never through the plugin (`weft-cni`); the plugin takes the contract
/// without its HTTP client (it never speaks to the controller). Read the same way, the `weft`
/// CLI still has both, so the check cannot pass by reading nothing.
#[test]
fn the_agent_does_not_build_the_plugin_and_the_plugin_no_client() {
    let cli = normal_dependencies("weft");
    for c in ["weft-cni", "weft-api", "reqwest"] {
        assert!(
            cli.contains(c),
            "the check reads cargo tree wrong: weft should depend on {c}"
        );
    }
    let agent = normal_dependencies("weft-agent");
    assert!(agent.contains("weft-api"), "the agent speaks weft-api");
    assert!(
        !agent.contains("weft-cni"),
        "weft-agent depends on weft-cni (see `cargo tree -p weft-agent -e normal -i weft-cni`)"
    );
    let plugin = normal_dependencies("weft-cni");
    assert!(
        plugin.contains("weft-api"),
        "the plugin reads weft-api's records"
    );
    for c in ["reqwest", "rustls", "hyper", "weft-agent"] {
        assert!(
            !plugin.contains(c),
            "weft-cni depends on {c} (see `cargo tree -p weft-cni -e normal -i {c}`)"
        );
    }
}

/// The HTTP stack on a host is a client's: hyper without its server half; tower-http only as
/// reqwest's redirect layer (reqwest 0.12 depends on it unconditionally), never a server's
/// middleware.
#[test]
fn hosts_build_an_http_client_only() {
    let (_, controller) = cargo_tree(&["-p", "weft-controller", "-e", "features"]);
    assert!(
        controller.iter().any(|l| l == "hyper feature \"server\""),
        "the check reads cargo tree wrong: the controller's hyper has the server feature"
    );
    for host in HOST_CRATES {
        let (ok, features) = cargo_tree(&["-p", host, "-e", "features"]);
        assert!(ok, "cargo tree -p {host} -e features failed");
        assert!(
            !features
                .iter()
                .any(|l| l.starts_with("hyper feature \"server\"")),
            "{host} builds hyper's server"
        );
        // `-i` fails when the crate is not in the tree at all: that is fine too.
        let (present, users) = cargo_tree(&[
            "-p",
            host,
            "-e",
            "normal",
            "-i",
            "tower-http",
            "--depth",
            "1",
        ]);
        if present {
            let users: Vec<&str> = users
                .iter()
                .filter_map(|l| l.split_whitespace().next())
                .filter(|n| *n != "tower-http")
                .collect();
            assert_eq!(
                users,
                ["reqwest"],
                "{host}: tower-http comes from {users:?}"
            );
        }
    }
}
