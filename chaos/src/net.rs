//! Hosts on one machine: a network namespace per process, each with its
//! own address on a bridge, made with iproute2 and removed on every exit
//! path; partitions are nftables drop rules inside a host's namespace.
//!
//! Layout of run `k` (1..=250): bridge `icb<k>` with 10.199.k.1/24 in the
//! root namespace (where the harness and its clients live), and for host i
//! the namespace `iris-chaos-<k>-<name>` with 10.199.k.(10+i) on `eth0`,
//! whose peer `icv<k>x<i>` sits on the bridge.

use anyhow::{Context, bail};
use std::net::Ipv4Addr;
use std::process::Command;

/// One namespace of the run.
#[derive(Debug, Clone)]
pub struct Host {
    /// The host's name in the run (`core-1`, `kafka-2`, …).
    pub name: String,
    /// Its namespace.
    pub netns: String,
    /// Its address on the bridge.
    pub ip: Ipv4Addr,
}

/// The run's bridge and namespaces; dropped, it removes them.
pub struct Net {
    run: u8,
    hosts: Vec<Host>,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip").args(args).output().context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// `ip -n NETNS ARGS…`: an ip command inside a namespace.
fn in_ns(netns: &str, args: &[&str]) -> anyhow::Result<()> {
    let mut all = vec!["-n", netns];
    all.extend_from_slice(args);
    ip(&all)
}

/// Runs nft with a ruleset on stdin inside a namespace.
fn nft(netns: &str, ruleset: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running nft (Debian: nftables)")?;
    child.stdin.take().expect("piped").write_all(ruleset.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("nft in {netns}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

impl Net {
    /// The address the harness (and the clients) have on the bridge.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 199, self.run, 1)
    }

    /// Makes the bridge and one namespace per name. Leftovers of an earlier
    /// run with the same number are removed first.
    pub fn create(run: u8, names: &[&str]) -> anyhow::Result<Net> {
        anyhow::ensure!((1..=250).contains(&run), "run number must be 1..=250");
        remove_run(run);
        let bridge = format!("icb{run}");
        let mut net = Net { run, hosts: Vec::new() };
        ip(&["link", "add", "name", &bridge, "type", "bridge"])?;
        ip(&["addr", "add", &format!("10.199.{run}.1/24"), "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        for (i, name) in names.iter().enumerate() {
            let netns = format!("iris-chaos-{run}-{name}");
            let veth = format!("icv{run}x{i}");
            let addr = Ipv4Addr::new(10, 199, run, 10 + i as u8);
            ip(&["netns", "add", &netns])?;
            net.hosts.push(Host { name: name.to_string(), netns: netns.clone(), ip: addr });
            ip(&["link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &netns])?;
            ip(&["link", "set", &veth, "master", &bridge, "up"])?;
            in_ns(&netns, &["link", "set", "lo", "up"])?;
            in_ns(&netns, &["addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
            in_ns(&netns, &["link", "set", "eth0", "up"])?;
            in_ns(&netns, &["route", "add", "default", "via", &format!("10.199.{run}.1")])?;
        }
        Ok(net)
    }

    /// A host by name.
    pub fn host(&self, name: &str) -> &Host {
        self.hosts.iter().find(|h| h.name == name).unwrap_or_else(|| panic!("no host {name}"))
    }

    /// Drops traffic between `name` and each of `peers` (addresses), both
    /// ways, or only what `name` receives from them (`one_way`: a half-open
    /// cut, where `name`'s packets still leave). Connections that `name`
    /// opened to a peer and that the proxy carries ([`Net::redirect`]) are
    /// matched by the address they were opened to (conntrack's original
    /// destination), so a cut holds whether a link is proxied or not.
    /// Replaces any earlier cut of `name`.
    pub fn cut(&self, name: &str, peers: &[Ipv4Addr], one_way: bool) -> anyhow::Result<()> {
        let set = peers.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ");
        let input = format!("ip saddr {{ {set} }} drop\n    ct original ip daddr {{ {set} }} drop");
        let output = format!("ip daddr {{ {set} }} drop\n    ct original ip daddr {{ {set} }} drop");
        self.filter(name, &input, (!one_way).then_some(output.as_str()))
    }

    /// Drops the clients' traffic (from the bridge's address) to and from
    /// `name`'s `port`, both ways; the proxy, on the same address, still
    /// reaches it. Replaces any earlier cut of `name`.
    pub fn cut_clients(&self, name: &str, port: u16) -> anyhow::Result<()> {
        let gw = self.gateway();
        let input = format!("ip saddr {gw} tcp dport {port} drop");
        let output = format!("ip daddr {gw} tcp sport {port} drop");
        self.filter(name, &input, Some(&output))
    }

    /// Installs `name`'s filter: `input` rules, and `output` rules if any.
    fn filter(&self, name: &str, input: &str, output: Option<&str>) -> anyhow::Result<()> {
        let host = self.host(name);
        let mut rules = format!(
            "table inet chaos\ndelete table inet chaos\ntable inet chaos {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    {input}\n  }}\n"
        );
        if let Some(output) = output {
            rules.push_str(&format!(
                "  chain output {{\n    type filter hook output priority 0; policy accept;\n    {output}\n  }}\n"
            ));
        }
        rules.push_str("}\n");
        nft(&host.netns, &rules)
    }

    /// Sends `name`'s TCP connections to each `(address, port)` to the
    /// gateway's port beside it instead (the proxy, [`crate::proxy`]): an
    /// nftables DNAT rule in its namespace, in a table the cuts never touch.
    pub fn redirect(&self, name: &str, links: &[(Ipv4Addr, u16, u16)]) -> anyhow::Result<()> {
        let host = self.host(name);
        let gw = self.gateway();
        let rules: String = links
            .iter()
            .map(|(ip, port, to)| format!("    ip daddr {ip} tcp dport {port} dnat to {gw}:{to}\n"))
            .collect();
        nft(
            &host.netns,
            &format!(
                "table ip chaosnat {{\n  chain out {{\n    type nat hook output priority -100;\n{rules}  }}\n}}\n"
            ),
        )
    }

    /// Removes `name`'s cut, if any.
    pub fn heal(&self, name: &str) -> anyhow::Result<()> {
        let host = self.host(name);
        nft(&host.netns, "table inet chaos\ndelete table inet chaos\n")
    }

    /// Removes every cut.
    pub fn heal_all(&self) -> anyhow::Result<()> {
        for h in &self.hosts {
            self.heal(&h.name)?;
        }
        Ok(())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        remove_run(self.run);
    }
}

/// Removes a run's namespaces and bridge (whatever is left of them).
/// Namespaces go first: their veth ends, and so the bridge's ports, go
/// with them.
pub fn remove_run(run: u8) {
    let prefix = format!("iris-chaos-{run}-");
    if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or_default();
            if name.starts_with(&prefix) {
                // Best effort: a namespace already gone is what we want.
                let _gone = Command::new("ip").args(["netns", "del", name]).status();
            }
        }
    }
    let _gone =
        Command::new("ip").args(["link", "del", &format!("icb{run}")]).stderr(std::process::Stdio::null()).status();
}

/// Removes every run's leftovers (`chaos clean`).
pub fn remove_all() {
    for run in 1..=250 {
        remove_run(run);
    }
}
