//! Corosync 3 and Pacemaker 2.1 (Debian 12's packages, the host's, which the guests see) on a
//! fenced cluster of systemd guests ([`crate::cluster::ClusterSpec::systemd`] with
//! [`crate::cluster::ClusterSpec::lan`]), set up with the configuration and the commands that
//! `fenced/docs/pacemaker.md` gives an operator: the blocks marked `<!-- lab: NAME -->` there are
//! what the guests run, so the document is tested.

use crate::cluster::Cluster;
use crate::systemd::install_fenced_unit;
use kmod_testing::{repo_root, Error, Guest, Result};
use std::time::{Duration, Instant};

/// The operator's document the set-up comes from.
pub const DOC: &str = "fenced/docs/pacemaker.md";

/// The body of the fenced code block that follows `<!-- lab: NAME -->` in [`DOC`].
pub fn doc_block(name: &str) -> Result<String> {
    let path = repo_root().join(DOC);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::Setup(format!("reading {}: {e}", path.display())))?;
    let marker = format!("<!-- lab: {name} -->");
    let after = text
        .split_once(&marker)
        .map(|(_, a)| a)
        .ok_or_else(|| Error::Setup(format!("{DOC} has no {marker}")))?;
    let body = after
        .trim_start()
        .strip_prefix("```")
        .and_then(|b| b.split_once('\n'))
        .map(|(_, b)| b)
        .and_then(|b| b.split_once("\n```"))
        .map(|(b, _)| b)
        .ok_or_else(|| Error::Setup(format!("{DOC}: no code block right after {marker}")))?;
    Ok(format!("{body}\n"))
}

/// Makes every node ready to start Pacemaker as the document says: the corosync.conf of
/// [`DOC`] (for a cluster of two, [`two_node_conf`]), one authkey for all, the shipped fenced
/// unit and Debian's corosync and pacemaker units in /etc/systemd/system (a systemd guest starts
/// with none), and `fence_fenced` linked where Pacemaker looks for fence agents.
pub fn install(c: &Cluster) -> Result<()> {
    let conf = match c.nodes.len() {
        3 => doc_block("corosync.conf")?,
        2 => two_node_conf()?,
        n => {
            return Err(Error::Setup(format!(
                "{DOC} describes 2 or 3 nodes, not {n}"
            )))
        }
    };
    let dir = c.lab.dir();
    let mut key = [0u8; 256];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut key))
        .and_then(|()| std::fs::write(dir.join("corosync.conf"), conf))
        .and_then(|()| std::fs::write(dir.join("authkey"), key))
        .map_err(|e| Error::Setup(format!("writing the corosync files: {e}")))?;
    for i in 0..c.nodes.len() {
        install_node(c, i)?;
    }
    Ok(())
}

/// [`install`] on node `i` alone, with the files [`install`] wrote (after [`Cluster::reboot`]:
/// a guest's root starts afresh at each boot).
pub fn install_node(c: &Cluster, i: usize) -> Result<()> {
    let g = &c.nodes[i];
    install_fenced_unit(g)?;
    g.run_ok(&format!(
        "install -m 0644 {dir}/corosync.conf /etc/corosync/corosync.conf\n\
         install -m 0400 {dir}/authkey /etc/corosync/authkey\n\
         install -m 0644 /lib/systemd/system/corosync.service /lib/systemd/system/pacemaker.service /etc/systemd/system/\n\
         ln -sf fenced /usr/sbin/fence_fenced\n\
         systemctl daemon-reload",
        dir = c.lab.dir().display()
    ))?;
    Ok(())
}

/// The document's corosync.conf made a two-node cluster as the document says: node3's entry
/// gone and `two_node: 1` in the quorum section.
pub fn two_node_conf() -> Result<String> {
    let conf = doc_block("corosync.conf")?;
    let node3 = conf
        .find("    node {\n        name: node3")
        .and_then(|at| conf[at..].find("    }\n").map(|len| (at, at + len + 6)))
        .ok_or_else(|| Error::Setup(format!("{DOC}: no node3 entry in the corosync.conf")))?;
    let without = format!("{}{}", &conf[..node3.0], &conf[node3.1..]);
    let quorum = "    provider: corosync_votequorum\n";
    if !without.contains(quorum) {
        return Err(Error::Setup(format!(
            "{DOC}: no votequorum in the corosync.conf"
        )));
    }
    Ok(without.replace(quorum, &format!("{quorum}    two_node: 1\n")))
}

/// Runs the document's `start` block on each of `nodes` (at once) and returns each one's output.
pub fn start(c: &Cluster, nodes: &[usize]) -> Result<Vec<kmod_testing::Output>> {
    let script = doc_block("start")?;
    let pending: Vec<_> = nodes
        .iter()
        .map(|&i| c.nodes[i].spawn(&script))
        .collect::<Result<_>>()?;
    nodes
        .iter()
        .zip(pending)
        .map(|(&i, p)| c.nodes[i].wait(p, Duration::from_secs(240)))
        .collect()
}

