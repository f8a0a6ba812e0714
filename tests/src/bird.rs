//! BIRD 2, the routing daemon of the active-active examples, run inside a
//! namespace with a configuration from `examples/active-active/`.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::{Netns, Process, TempDir, netns::run_command, util::tail, wait_until};

/// How long BIRD may take to read its configuration and open its socket.
pub const BIRD_START_TIMEOUT: Duration = Duration::from_secs(10);

/// A file of `examples/active-active/` (`bird-node.conf`, `bird-router.conf`).
pub fn example_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/active-active")
        .join(name)
}

/// `text` with the value of each `define NAME = VALUE;` line named in
/// `values` replaced, the rest of the file as it is. Fails if a name has no
/// such line, or more than one: a renamed value in the example is an error
/// here, not a silently unchanged file.
pub fn with_defines(text: &str, values: &[(&str, String)]) -> Result<String> {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for (name, value) in values {
        let prefix = format!("define {name} =");
        let at: Vec<usize> = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.trim_start().starts_with(&prefix))
            .map(|(i, _)| i)
            .collect();
        match at.as_slice() {
            [i] => lines[*i] = format!("define {name} = {value};"),
            [] => bail!("no `define {name} = ...;` line in the configuration"),
            _ => bail!("more than one `define {name} = ...;` line in the configuration"),
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    Ok(out)
}

/// A running `bird` (foreground, everything it logs on stderr, kept by
/// [`Process`]) with its own configuration file and control socket; killed
/// on drop.
pub struct Bird {
    process: Process,
    socket: PathBuf,
    dir: TempDir,
}

impl Bird {
    /// Writes `config` to a file, checks it (`bird -p`) and starts BIRD on it
    /// in `ns`; returns once BIRD answers on its control socket.
    pub fn start(ns: &Netns, config: &str) -> Result<Bird> {
        let dir = TempDir::new("bird")?;
        let conf = dir.join("bird.conf");
        std::fs::write(&conf, config).context("writing the BIRD configuration")?;
        let socket = dir.join("bird.ctl");
        let text = |p: &Path| p.to_str().map(str::to_string).context("non-UTF-8 path");
        let (conf, socket_text, pid) = (text(&conf)?, text(&socket)?, text(&dir.join("bird.pid"))?);
        ns.exec("bird", &["-p", "-c", &conf])
            .with_context(|| format!("BIRD refuses its configuration:\n{config}"))?;
        // -d: foreground, log to stderr (the configuration has no `log`).
        let mut process = ns.spawn("bird", &["-d", "-c", &conf, "-s", &socket_text, "-P", &pid])?;
        let bird_socket = socket.clone();
        let up = wait_until(BIRD_START_TIMEOUT, || {
            !process.is_running() || birdc(&bird_socket, &["show", "status"]).is_ok()
        });
        if !up || !process.is_running() {
            bail!(
                "BIRD did not start in {} (running: {}):\n{}",
                ns.name(),
                process.is_running(),
                tail(&process.output_so_far(), 4096)
            );
        }
        Ok(Bird {
            process,
            socket,
            dir,
        })
    }

    /// `birdc -s SOCKET ARGS...` (outside any namespace: the socket is a
    /// file); its output.
    pub fn birdc(&self, args: &[&str]) -> Result<String> {
        birdc(&self.socket, args)
    }

    /// `show protocols`: one entry per protocol.
    pub fn protocols(&self) -> Result<Vec<BirdProtocol>> {
        Ok(parse_protocols(&self.birdc(&["show", "protocols"])?))
    }

    /// BGP sessions in state Established.
    pub fn established(&self) -> Result<usize> {
        Ok(self
            .protocols()?
            .iter()
            .filter(|p| p.proto == "BGP" && p.info.starts_with("Established"))
            .count())
    }

    /// `show bfd sessions`: each session's neighbour and state (`Up`,
    /// `Down`, `Init`, `AdminDown`).
    pub fn bfd_sessions(&self) -> Result<Vec<(IpAddr, String)>> {
        Ok(parse_bfd_sessions(
            &self.birdc(&["show", "bfd", "sessions"])?,
        ))
    }

    /// Everything BIRD logged so far.
    pub fn output_so_far(&self) -> String {
        self.process.output_so_far()
    }

    /// The directory holding its configuration, socket and pid file.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// SIGKILL, as in a crash (its BGP peers notice by BFD).
    pub fn kill(&mut self) -> Result<()> {
        self.process.kill().map(drop)
    }
}

/// A line of `birdc show protocols`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BirdProtocol {
    pub name: String,
    /// `BGP`, `Kernel`, `BFD`, `Device`.
    pub proto: String,
    /// `up`, `start`, `down`.
    pub state: String,
    /// For BGP: `Established`, `Active`, `Passive`, `Idle`..., with details.
    pub info: String,
}

