//! The bed's private network: a bridge with the bed's own /24 on the machine, and per host a
//! network namespace joined to the bridge by a veth pair. No default route and no
//! forwarding: hosts reach only the machine's bridge address and each other.

use anyhow::Result;

use crate::process::{cmd, run};
use crate::slot::Names;

/// The `ip` invocations that make the bed's bridge. Pure.
pub fn bridge_up_commands(names: &Names) -> Vec<Vec<String>> {
    let bridge = names.bridge();
    vec![
        argv(&["link", "add", &bridge, "type", "bridge"]),
        argv(&[
            "addr",
            "add",
            &format!("{}/24", names.bridge_ip()),
            "dev",
            &bridge,
        ]),
        argv(&["link", "set", &bridge, "up"]),
    ]
}

/// The `ip` invocations that give host `index` its namespace and its place on the bridge.
/// Pure.
pub fn host_up_commands(names: &Names, index: usize) -> Vec<Vec<String>> {
    let (ns, veth, peer) = (
        names.netns(index),
        names.veth(index),
        names.veth_peer(index),
    );
    let addr = format!("{}/24", names.host_ip(index));
    vec![
        argv(&["netns", "add", &ns]),
        argv(&["link", "add", &veth, "type", "veth", "peer", "name", &peer]),
        argv(&["link", "set", &peer, "netns", &ns]),
        argv(&["-n", &ns, "link", "set", &peer, "name", "eth0"]),
        argv(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"]),
        argv(&["-n", &ns, "link", "set", "eth0", "up"]),
        argv(&["-n", &ns, "link", "set", "lo", "up"]),
        argv(&["link", "set", &veth, "master", &names.bridge()]),
        argv(&["link", "set", &veth, "up"]),
    ]
}

fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|part| part.to_string()).collect()
}

fn ip(args: &[String]) -> Result<()> {
    run(&mut cmd("ip", args))?;
    Ok(())
}

/// Makes the bed's bridge.
pub fn bridge_up(names: &Names) -> Result<()> {
    bridge_up_commands(names)
        .iter()
        .try_for_each(|args| ip(args))
}

/// Makes host `index`'s namespace and veth pair.
pub fn host_up(names: &Names, index: usize) -> Result<()> {
    host_up_commands(names, index)
        .iter()
        .try_for_each(|args| ip(args))
}

/// Removes host `index`'s namespace and veth pair; absent ones are fine.
pub fn host_down(names: &Names, index: usize) {
    // Deleting one end of a veth pair deletes both.
    let _ = run(&mut cmd("ip", ["link", "del", &names.veth(index)]));
    let _ = run(&mut cmd("ip", ["netns", "del", &names.netns(index)]));
}

/// Removes the bed's bridge; an absent one is fine.
pub fn bridge_down(names: &Names) {
    let _ = run(&mut cmd("ip", ["link", "del", &names.bridge()]));
}

/// Interface names on the machine that belong to the bed in `names`' slot.
pub fn leftover_links(names: &Names) -> Result<Vec<String>> {
    let out = run(&mut cmd("ip", ["-o", "link", "show"]))?;
    // A peer that never moved into its namespace is still on the machine under its own name.
    let prefixes = [
        format!("fv{}h", names.slot()),
        format!("fp{}h", names.slot()),
    ];
    Ok(parse_link_names(&out.stdout)
        .into_iter()
        .filter(|name| {
            *name == names.bridge() || prefixes.iter().any(|prefix| name.starts_with(prefix))
        })
        .collect())
}

/// Network namespaces on the machine that belong to the bed in `names`' slot.
pub fn leftover_netns(names: &Names) -> Result<Vec<String>> {
    let out = run(&mut cmd("ip", ["netns", "list"]))?;
    let prefix = format!("ferry{}h", names.slot());
    Ok(out
        .stdout
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| name.starts_with(&prefix))
        .map(str::to_string)
        .collect())
}

/// Interface names from `ip -o link show` (`2: eth0@if3: <...> ...`). Pure.
pub fn parse_link_names(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_string())
        .collect()
}

/// Removes whatever an earlier, crashed user of this slot left behind.
pub fn clear_slot(names: &Names) -> Result<()> {
    for ns in leftover_netns(names)? {
        let _ = run(&mut cmd("ip", ["netns", "del", &ns]));
    }
    for link in leftover_links(names)? {
        let _ = run(&mut cmd("ip", ["link", "del", &link]));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_commands_put_the_peer_in_the_namespace_before_addressing_it() {
        let commands = host_up_commands(&Names::new(4), 1);
        assert_eq!(commands[0], argv(&["netns", "add", "ferry4h1"]));
        assert_eq!(
            commands[2],
            argv(&["link", "set", "fp4h1", "netns", "ferry4h1"])
        );
        assert_eq!(
            commands[4],
            argv(&[
                "-n",
                "ferry4h1",
                "addr",
                "add",
                "10.213.4.11/24",
                "dev",
                "eth0"
            ])
        );
        assert!(commands.iter().all(|c| !c.contains(&"default".to_string())));
    }

    #[test]
    fn link_names_drop_the_peer_suffix() {
        let text =
            "1: lo: <LOOPBACK,UP> mtu 65536\n7: fv2h0@if6: <BROADCAST> mtu 1500 master fbr2\n";
        assert_eq!(parse_link_names(text), vec!["lo", "fv2h0"]);
    }
}
