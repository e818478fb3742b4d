//! The daemons' settings in layers: a TOML file (`--config FILE`, keys named as the flags),
//! then the environment, then the command line, each overriding the one before; what none
//! of them sets keeps its default. [figment] merges the layers and names the key and the file
//! of a value it cannot take (or of a key the daemon does not know); then the merged settings
//! go through the flags' own parser once more, so a value from the file meets exactly the
//! checks the same flag would (ranges, `requires`, `conflicts_with`).
//!
//! Which of clap's values came from the environment or the command line is clap's
//! [`ValueSource`]; those are the ones laid over the file.

use std::path::Path;

use anyhow::{anyhow, bail, Context};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, FromArgMatches, Parser};
use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Largest config file read (a settings file is a few KiB).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

#[derive(Parser)]
#[command(no_binary_name = true)]
struct Reparse<T: Args> {
    #[command(flatten)]
    args: T,
}

/// `parsed` (clap's result, with `matches` it came from) laid over the TOML file `file`.
pub fn layered<T>(parsed: &T, matches: &ArgMatches, file: &Path) -> anyhow::Result<T>
where
    T: Args + FromArgMatches + Serialize + DeserializeOwned,
{
    let meta =
        std::fs::metadata(file).with_context(|| format!("config file {}", file.display()))?;
    if !meta.is_file() {
        bail!("config file {}: not a regular file", file.display());
    }
    if meta.len() > MAX_CONFIG_BYTES {
        bail!(
            "config file {}: {} bytes, more than the {MAX_CONFIG_BYTES} a config file may have",
            file.display(),
            meta.len()
        );
    }
    let all = serde_json::to_value(parsed)?;
    let all = all
        .as_object()
        .ok_or_else(|| anyhow!("settings do not serialize as a table"))?;
    // Given on the command line or in the environment: laid over the file.
    let mut given = serde_json::Map::new();
    for id in matches.ids() {
        if matches!(
            matches.value_source(id.as_str()),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            let key = id.as_str().replace('_', "-");
            if let Some(v) = all.get(&key) {
                given.insert(key, v.clone());
            }
        }
    }
    let merged: T = Figment::new()
        .merge(Serialized::defaults(all))
        .merge(Toml::file_exact(file))
        .merge(Serialized::defaults(given))
        .extract()
        .map_err(|e| anyhow!("{}", one_line(file, &e)))?;
    reparse(&merged).map_err(|e| {
        anyhow!(
            "config file {}{}: {}",
            file.display(),
            flag_of(&e)
                .map(|k| format!(": key `{k}`"))
                .unwrap_or_default(),
            e.kind_message()
        )
    })
}

