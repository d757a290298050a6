//! `fenced setup`: the configuration of every node from the cluster's names and devices, the
//! voting disks formatted first with `--format`. The timeouts stay in the voting disks' header:
//! the files written leave `[timeouts]` out.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use fenced::args::SetupArgs;
use fenced::config::Config;
use fenced::vdisk::{admin, ClusterId, Header, NodeName};

use super::Exit;

/// Runs `fenced setup`.
pub fn run(args: &SetupArgs) -> Exit {
    if let Err(e) = check_nodes(&args.nodes) {
        complain!("{e}");
        return Exit::Failure;
    }
    let header = match header(args) {
        Ok(h) => h,
        Err(exit) => return exit,
    };
    let texts: Vec<(String, String)> = args
        .nodes
        .iter()
        .enumerate()
        .map(|(id, node)| (node.clone(), config_text(args, &header, id)))
        .collect();
    // Every file parses as the daemon will read it, before any is written.
    for (node, text) in &texts {
        let parsed =
            Config::parse_with(Path::new("fenced.toml"), text, &|_, _| Ok(header.timeouts));
        if let Err(e) = parsed {
            complain!("the configuration of {node} does not check: {e}");
            return Exit::Failure;
        }
    }
    let targets: Vec<(String, String, PathBuf)> = match (&args.this_node, &args.dir) {
        (Some(me), _) => match texts.into_iter().find(|(n, _)| n == me) {
            Some((n, t)) => vec![(n, t, args.config.clone())],
            None => {
                complain!(
                    "--this-node {me} is not one of the --node names ({})",
                    args.nodes.join(", ")
                );
                return Exit::Failure;
            }
        },
        (None, Some(dir)) => texts
            .into_iter()
            .map(|(n, t)| {
                let path = dir.join(format!("{n}.toml"));
                (n, t, path)
            })
            .collect(),
        (None, None) => {
            complain!("say where to write: --dir DIR or --this-node NAME");
            return Exit::Failure;
        }
    };
    if !args.force {
        if let Some((_, _, p)) = targets.iter().find(|(_, _, p)| p.exists()) {
            complain!(
                "{} exists; refusing to overwrite it without --force",
                p.display()
            );
            return Exit::Refused;
        }
    }
    for (node, text, path) in &targets {
        if let Err(e) = write_private(path, text) {
            complain!("writing {}: {e}", path.display());
            return Exit::Failure;
        }
        say!("{}: the configuration of {node}", path.display());
    }
    let t = header.timeouts;
    say!(
        "cluster {} ({}), {} node(s), {} voting disk(s) with {} slots; timeouts from their header: poll {} ms, io_deadline {} ms, lease {} ms, watchdog {} ms",
        args.name,
        header.cluster,
        args.nodes.len(),
        args.voting_disks.len(),
        header.slots,
        t.poll_ms,
        t.io_deadline_ms,
        t.lease_ms,
        t.watchdog_ms
    );
    Exit::Ok
}

/// Node names: 1 to 255 of them, each a valid slot name, no two alike.
fn check_nodes(nodes: &[String]) -> Result<(), String> {
    if nodes.is_empty() || nodes.len() > 255 {
        return Err(format!("{} nodes: 1 to 255 are possible", nodes.len()));
    }
    for (i, n) in nodes.iter().enumerate() {
        if NodeName::new(n).is_none() || n.is_empty() {
            return Err(format!(
                "node name {n:?} cannot be stored in a voting-disk slot (1 to 64 bytes)"
            ));
        }
        if nodes[..i].contains(n) {
            return Err(format!("node {n} is named twice"));
        }
    }
    Ok(())
}