/// `crm_mon` once, as XML.
pub fn crm_mon(g: &Guest) -> Result<String> {
    g.run_ok("crm_mon -1 --output-as=xml")
}

/// The value of attribute `name` in the attributes of an XML start tag (what follows its name).
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("{name}=\"");
    let start = tag
        .match_indices(&key)
        .find(|(i, _)| *i == 0 || tag[..*i].ends_with(char::is_whitespace))?
        .0
        + key.len();
    let len = tag[start..].find('"')?;
    Some(&tag[start..start + len])
}

/// The start tags `<NAME ...>` in `xml`.
fn tags<'a>(xml: &'a str, name: &str) -> Vec<&'a str> {
    xml.split(format!("<{name} ").as_str())
        .skip(1)
        .filter_map(|t| t.split_once('>').map(|(t, _)| t))
        .collect()
}

/// The nodes `crm_mon` shows online and joined (not pending, expected up by the DC), by name.
pub fn online(xml: &str) -> Vec<String> {
    tags(xml, "node")
        .into_iter()
        .filter(|t| {
            attr(t, "online") == Some("true")
                && attr(t, "pending") != Some("true")
                && attr(t, "expected_up") == Some("true")
        })
        .filter_map(|t| attr(t, "name").map(String::from))
        .collect()
}

/// Every resource `crm_mon` shows: (id, role, the node it is active on).
pub fn resources(xml: &str) -> Vec<(String, String, Option<String>)> {
    xml.split("<resource ")
        .skip(1)
        .filter_map(|r| {
            let (tag, rest) = r.split_once('>')?;
            let node = rest
                .split("</resource>")
                .next()
                .and_then(|inner| tags(inner, "node").first().copied())
                .and_then(|n| attr(n, "name"))
                .map(String::from);
            Some((attr(tag, "id")?.into(), attr(tag, "role")?.into(), node))
        })
        .collect()
}