fn parse_protocols(text: &str) -> Vec<BirdProtocol> {
    text.lines()
        .filter(|l| !l.starts_with("BIRD ") && !l.starts_with("Name "))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let name = words.next()?.to_string();
            let proto = words.next()?.to_string();
            let _table = words.next()?;
            let state = words.next()?.to_string();
            let _since = words.next()?;
            let info = words.collect::<Vec<_>>().join(" ");
            Some(BirdProtocol {
                name,
                proto,
                state,
                info,
            })
        })
        .collect()
}

fn parse_bfd_sessions(text: &str) -> Vec<(IpAddr, String)> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let ip = words.next()?.parse().ok()?;
            let _interface = words.next()?;
            Some((ip, words.next()?.to_string()))
        })
        .collect()
}

fn birdc(socket: &Path, args: &[&str]) -> Result<String> {
    let mut cmd = std::process::Command::new("birdc");
    cmd.arg("-s").arg(socket).args(args);
    let out = run_command(&mut cmd, Duration::from_secs(10))
        .with_context(|| format!("birdc -s {} {}", socket.display(), args.join(" ")))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // birdc exits 0 even when it cannot connect; it says so instead.
    if !out.status.success() || text.contains("Unable to connect") {
        bail!(
            "birdc -s {} {}: {}{}",
            socket.display(),
            args.join(" "),
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defines_are_replaced_and_missing_ones_are_errors() {
        let text = "# x\ndefine A = 1;\n  define B = 198.51.100.1;\nrouter id A;\n";
        let out = with_defines(text, &[("B", "198.51.100.2".into())]).unwrap();
        assert_eq!(
            out,
            "# x\ndefine A = 1;\ndefine B = 198.51.100.2;\nrouter id A;\n"
        );
        assert!(with_defines(text, &[("C", "1".into())]).is_err());
        assert!(with_defines("define A = 1;\ndefine A = 2;\n", &[("A", "3".into())]).is_err());
    }

    #[test]
    fn protocols_are_parsed() {
        let text = "BIRD 2.0.12 ready.\n\
            Name       Proto      Table      State  Since         Info\n\
            device1    Device     ---        up     17:27:07.947  \n\
            nodes4     BGP        ---        start  17:27:07.947  Passive       \n\
            node1      BGP        ---        up     17:27:08.992  Established   \n";
        let p = parse_protocols(text);
        assert_eq!(p.len(), 3);
        assert_eq!(p[1].state, "start");
        assert_eq!(p[1].info, "Passive");
        assert_eq!(p[2].name, "node1");
        assert_eq!(p[2].info, "Established");
    }

    #[test]
    fn bfd_sessions_are_parsed() {
        let text = "BIRD 2.0.12 ready.\nbfd1:\n\
            IP address                Interface  State      Since         Interval  Timeout\n\
            2001:db8:1::3             front      Up         17:34:50.255    0.100    0.300\n\
            198.51.100.2              front      Down       17:34:49.632    1.000    0.000\n";
        let s = parse_bfd_sessions(text);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].1, "Up");
        assert_eq!(s[1].0.to_string(), "198.51.100.2");
    }

    #[test]
    fn the_examples_have_the_values_the_harness_sets() {
        for (file, names) in [
            (
                "bird-node.conf",
                &[
                    "NODE_ID",
                    "NODE_AS",
                    "ROUTER_AS",
                    "ROUTER4",
                    "ROUTER6",
                    "ANNOUNCE_TABLE",
                ][..],
            ),
            (
                "bird-router.conf",
                &["ROUTER_ID", "ROUTER_AS", "NODE_AS", "NODES4", "NODES6"][..],
            ),
        ] {
            let text = std::fs::read_to_string(example_path(file)).unwrap();
            let values: Vec<(&str, String)> = names.iter().map(|n| (*n, "1".into())).collect();
            with_defines(&text, &values).unwrap_or_else(|e| panic!("{file}: {e:#}"));
        }
    }
}