/// The voting disks' header: written now with `--format`, else read from a majority of them.
fn header(args: &SetupArgs) -> Result<Header, Exit> {
    let nodes = u8::try_from(args.nodes.len()).unwrap_or(u8::MAX);
    if !args.format {
        let h = admin::majority_header(&args.voting_disks, args.uuid).map_err(|e| {
            complain!("{e}; format them with --format, or give the UUID they hold");
            Exit::Failure
        })?;
        if h.slots < nodes {
            complain!(
                "the voting disks have {} slots for {} nodes: format them again with --format --slots {nodes} --force (while no daemon uses them)",
                h.slots,
                args.nodes.len()
            );
            return Err(Exit::Failure);
        }
        return Ok(h);
    }
    let timeouts = args.timeouts.timeouts();
    if let Err(msg) = timeouts.check() {
        complain!("invalid timeouts: {msg}");
        return Err(Exit::Failure);
    }
    let slots = args.slots.unwrap_or(nodes);
    if slots < nodes {
        complain!("--slots {slots} is fewer than the {nodes} nodes");
        return Err(Exit::Failure);
    }
    let cluster = match args.uuid {
        Some(u) => u,
        None => new_cluster_id().map_err(|e| {
            complain!("cannot read random bytes for the cluster UUID: {e}");
            Exit::Failure
        })?,
    };
    let header = Header::new(cluster, slots, timeouts);
    match super::disk::format_disks(&args.voting_disks, &header, args.force) {
        Exit::Ok => Ok(header),
        other => Err(other),
    }
}

/// A random (version 4) UUID.
fn new_cluster_id() -> std::io::Result<ClusterId> {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&fenced::vdisk::random_u64()?.to_le_bytes());
    b[8..].copy_from_slice(&fenced::vdisk::random_u64()?.to_le_bytes());
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    Ok(ClusterId(b))
}

/// A TOML string.
fn quoted(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The configuration of node `id`.
fn config_text(args: &SetupArgs, header: &Header, id: usize) -> String {
    let list = |items: Vec<String>| {
        if items.is_empty() {
            "[]".to_string()
        } else {
            format!("[\n  {},\n]", items.join(",\n  "))
        }
    };
    let nodes = list(
        args.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| format!("{{ id = {i}, name = {} }}", quoted(n)))
            .collect(),
    );
    let luns = list(args.luns.iter().map(|l| quoted(l)).collect());
    let disks = list(
        args.voting_disks
            .iter()
            .map(|d| quoted(&d.display().to_string()))
            .collect(),
    );
    let t = header.timeouts;
    format!(
        r#"# fenced.toml of {node}, written by `fenced setup`; every key: fenced.toml(5).
# The same on every node but [node] id.

[cluster]
name = {name}
uuid = "{uuid}"
# Reservation keys are derived from the UUID and the node id; `key = "0x..."` sets one.
nodes = {nodes}

[node]
id = {id}

[storage]
# Every path of each is registered; a glob matches like a shell's, in one directory.
luns = {luns}
voting_disks = {disks}

# No [timeouts]: the voting disks' header holds them (poll {p} ms, io_deadline {d} ms,
# lease {l} ms, watchdog {w} ms); fenced reads them there. fence_deadline (20000 ms) and
# startup_delay (0) are this file's own, and may be set here.
"#,
        node = args.nodes[id],
        name = quoted(&args.name),
        uuid = header.cluster,
        p = t.poll_ms,
        d = t.io_deadline_ms,
        l = t.lease_ms,
        w = t.watchdog_ms,
    )
}

