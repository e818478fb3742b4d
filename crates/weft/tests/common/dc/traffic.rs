//! Containers (weft-cni in a cell), the internet namespace, and traffic between them.

use super::*;

impl Dc {
    /// Runs weft-cni in cell `cell` as a runtime would (`CNI_ARGS=WEFT_APP_ID=<app>`).
    pub fn cni(&self, cell: usize, command: &str, id: &str, netns: &str, app: &str) -> Reply {
        let c = self.cell(cell);
        let args = format!("WEFT_APP_ID={app}");
        exec_plugin(
            weft_cni_bin(),
            &c.ns.path(),
            command,
            id,
            netns,
            "eth0",
            &c.cni_conf(),
            &[("CNI_ARGS", args.as_str())],
        )
    }

    /// A new container namespace attached to cell `cell` (loopback up, as runtimes do).
    pub fn add_container(&self, cell: usize, id: &str, app: &str) -> Container {
        let ns = Ns::new("ct");
        ns.ok("ip link set lo up");
        let r = self.cni(cell, "ADD", id, &ns.path(), app);
        assert!(r.ok, "ADD {id} on cell {cell}: {:?} {}", r.json, r.stderr);
        Container {
            ip: result_ip(&r.json),
            ns,
            id: id.to_string(),
            cell,
            app: app.to_string(),
            result: r.json,
        }
    }

    /// CNI DEL of the container, then its namespace goes.
    pub fn del_container(&self, c: Container) {
        let r = self.cni(c.cell, "DEL", &c.id, &c.ns.path(), &c.app);
        assert!(r.ok, "DEL {}: {:?} {}", c.id, r.json, r.stderr);
    }

    /// `weft containers --json` in cell `cell`.
    pub fn containers_json(&self, cell: usize) -> Value {
        let c = self.cell(cell);
        let out = c.ns.ok(&format!(
            "{} containers --json --data-dir {} --lease-file {}",
            weft_bin(),
            c.cni_dir().display(),
            c.lease_file().display()
        ));
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("weft containers --json: {e}: {out}"))
    }

    // ----- traffic helpers -----

    /// An "internet" namespace behind the underlay namespace (which routes, like a provider
    /// edge): `203.0.113.2/24`, default via `203.0.113.1` (the underlay namespace). It has no
    /// route to the overlay, so only masqueraded traffic from containers gets answers.
    /// Idempotent; [`Dc::internet_ns`] returns it.
    pub fn add_internet(&mut self) {
        if self.internet.is_none() {
            let inet = Ns::new("inet");
            weft_testbed::Uplink {
                upper_ns: &self.underlay.name,
                upper_if: "inet0",
                upper_master: None,
                upper_addr: Some("203.0.113.1/24".parse().expect("internet gateway")),
                lower_ns: &inet.name,
                lower_addr: format!("{INTERNET_IP}/24")
                    .parse()
                    .expect("internet address"),
                lower_gateway: "203.0.113.1".parse().expect("internet gateway"),
            }
            .build()
            .expect("internet behind the underlay");
            self.internet = Some(inet);
        }
    }

    pub fn internet_ns(&self) -> &Ns {
        self.internet.as_ref().expect("call add_internet first")
    }

    /// Starts the echo server on `port` in `ns` and waits until it answers on loopback.
    pub fn echo_server(&self, ns: &Ns, port: u16) -> Proc {
        let log = self.dir.path.join(format!("{}-echo{port}.log", ns.name));
        let py = self.dir.path.join("sock.py").display().to_string();
        let p = Proc::spawn(ns, &["python3", &py, "echo", &port.to_string()], &[], &log);
        wait_until(&format!("echo server in {}", ns.name), LIVE, || {
            self.tcp_exchange(ns, "127.0.0.1", port, "hi").is_some()
        });
        p
    }

    /// One TCP exchange from `from` to `ip:port` (an echo server): the answer
    /// (`<peer as the server saw it> <msg>`), or None.
    pub fn tcp_exchange(&self, from: &Ns, ip: &str, port: u16, msg: &str) -> Option<String> {
        let out = from.sh(&format!("{} send {ip} {port} '{msg}'", self.py()));
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Pings `ip` from `from` `count` times every `interval` seconds; (sent, received).
    pub fn ping_count(from: &Ns, ip: &str, count: u32, interval: f64) -> (u32, u32) {
        let out = from.sh(&format!("ping -n -q -i {interval} -c {count} -W 2 {ip}"));
        parse_ping(&String::from_utf8_lossy(&out.stdout))
    }

    /// A TCP sink (sock.py `sink`) on `port` in `ns`, logging to `sink.log`; listening when
    /// this returns.
    pub fn sink(&self, ns: &Ns, port: u16) -> Proc {
        let py = self.py();
        let p = Proc::spawn(
            ns,
            &["sh", "-c", &format!("exec {py} sink {port}")],
            &[],
            &self.dir.path.join("sink.log"),
        );
        wait_until("sink to listen", LIVE, || {
            ns.ok("ss -ltnH").contains(&format!(":{port}"))
        });
        p
    }

    /// A TCP stream (sock.py `stream`) from `from` to `ip:port`: `rate` bytes a second for
    /// `secs` seconds, logging to `stream.log`; it exits 0 only if the sink got every byte.
    pub fn stream(&self, from: &Ns, ip: &str, port: u16, secs: u64, rate: u64) -> Proc {
        let py = self.py();
        Proc::spawn(
            from,
            &[
                "sh",
                "-c",
                &format!("exec {py} stream {ip} {port} {secs} {rate}"),
            ],
            &[],
            &self.dir.path.join("stream.log"),
        )
    }

    /// Waits (bounded) until `from` holds an established TCP connection to `to` and returns
    /// its source port.
    pub fn established_sport(from: &Container, to: &Container) -> String {
        let mut sport = None;
        wait_until("the stream's connection", LIVE, || {
            let ss = from
                .ns
                .ok(&format!("ss -tnH state established dst {}", to.ip));
            sport = ss
                .split_whitespace()
                .find(|w| w.starts_with(&format!("{}:", from.ip)))
                .and_then(|w| w.rsplit(':').next())
                .map(str::to_string);
            sport.is_some()
        });
        sport.unwrap_or_default()
    }
}
