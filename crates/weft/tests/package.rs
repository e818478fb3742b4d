//! The Debian package as `cargo deb -p weft` builds it (crates/weft/Cargo.toml's
//! `[package.metadata.deb]`, packaging/): every asset exists (or is a binary the workspace
//! builds), the systemd units run the daemons with their config files and keep the sandbox
//! they promise, the maintainer scripts purge what the package made; and README's quick start
//! runs the tests with the very command CI runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn deb_metadata() -> toml::Table {
    let manifest: toml::Table = toml::from_str(&read(&crate_dir().join("Cargo.toml"))).unwrap();
    manifest["package"]["metadata"]["deb"]
        .as_table()
        .expect("[package.metadata.deb]")
        .clone()
}

/// The binaries the workspace's crates build, by name.
fn workspace_bins() -> Vec<String> {
    let ws: toml::Table = toml::from_str(&read(&root().join("Cargo.toml"))).unwrap();
    let mut bins = Vec::new();
    for m in ws["workspace"]["members"].as_array().unwrap() {
        let m: toml::Table =
            toml::from_str(&read(&root().join(m.as_str().unwrap()).join("Cargo.toml"))).unwrap();
        for b in m
            .get("bin")
            .and_then(|b| b.as_array())
            .into_iter()
            .flatten()
        {
            bins.push(b["name"].as_str().unwrap().to_string());
        }
    }
    bins
}

/// (source, destination, mode) of every asset.
fn assets() -> Vec<(String, String, String)> {
    deb_metadata()["assets"]
        .as_array()
        .expect("assets")
        .iter()
        .map(|a| {
            let a = a.as_array().expect("[source, dest, mode]");
            let s = |i: usize| a[i].as_str().unwrap().to_string();
            (s(0), s(1), s(2))
        })
        .collect()
}

/// Where an asset lands: `dest` names the file, or the directory it goes into.
fn installed_path(src: &str, dest: &str) -> String {
    if dest.ends_with('/') {
        format!(
            "/{dest}{}",
            Path::new(src).file_name().unwrap().to_str().unwrap()
        )
    } else {
        format!("/{dest}")
    }
}

#[test]
fn every_asset_exists_and_lands_where_the_package_promises() {
    let bins = workspace_bins();
    let mut installed = BTreeMap::new();
    for (src, dest, mode) in assets() {
        if let Some(bin) = src.strip_prefix("target/release/") {
            assert!(
                bins.iter().any(|b| b == bin),
                "{src}: no crate builds a binary {bin} ({bins:?})"
            );
        } else {
            let p = crate_dir().join(&src);
            assert!(p.is_file(), "asset {src} missing ({})", p.display());
        }
        assert!(
            u32::from_str_radix(&mode, 8).is_ok_and(|m| m <= 0o755),
            "{src}: mode {mode}"
        );
        installed.insert(installed_path(&src, &dest), mode);
    }
    for (path, mode) in [
        ("/usr/bin/weft", "755"),
        ("/usr/lib/cni/weft-cni", "755"),
        ("/usr/lib/systemd/system/weft-agent.service", "644"),
        ("/usr/lib/systemd/system/weft-controller.service", "644"),
        // Conffiles (dpkg keeps a changed one on upgrade); they may hold a token.
        ("/etc/weft/agent.toml", "640"),
        ("/etc/weft/controller.toml", "640"),
    ] {
        assert_eq!(
            installed.get(path).map(String::as_str),
            Some(mode),
            "{path} in {installed:?}"
        );
    }
    let scripts = crate_dir().join(deb_metadata()["maintainer-scripts"].as_str().unwrap());
    for s in ["postinst", "prerm", "postrm"] {
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata(scripts.join(s))
            .expect(s)
            .permissions()
            .mode();
        assert_eq!(m & 0o111, 0o111, "{s} is not executable");
    }
    let postrm = read(&scripts.join("postrm"));
    let purge = postrm
        .split("if [ \"$1\" = \"purge\" ]")
        .nth(1)
        .expect("a purge branch");
    for dir in ["/etc/weft", "/var/lib/weft", "/run/weft"] {
        assert!(purge.contains(dir), "purge leaves {dir}");
    }
}