/// Runs `crm_mon` on node `from` every second until `done` accepts its XML, for up to
/// `timeout`; on time-out, the error shows `what` and the last XML read.
fn poll_crm_mon<T>(
    c: &Cluster,
    from: usize,
    timeout: Duration,
    what: &str,
    done: impl Fn(&str) -> Option<T>,
) -> Result<T> {
    let end = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < end {
        if let Ok(xml) = crm_mon(&c.nodes[from]) {
            if let Some(v) = done(&xml) {
                return Ok(v);
            }
            last = xml;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    Err(Error::Setup(format!(
        "{}: crm_mon did not show {what} within {timeout:?}:\n{last}",
        c.nodes[from].name()
    )))
}

/// Waits until `crm_mon` on node `from` shows exactly `names` online, with a DC elected.
pub fn wait_online(c: &Cluster, from: usize, names: &[&str], timeout: Duration) -> Result<String> {
    poll_crm_mon(c, from, timeout, &format!("{names:?} online"), |xml| {
        let mut on = online(xml);
        on.sort();
        (on == names && xml.contains("<current_dc present=\"true\"")).then(|| xml.to_string())
    })
}

/// Waits until `crm_mon` on node `from` shows `count` resources, every one Started (on some
/// node); returns them.
pub fn wait_started(
    c: &Cluster,
    from: usize,
    count: usize,
    timeout: Duration,
) -> Result<Vec<(String, String, Option<String>)>> {
    poll_crm_mon(
        c,
        from,
        timeout,
        &format!("all {count} resources started"),
        |xml| {
            let rs = resources(xml);
            (rs.len() == count
                && rs
                    .iter()
                    .all(|(_, role, n)| role == "Started" && n.is_some()))
            .then_some(rs)
        },
    )
}

/// Pacemaker's fence history of `victim` (`stonith_admin --history --verbose`: without
/// `--verbose` it shows one event per node): (action, status) of each
/// event, e.g. ("off", "success"); unfencing shows as "on".
pub fn fence_history(g: &Guest, victim: &str) -> Result<Vec<(String, String)>> {
    let xml = g.run_ok(&format!(
        "stonith_admin --history {victim} --verbose --output-as=xml"
    ))?;
    Ok(history_events(&xml))
}

fn history_events(xml: &str) -> Vec<(String, String)> {
    tags(xml, "fence_event")
        .into_iter()
        .filter_map(|t| Some((attr(t, "action")?.into(), attr(t, "status")?.into())))
        .collect()
}

/// How many of `history` are successful fences (any action but unfencing's `on`).
pub fn fences_done(history: &[(String, String)]) -> usize {
    history
        .iter()
        .filter(|(a, s)| a != "on" && s == "success")
        .count()
}

/// How many of `history` are successful unfencings (`on`).
pub fn unfencings_done(history: &[(String, String)]) -> usize {
    history
        .iter()
        .filter(|(a, s)| a == "on" && s == "success")
        .count()
}

/// Waits until node `g`'s fencer records at least `count` successful fences of `victim`
/// (unfencing not counted).
pub fn wait_fences_recorded(
    g: &Guest,
    victim: &str,
    count: usize,
    timeout: Duration,
) -> Result<()> {
    let end = Instant::now() + timeout;
    loop {
        let history = fence_history(g, victim)?;
        if fences_done(&history) >= count {
            return Ok(());
        }
        if Instant::now() >= end {
            let why = g
                .run("stonith_admin --history '*' --verbose; stonith_admin --history '*' --output-as=xml; journalctl --no-pager -q -o short-monotonic -t pacemaker-fenced -t fence_fenced -t pacemaker-controld | tail -80")
                .map(|o| format!("{}{}", o.stdout, o.stderr))
                .unwrap_or_default();
            return Err(Error::Setup(format!(
                "{}: {count} fence(s) of {victim} not recorded within {timeout:?}: {history:?}\n{why}",
                g.name()
            )));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fence_history_counts_fences_not_unfencing() {
        let xml = r#"<pacemaker-result api-version="2.30" request="stonith_admin --history node2 --output-as=xml">
  <fence_history status="0">
    <fence_event action="on" target="node2" client="pacemaker-controld.1" origin="node1" status="success" completed="2026-12-02 15:00:01Z"/>
    <fence_event action="off" target="node2" client="pacemaker-controld.1" origin="node1" status="failed" exit-reason="x"/>
    <fence_event action="reboot" target="node2" client="pacemaker-controld.1" origin="node1" status="success" delegate="node3"/>
  </fence_history>
  <status code="0" message="OK"/>
</pacemaker-result>"#;
        let h = history_events(xml);
        assert_eq!(h.len(), 3, "{h:?}");
        assert_eq!(h[0], ("on".to_string(), "success".to_string()));
        assert_eq!(fences_done(&h), 1);
    }

    #[test]
    fn the_documents_blocks_are_found() {
        let conf = doc_block("corosync.conf").unwrap();
        assert!(conf.starts_with("# /etc/corosync/corosync.conf"), "{conf}");
        assert!(conf.contains("ring0_addr: 192.168.100.13"), "{conf}");
        assert!(doc_block("start")
            .unwrap()
            .contains("systemctl start pacemaker"));
        assert!(doc_block("stonith")
            .unwrap()
            .contains("pcs stonith create fenced-fence fence_fenced"));
        assert!(doc_block("nothing").is_err());
    }

    #[test]
    fn the_two_node_configuration_drops_node3_and_sets_two_node() {
        let conf = two_node_conf().unwrap();
        assert!(
            !conf.contains("node3") && !conf.contains("192.168.100.13"),
            "{conf}"
        );
        assert!(
            conf.contains("name: node2") && conf.contains("two_node: 1"),
            "{conf}"
        );
        assert_eq!(
            conf.matches('{').count(),
            conf.matches('}').count(),
            "{conf}"
        );
        assert!(conf.contains("    }\n}\nquorum {"), "{conf}");
    }

    #[test]
    fn crm_mon_xml_is_read_for_nodes_and_resources() {
        let xml = r#"<pacemaker-result api-version="2.30" request="crm_mon -1 --output-as=xml">
  <summary><current_dc present="true" version="2.1.5" name="node1" id="1"/></summary>
  <nodes>
    <node name="node1" id="1" online="true" standby="false" pending="false" expected_up="true" resources_running="1" type="member"/>
    <node name="node2" id="2" online="false" standby="false" pending="false" expected_up="false" resources_running="0" type="member"/>
    <node name="node3" id="3" online="true" standby="false" pending="true" expected_up="false" resources_running="0" type="member"/>
  </nodes>
  <resources>
    <resource id="fenced-fence" resource_agent="stonith:fence_fenced" role="Started" active="true" nodes_running_on="1">
      <node name="node1" id="1" cached="true"/>
    </resource>
    <resource id="dummy1" resource_agent="ocf:pacemaker:Dummy" role="Stopped" active="false" nodes_running_on="0"/>
  </resources>
</pacemaker-result>"#;
        assert_eq!(online(xml), vec!["node1"]);
        assert_eq!(
            resources(xml),
            vec![
                (
                    "fenced-fence".into(),
                    "Started".into(),
                    Some("node1".into())
                ),
                ("dummy1".into(), "Stopped".into(), None),
            ]
        );
    }
}