/// A figment error on one line: in which file, for which key, what is wrong.
fn one_line(file: &Path, e: &figment::Error) -> String {
    e.clone()
        .into_iter()
        .map(|e| {
            // Keys carry figment's profile ("default.vni"): the file has no profiles.
            let key = e
                .path
                .iter()
                .skip_while(|p| *p == "default")
                .cloned()
                .collect::<Vec<_>>()
                .join(".");
            match &e.kind {
                figment::error::Kind::UnknownField(k, _) => {
                    format!("config file {}: unknown key `{k}`", file.display())
                }
                kind if key.is_empty() => format!("config file {}: {kind}", file.display()),
                kind => format!("config file {}: key `{key}`: {kind}", file.display()),
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// `T`'s settings as its daemon started with `--config file` and no flags has them (the
/// environment included): what `weft doctor` checks.
pub fn from_file<T>(file: &Path) -> anyhow::Result<T>
where
    T: Args + FromArgMatches + Serialize + DeserializeOwned,
{
    use clap::CommandFactory;
    let matches = Reparse::<T>::command().try_get_matches_from(Vec::<String>::new())?;
    let parsed = T::from_arg_matches(&matches)?;
    layered(&parsed, &matches, file)
}

/// The settings as the flags that would give them, parsed by clap again.
fn reparse<T>(settings: &T) -> Result<T, clap::Error>
where
    T: Args + FromArgMatches + Serialize,
{
    let v = serde_json::to_value(settings)
        .map_err(|e| clap::Error::raw(clap::error::ErrorKind::InvalidValue, e))?;
    let mut argv = Vec::new();
    if let Some(map) = v.as_object() {
        for (k, v) in map {
            match v {
                serde_json::Value::Null | serde_json::Value::Bool(false) => {}
                serde_json::Value::Bool(true) => argv.push(format!("--{k}")),
                serde_json::Value::String(s) => argv.push(format!("--{k}={s}")),
                other => argv.push(format!("--{k}={other}")),
            }
        }
    }
    Reparse::<T>::try_parse_from(argv).map(|r| r.args)
}

/// The key (flag name) a clap error is about.
fn flag_of(e: &clap::Error) -> Option<String> {
    match e.get(clap::error::ContextKind::InvalidArg)? {
        clap::error::ContextValue::String(s) => s
            .strip_prefix("--")
            .map(|s| s.split([' ', '=']).next().unwrap_or(s).to_string()),
        _ => None,
    }
}

/// clap's message without its "error: " and usage lines.
trait KindMessage {
    fn kind_message(&self) -> String;
}

impl KindMessage for clap::Error {
    fn kind_message(&self) -> String {
        let s = self.render().to_string();
        s.lines()
            .map(str::trim)
            .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
            .filter(|l| !l.is_empty())
            .map(|l| l.trim_start_matches("error: "))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use clap::{CommandFactory, FromArgMatches};

    use crate::{layer_config, Cli, Command};

    /// The shipped files, beside the crates.
    fn shipped(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../packaging/etc/weft")
            .join(name)
    }

    /// A file of the test's own, removed when dropped.
    struct TempFile(PathBuf);
    impl TempFile {
        fn new(text: &str) -> TempFile {
            static N: AtomicUsize = AtomicUsize::new(0);
            let p = std::env::temp_dir().join(format!(
                "weft-config-test-{}-{}.toml",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::write(&p, text).expect("write");
            TempFile(p)
        }
        fn arg(&self) -> String {
            self.0.display().to_string()
        }
    }
    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// What `weft ARGV...` would run with, config file laid in (main's own path).
    fn parse(argv: &[&str]) -> anyhow::Result<Command> {
        let matches = Cli::command()
            .try_get_matches_from(std::iter::once("weft").chain(argv.iter().copied()))?;
        let mut cli = Cli::from_arg_matches(&matches)?;
        layer_config(&mut cli, &matches)?;
        Ok(cli.command)
    }

    fn settings(argv: &[&str]) -> serde_json::Value {
        match parse(argv).unwrap_or_else(|e| panic!("{argv:?}: {e:#}")) {
            Command::Agent(a) => serde_json::to_value(a).unwrap(),
            Command::Controller(c) => serde_json::to_value(c).unwrap(),
            _ => unreachable!(),
        }
    }

    /// Every flag of both daemons has a line `# KEY = VALUE` in its shipped file with the
    /// environment variable named beside it; the file parses as shipped (giving the
    /// defaults), and with every line uncommented it still parses and each documented
    /// default is the real one.
    #[test]
    fn shipped_files_document_every_flag_with_its_default() {
        for (sub, file) in [("agent", "agent.toml"), ("controller", "controller.toml")] {
            let path = shipped(file);
            let text = std::fs::read_to_string(&path).expect("shipped file");
            let cmd = Cli::command();
            let cmd = cmd.find_subcommand(sub).expect("subcommand");
            let mut n = 0;
            for arg in cmd.get_arguments() {
                let Some(long) = arg.get_long() else { continue };
                if long == "config" || long == "help" {
                    continue;
                }
                n += 1;
                assert!(
                    text.lines().any(|l| l.starts_with(&format!("# {long} = "))),
                    "{file}: no `# {long} = ...` line"
                );
                let env = arg
                    .get_env()
                    .and_then(|e| e.to_str())
                    .unwrap_or_else(|| panic!("--{long} has no environment variable"));
                assert!(
                    text.contains(&format!("[{env}]")),
                    "{file}: {long}'s variable {env} not named"
                );
            }
            assert!(n > 10, "{sub}: {n} flags");

            let defaults = settings(&[sub]);
            let as_shipped = settings(&[sub, "--config", path.to_str().unwrap()]);
            assert_eq!(as_shipped, defaults, "{file} as shipped sets nothing");

            let uncommented: String = text
                .lines()
                .filter_map(|l| l.strip_prefix("# "))
                .filter(|l| l.split_once(" = ").is_some_and(|(k, _)| !k.contains(' ')))
                .map(|l| format!("{l}\n"))
                .collect();
            let t = TempFile::new(&uncommented);
            let all = settings(&[sub, "--config", &t.arg()]);
            for (k, d) in defaults.as_object().unwrap() {
                if d.is_null() || (sub == "agent" && k == "controller") {
                    continue;
                }
                assert_eq!(
                    &all[k], d,
                    "{file}: `{k}` documents {} but the default is {d}",
                    all[k]
                );
            }
        }
    }

    /// The file sets, the environment overrides the file, a flag overrides both.
    #[test]
    fn flags_over_environment_over_file_over_defaults() {
        let f = TempFile::new("controller = \"https://c:7070\"\nvni = 7\nvxlan-port = 5000\nresync = 40\nfastpath = \"off\"\n");
        // Only this test sets it (the other tests do not look at resync).
        std::env::set_var("WEFT_AGENT_RESYNC", "50");
        let Command::Agent(a) =
            parse(&["agent", "--config", &f.arg(), "--vxlan-port", "6000"]).unwrap()
        else {
            panic!("agent")
        };
        std::env::remove_var("WEFT_AGENT_RESYNC");
        assert_eq!(a.controller, "https://c:7070");
        assert_eq!(a.vni, 7, "file");
        assert_eq!(a.resync, 50, "environment over file");
        assert_eq!(a.vxlan_port, 6000, "flag over file");
        assert_eq!(a.fastpath, weft_agent::FastpathMode::Off);
        assert_eq!(a.vtep, "weft.vtep", "default");
        assert_eq!(a.config.as_deref(), Some(f.0.as_path()));

        let f = TempFile::new("lease-ttl = 60\ninsecure-http = true\nlog-format = \"json\"\n");
        let Command::Controller(c) =
            parse(&["controller", "--config", &f.arg(), "--lease-ttl", "90"]).unwrap()
        else {
            panic!("controller")
        };
        assert_eq!((c.lease_ttl, c.insecure_http), (90, true));
        assert_eq!(c.log_format, weft_api::logging::LogFormat::Json);
    }

    /// A key the daemon does not know, a value of the wrong type, a value the flag would
    /// refuse, a combination the flags would refuse and a missing file: each an error naming
    /// the file and (where there is one) the key.
    #[test]
    fn bad_files_are_refused_naming_file_and_key() {
        for (sub, text, key, what) in [
            ("agent", "vni = 1\nvnii = 2\n", "vnii", "unknown key"),
            ("agent", "vni = \"one\"\n", "vni", "invalid type"),
            (
                "agent",
                "request-timeout = 0\n",
                "request-timeout",
                "outside",
            ),
            ("agent", "policy = \"maybe\"\n", "policy", "unknown variant"),
            (
                "agent",
                "config = \"/etc/other.toml\"\n",
                "config",
                "unknown key",
            ),
            (
                "controller",
                "overlay-cidr = \"10.0.0.0/33\"\n",
                "overlay-cidr",
                "",
            ),
            ("controller", "listen = \"nowhere\"\n", "listen", ""),
            ("controller", "tls-cert = \"/x.pem\"\n", "", "--tls-key"),
            (
                "controller",
                "insecure-http = true\ntls-cert = \"/a\"\ntls-key = \"/b\"\nclient-ca = \"/c\"\n",
                "",
                "cannot be used",
            ),
        ] {
            let f = TempFile::new(text);
            let e = parse(&[sub, "--config", &f.arg()])
                .map(|_| ())
                .expect_err(text);
            let e = format!("{e:#}");
            assert!(e.contains(&f.arg()), "{text:?}: {e}");
            if !key.is_empty() {
                assert!(e.contains(&format!("`{key}`")), "{text:?}: {e}");
            }
            assert!(e.contains(what), "{text:?}: {e}");
        }
        let e = parse(&["agent", "--config", "/nonexistent/weft/agent.toml"])
            .map(|_| ())
            .expect_err("missing");
        assert!(
            format!("{e:#}").contains("/nonexistent/weft/agent.toml"),
            "{e:#}"
        );
    }
}