/// A unit file as section -> key -> values (a key may repeat).
fn unit(name: &str) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let text = read(&root().join("packaging/systemd").join(name));
    let mut out: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut section = String::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_string();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{name}:{}: not KEY=VALUE: {line}", n + 1));
        assert!(
            !section.is_empty(),
            "{name}:{}: key outside a section",
            n + 1
        );
        out.entry(section.clone())
            .or_default()
            .entry(k.trim().to_string())
            .or_default()
            .push(v.trim().to_string());
    }
    out
}

#[test]
fn units_run_the_daemons_with_their_config_in_a_sandbox() {
    let assets: Vec<String> = assets()
        .iter()
        .map(|(s, d, _)| installed_path(s, d))
        .collect();
    for (name, daemon, caps) in [
        (
            "weft-agent.service",
            "agent",
            &[
                "CAP_BPF",
                "CAP_NET_ADMIN",
                "CAP_NET_RAW",
                "CAP_PERFMON",
                "CAP_SYS_ADMIN",
            ][..],
        ),
        ("weft-controller.service", "controller", &[]),
    ] {
        let u = unit(name);
        let s = &u["Service"];
        let one = |k: &str| -> &str {
            let v = s.get(k).unwrap_or_else(|| panic!("{name}: no {k}"));
            assert_eq!(v.len(), 1, "{name}: {k} given {} times", v.len());
            &v[0]
        };
        let config = format!("/etc/weft/{daemon}.toml");
        assert_eq!(
            one("ExecStart"),
            format!("/usr/bin/weft {daemon} --config {config}")
        );
        assert!(assets.contains(&config), "{config} is not in the package");
        assert!(assets.contains(&format!("/usr/lib/systemd/system/{name}")));
        for (k, v) in [
            ("ProtectSystem", "strict"),
            ("ProtectHome", "yes"),
            ("PrivateTmp", "yes"),
            ("NoNewPrivileges", "yes"),
            ("Restart", "on-failure"),
            ("RuntimeDirectory", "weft"),
            // Two units share /run/weft: stopping one must not empty it under the other.
            ("RuntimeDirectoryPreserve", "yes"),
        ] {
            assert_eq!(one(k), v, "{name}: {k}");
        }
        assert!(
            one("StateDirectory")
                .split_whitespace()
                .any(|d| d == "weft"),
            "{name}: StateDirectory"
        );
        for k in ["CapabilityBoundingSet", "AmbientCapabilities"] {
            let mut got: Vec<&str> = one(k).split_whitespace().collect();
            got.sort();
            assert_eq!(got, caps, "{name}: {k}");
        }
        assert_eq!(u["Install"]["WantedBy"], ["multi-user.target"], "{name}");
    }
}

/// The fenced code blocks of README's "Quick start" section, in order.
fn quick_start_blocks() -> Vec<String> {
    let readme = read(&root().join("README.md"));
    let section = readme
        .split("\n## Quick start\n")
        .nth(1)
        .expect("README has a \"## Quick start\" section");
    let section = section.split("\n## ").next().unwrap();
    let mut blocks = Vec::new();
    let mut cur: Option<String> = None;
    for line in section.lines() {
        if line.starts_with("```") {
            match cur.take() {
                Some(b) => blocks.push(b),
                None => cur = Some(String::new()),
            }
        } else if let Some(b) = cur.as_mut() {
            b.push_str(line);
            b.push('\n');
        }
    }
    blocks
}

/// The commands of a shell text: no comments, no blank lines, continuations joined.
fn commands(text: &str) -> Vec<String> {
    text.replace("\\\n", " ")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn readme_quick_start_tests_with_the_command_ci_runs() {
    let blocks = quick_start_blocks();
    assert!(
        blocks.len() >= 2,
        "Quick start needs two fenced blocks, has {}",
        blocks.len()
    );
    let second = commands(&blocks[1]);
    let ci = commands(&read(&root().join(".ci/run")));
    // CI's own commands, after its `cd` to the top of the clone, are the README's block 2.
    let ci: Vec<String> = ci
        .into_iter()
        .filter(|c| !c.starts_with("set ") && !c.starts_with("cd "))
        .collect();
    assert_eq!(
        ci, second,
        "README's quick start block 2 and .ci/run differ"
    );
    // Block 1 installs weft's packages, builds and runs the demo.
    let first = commands(&blocks[0]).join("\n");
    for needed in ["apt-get install", "cargo build", "weft demo"] {
        assert!(
            first.contains(needed),
            "Quick start block 1 lacks {needed:?}"
        );
    }
}
