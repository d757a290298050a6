//! Topology (c): node guests share N namespaces of one NVMe over Fabrics subsystem (NVMe/TCP),
//! each node its own host (its own host NQN and host identifier).
//!
//! The target is Linux's nvmet in a storage guest on the newest kernel (nvmet has reservations
//! since 6.x: `resv_enable` on each namespace, set before the namespace is enabled), file-backed
//! namespaces on the guest's tmpfs, one TCP port per path (`4420`, `4421`, ...) each forwarded
//! from a host port by QEMU user networking. A node guest ([`NvmeTarget::node_spec`]) has a
//! user-net NIC of its own and reaches the target at the gateway, 10.0.2.2, on the forwarded
//! host ports; [`NvmeTarget::connect`] runs `nvme connect` there with the node's host identity.
//!
//! NVMe reservations belong to the host (its host identifier), not to a controller: a node
//! connected through two ports is one registrant. With the kernel's native NVMe multipath (the
//! Debian default) two controllers of one subsystem show as one namespace (`/dev/nvmeXnY`); with
//! `nvme_core.multipath=N` ([`GuestSpec::append`]) as one namespace per controller, for
//! dm-multipath to assemble.

use crate::error::{Error, Result};
use crate::guest::{Guest, GuestSpec, BUSYBOX_SH};
use crate::kernel::KernelLine;
use crate::lab::Lab;
use std::time::Duration;

/// The NQN of the subsystem the harness creates.
pub const SUBSYSTEM_NQN: &str = "nqn.2026-12.org.fenced:lab";

/// The storage guest's NVMe/TCP port of path `j`.
fn guest_port(j: usize) -> u16 {
    4420 + u16::try_from(j).unwrap_or(0)
}

/// A running nvmet subsystem with its namespaces, in a storage guest.
pub struct NvmeTarget {
    guest: Guest,
    ports: Vec<u16>,
    namespaces: usize,
}

/// How a node connects ([`NvmeTarget::connect`]).
#[derive(Debug, Clone)]
pub struct HostIdentity {
    /// The host NQN (`nqn.2014-08.org.nvmexpress:uuid:<hostid>`).
    pub nqn: String,
    /// The host identifier (a UUID): what the target keys registrations on.
    pub id: String,
}

impl HostIdentity {
    /// The identity of node number `index` (distinct per index, stable across runs).
    pub fn of_node(index: u8) -> HostIdentity {
        let id = format!("f3dced00-0000-4000-8000-0000000000{index:02x}");
        HostIdentity {
            nqn: format!("nqn.2014-08.org.nvmexpress:uuid:{id}"),
            id,
        }
    }
}

impl NvmeTarget {
    /// Boots a storage guest on the newest kernel serving `namespaces` namespaces of `size_mb`
    /// MiB each (namespace ids 1..=N, NGUID and UUID derived from the index) through `paths`
    /// NVMe/TCP ports, with reservations enabled on each namespace.
    pub fn start(lab: &Lab, namespaces: usize, size_mb: u64, paths: usize) -> Result<NvmeTarget> {
        let ports = (0..paths.max(1))
            .map(|_| Lab::free_port())
            .collect::<Result<Vec<u16>>>()?;
        let mut spec = GuestSpec::new("nvme-storage")
            .i6300esb(false)
            .memory_mb(512)
            .kernel(KernelLine::Newest);
        for (j, port) in ports.iter().enumerate() {
            spec = spec.forward_port(*port, guest_port(j));
        }
        let guest = lab.boot(spec)?;
        let out = guest.run_with_timeout(
            &setup_script(namespaces, size_mb, ports.len()),
            Duration::from_secs(120 + 2 * namespaces as u64),
        )?;
        if !out.success() {
            return Err(Error::Setup(format!(
                "nvme-storage: the nvmet set-up script exited {}: {}{}",
                out.code, out.stdout, out.stderr
            )));
        }
        Ok(NvmeTarget {
            guest,
            ports,
            namespaces,
        })
    }

    /// The storage guest (pause it to pause the target).
    pub fn storage_guest(&self) -> &Guest {
        &self.guest
    }

    /// Number of namespaces.
    pub fn namespaces(&self) -> usize {
        self.namespaces
    }

    /// Number of paths (ports).
    pub fn paths(&self) -> usize {
        self.ports.len()
    }

    /// A node guest's spec with the NIC it reaches the target through.
    pub fn node_spec(&self, name: &str) -> GuestSpec {
        GuestSpec::new(name).user_net()
    }