/// Writes `text` to `path` readable by root only, through a temporary file renamed over it.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("toml.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use fenced::args::{Cli, Group};
    use fenced::vdisk::Timeouts;

    fn setup_args(extra: &[&str]) -> SetupArgs {
        let mut argv = vec![
            "fenced",
            "setup",
            "--name",
            "lab \"A\"",
            "--node",
            "node1",
            "--node",
            "node2",
            "--voting-disk",
            "/dev/disk/by-id/wwn-0x1",
            "--voting-disk",
            "/dev/disk/by-id/wwn-0x2",
            "--voting-disk",
            "/dev/disk/by-id/wwn-0x3",
            "--lun",
            "/dev/disk/by-id/wwn-0x6001405*",
        ];
        argv.extend_from_slice(extra);
        match Cli::parse_from(argv).group {
            Group::Setup(a) => a,
            other => panic!("{other:?}"),
        }
    }

    /// The text written for each node is a configuration the daemon reads as meant: its own
    /// id, every member, the devices, the header's timeouts.
    #[test]
    fn each_nodes_text_parses_to_its_own_configuration() {
        let args = setup_args(&["--dir", "/tmp/x"]);
        let cluster: ClusterId = "5f0c5a3e-2b1d-4c43-9a55-1d0e6b1c9f10".parse().unwrap();
        let t = Timeouts {
            poll_ms: 500,
            io_deadline_ms: 200,
            lease_ms: 2000,
            watchdog_ms: 4000,
        };
        let header = Header::new(cluster, 4, t);
        for id in 0..2 {
            let text = config_text(&args, &header, id);
            assert!(!text.contains("\n[timeouts]"), "{text}");
            let c = Config::parse_with(Path::new("f.toml"), &text, &|_, c| {
                assert_eq!(c, cluster);
                Ok(t)
            })
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert_eq!(c.cluster_name, "lab \"A\"");
            assert_eq!(c.me.name, args.nodes[id]);
            assert_eq!(usize::from(c.me.id), id);
            assert_eq!(c.members.len(), 2);
            assert_eq!(c.luns, ["/dev/disk/by-id/wwn-0x6001405*"]);
            assert_eq!(c.voting_disks.len(), 3);
            assert_eq!(c.timing.as_header_timeouts(), t);
        }
    }

    #[test]
    fn node_names_must_be_distinct_and_fit_a_slot() {
        assert!(check_nodes(&["a".into(), "b".into()]).is_ok());
        assert!(check_nodes(&["a".into(), "a".into()])
            .unwrap_err()
            .contains("named twice"));
        assert!(check_nodes(&["x".repeat(200)]).is_err());
        assert!(check_nodes(&[]).is_err());
    }

    #[test]
    fn a_new_cluster_id_is_a_random_version_4_uuid() {
        let (a, b) = (new_cluster_id().unwrap(), new_cluster_id().unwrap());
        assert_ne!(a, b);
        let s = a.to_string();
        assert_eq!(&s[14..15], "4", "{s}");
        assert!("89ab".contains(&s[19..20]), "{s}");
        assert_eq!(s.parse::<ClusterId>().unwrap(), a);
    }

    /// With image files for voting disks: --format writes the header and every node's file;
    /// a second run without --format reads the UUID and the timeouts back from the disks and
    /// refuses to overwrite the files without --force.
    #[test]
    fn format_then_write_every_nodes_file_then_read_the_header_back() {
        let dir = tempfile::tempdir().unwrap();
        let disks: Vec<String> = (0..3)
            .map(|i| {
                let p = dir.path().join(format!("vote{i}"));
                std::fs::File::create(&p).unwrap().set_len(1 << 20).unwrap();
                p.display().to_string()
            })
            .collect();
        let out = dir.path().join("configs");
        let argv = |extra: &[&str]| {
            let mut v: Vec<String> = [
                "fenced", "setup", "--name", "lab", "--node", "n1", "--node", "n2",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            for d in &disks {
                v.extend(["--voting-disk".to_string(), d.clone()]);
            }
            v.extend(["--dir".to_string(), out.display().to_string()]);
            v.extend(extra.iter().map(|s| s.to_string()));
            match Cli::parse_from(v).group {
                Group::Setup(a) => a,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(
            run(&argv(&[
                "--format",
                "--poll-ms",
                "500",
                "--io-deadline-ms",
                "200",
                "--lease-ms",
                "2000",
                "--watchdog-ms",
                "4000"
            ])),
            Exit::Ok
        );
        let paths: Vec<PathBuf> = disks.iter().map(PathBuf::from).collect();
        let header = admin::majority_header(&paths, None).unwrap();
        assert_eq!(header.slots, 2);
        assert_eq!(header.timeouts.lease_ms, 2000);
        let n2 = out.join("n2.toml");
        let mode = std::fs::metadata(&n2).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let c = Config::parse_with(&n2, &std::fs::read_to_string(&n2).unwrap(), &|d, c| {
            fenced::config::header_timeouts(d, c)
        })
        .unwrap();
        assert_eq!((c.me.id, c.cluster), (1, header.cluster));
        assert_eq!(c.timing.lease, std::time::Duration::from_millis(2000));
        // Again without --format: the header is read back; the files exist.
        assert_eq!(run(&argv(&[])), Exit::Refused);
        assert_eq!(run(&argv(&["--force"])), Exit::Ok);
        // --format on formatted disks needs --force.
        assert_eq!(run(&argv(&["--format", "--force"])), Exit::Ok);
        let wrong = "6f0c5a3e-2b1d-4c43-9a55-1d0e6b1c9f10";
        assert_eq!(run(&argv(&["--uuid", wrong, "--force"])), Exit::Failure);
    }
}