    /// Connects `node` to the subsystem through every path as host `host`, with the transport
    /// timeouts given (seconds; `fast_io_fail_tmo` of `None` leaves the kernel's default, off),
    /// and waits until every namespace has its block device. Returns the node's namespace block
    /// devices (`/dev/nvmeXnY`, sorted by namespace id, then path when each controller shows its
    /// own namespaces).
    pub fn connect(
        &self,
        node: &Guest,
        host: &HostIdentity,
        ctrl_loss_tmo: u32,
        fast_io_fail_tmo: Option<u32>,
    ) -> Result<Vec<String>> {
        let mut script = String::from(
            "set -e\nmodprobe -a nvme-tcp virtio_net\nip link set lo up\nip link set eth0 up\n\
             ip addr add 10.0.2.15/24 dev eth0\nip route add default via 10.0.2.2\n",
        );
        // The kernel's fabrics interface rather than `nvme connect`: Debian 12's nvme-cli (2.3)
        // has no option for fast_io_fail_tmo.
        let fast = fast_io_fail_tmo
            .map(|t| format!(",fast_io_fail_tmo={t}"))
            .unwrap_or_default();
        for port in &self.ports {
            script.push_str(&format!(
                "echo 'transport=tcp,traddr=10.0.2.2,trsvcid={port},nqn={SUBSYSTEM_NQN},\
                 hostnqn={nqn},hostid={id},ctrl_loss_tmo={ctrl_loss_tmo},reconnect_delay=1{fast}' \
                 > /dev/nvme-fabrics\n",
                nqn = host.nqn,
                id = host.id,
            ));
        }
        node.run_ok(&script)
            .map_err(|e| Error::Setup(format!("{}: nvme connect failed: {e}", node.name())))?;
        let want = self.namespaces;
        let list = format!(
            "{BUSYBOX_SH}for i in $(seq 100); do \
             set -- $(ls /sys/block | grep -E '^nvme[0-9]+n[0-9]+$' | sort -V); \
             [ $# -ge {want} ] && break; sleep 0.1; done; \
             for d in \"$@\"; do echo \"$(cat /sys/block/$d/nsid 2>/dev/null || cat /sys/block/$d/device/nsid 2>/dev/null || echo 0) /dev/$d\"; done"
        );
        let out = node.run_ok(&list)?;
        let mut found: Vec<(u32, String)> = out
            .lines()
            .filter_map(|l| {
                let (nsid, dev) = l.split_once(' ')?;
                Some((nsid.trim().parse().unwrap_or(0), dev.to_string()))
            })
            .collect();
        found.sort();
        if found.len() < want {
            return Err(Error::Setup(format!(
                "{}: {} of {want} NVMe namespaces appeared after connecting: {out}",
                node.name(),
                found.len()
            )));
        }
        Ok(found.into_iter().map(|(_, d)| d).collect())
    }
}

/// The configfs script that builds the subsystem in the freshly booted storage guest.
fn setup_script(namespaces: usize, size_mb: u64, paths: usize) -> String {
    let mut s = String::from(BUSYBOX_SH);
    s.push_str(&format!(
        r#"set -e
modprobe -a nvmet nvmet-tcp virtio_net
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
N=/sys/kernel/config/nvmet
S=$N/subsystems/{SUBSYSTEM_NQN}
mkdir $S
echo 1 > $S/attr_allow_any_host
"#
    ));
    for i in 1..=namespaces {
        s.push_str(&format!(
            r#"truncate -s {bytes} /var/tmp/ns{i}.img
mkdir $S/namespaces/{i}
echo /var/tmp/ns{i}.img > $S/namespaces/{i}/device_path
echo {uuid} > $S/namespaces/{i}/device_uuid
echo {nguid} > $S/namespaces/{i}/device_nguid
echo 1 > $S/namespaces/{i}/resv_enable
echo 1 > $S/namespaces/{i}/enable
"#,
            bytes = size_mb << 20,
            uuid = namespace_uuid(i),
            nguid = namespace_nguid(i),
        ));
    }
    for j in 0..paths {
        s.push_str(&format!(
            r#"P=$N/ports/{p}
mkdir $P
echo tcp > $P/addr_trtype
echo ipv4 > $P/addr_adrfam
echo 0.0.0.0 > $P/addr_traddr
echo {port} > $P/addr_trsvcid
ln -s $S $P/subsystems/
"#,
            p = j + 1,
            port = guest_port(j),
        ));
    }
    s
}

/// The UUID the harness gives namespace `nsid`.
pub fn namespace_uuid(nsid: usize) -> String {
    format!("f3dced00-5f2a-4c00-8000-{nsid:012x}")
}

/// The NGUID the harness gives namespace `nsid` (what the kernel's `wwid` shows as `eui.`).
pub fn namespace_nguid(nsid: usize) -> String {
    format!("f3dced00-5f2a-4c00-8001-{nsid:012x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_namespace_gets_reservations_before_it_is_enabled() {
        let s = setup_script(2, 16, 2);
        for i in 1..=2 {
            let resv = s
                .find(&format!("echo 1 > $S/namespaces/{i}/resv_enable"))
                .unwrap();
            let enable = s
                .find(&format!("echo 1 > $S/namespaces/{i}/enable"))
                .unwrap();
            assert!(resv < enable, "namespace {i}: resv_enable after enable");
        }
        assert!(s.contains("echo 4421 > $P/addr_trsvcid"));
    }

    #[test]
    fn node_identities_differ() {
        let (a, b) = (HostIdentity::of_node(1), HostIdentity::of_node(2));
        assert_ne!(a.id, b.id);
        assert!(a.nqn.ends_with(&a.id));
    }
}
