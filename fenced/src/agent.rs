//! Pacemaker fence-agent mode: the `fence_fenced` protocol (options, metadata) and the node
//! operations the agent and the CLI share.
//!
//! The fence-agents API (ClusterLabs fence-agents, `doc/FenceAgentAPI.md`): options arrive as
//! `name=value` lines on stdin (Pacemaker's way) or as getopt-style options on the command line;
//! exit 0 on success, 1 on failure; `status` exits 0 for "on", 2 for "off", 1 when the state
//! cannot be read. This module only parses and describes; `fenced`'s `commands/agent.rs` runs
//! the actions.
//!
//! Storage fencing is *fabric* fencing: `off` cuts the node off the LUNs (PREEMPT of its key,
//! a dead marker on the voting disks), `on` lets it back (`fenced clear`; its daemon registers
//! the key again when it starts), and there is no power cycle: `reboot` is accepted and does
//! what `off` does, and is not advertised in the metadata (fence-agents' rule for fabric agents,
//! as `fence_scsi` does; Pacemaker then sends `off` for reboot requests).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use crate::channel::DiskChannel;
use crate::config::{self, Config, Member};
use crate::fence::MarkerChannel;
use crate::luns::{self, Lun};
use crate::ops::discover_luns;

/// The agent's name: the binary behaves as the agent when invoked under it (a symlink).
pub const AGENT_NAME: &str = "fence_fenced";

/// A fence-agent action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Let the node back in (`fenced clear`; on the node itself also `fenced unfence`).
    On,
    /// Fence the node (`fenced fence`).
    Off,
    /// Same as `off`: storage fencing cannot power-cycle a node.
    Reboot,
    /// Exit 0 when the node is not fenced ("ON"), 2 when it is ("OFF").
    Status,
    /// Whether the agent can work here: configuration, voting disks, LUNs.
    Monitor,
    /// One line per cluster member, `name,`.
    List,
    /// The agent's XML description.
    Metadata,
    /// Checks the options and the configuration without touching any device.
    ValidateAll,
}

impl Action {
    /// Parses an action name (case-insensitive, as fence-agents accept them).
    pub fn parse(s: &str) -> Option<Action> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "on" | "enable" => Action::On,
            "off" | "disable" => Action::Off,
            "reboot" => Action::Reboot,
            "status" => Action::Status,
            "monitor" => Action::Monitor,
            "list" => Action::List,
            "metadata" => Action::Metadata,
            "validate-all" => Action::ValidateAll,
            _ => return None,
        })
    }

    /// The name as in the metadata.
    pub fn name(self) -> &'static str {
        match self {
            Action::On => "on",
            Action::Off => "off",
            Action::Reboot => "reboot",
            Action::Status => "status",
            Action::Monitor => "monitor",
            Action::List => "list",
            Action::Metadata => "metadata",
            Action::ValidateAll => "validate-all",
        }
    }

    /// Every action, in the order fence_fenced(8) lists them.
    pub const ALL: [Action; 8] = [
        Action::Off,
        Action::On,
        Action::Reboot,
        Action::Status,
        Action::Monitor,
        Action::List,
        Action::Metadata,
        Action::ValidateAll,
    ];

    /// What the action does, for fence_fenced(8).
    pub fn summary(self) -> &'static str {
        match self {
            Action::On => "Unfence: let the node back in once it has rebooted since its fence (its voting-disk slot shows it; refused otherwise): clear its dead mark (as `fenced clear`), then wait until its fenced daemon has registered its key on every LUN. Pacemaker runs it on a live node when the node joins (provides=unfencing).",
            Action::Off => "Fence the node: preempt its key on every shared LUN (verified with READ KEYS) and mark it dead on a majority of the voting disks (as `fenced fence`). The default action.",
            Action::Reboot => "Same as off: storage fencing cannot power-cycle a node (not advertised in the metadata; Pacemaker sends off instead).",
            Action::Status => "Exit 0 when the node is not fenced (its key is on every LUN and it is not marked dead: \"ON\"), 2 when it is (\"OFF\"), 1 when that cannot be read.",
            Action::Monitor => "Check that the agent can work here: configuration, voting disks, LUNs.",
            Action::List => "Print one line per cluster member, `name,`.",
            Action::Metadata => "Print the agent's XML description (what Pacemaker reads).",
            Action::ValidateAll => "Check the options and the configuration without touching any device.",
        }
    }

    /// Whether the action names a node (`plug`).
    pub fn needs_plug(self) -> bool {
        matches!(
            self,
            Action::On | Action::Off | Action::Reboot | Action::Status
        )
    }
}

/// The value type of a parameter, as the metadata's `content type` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Boolean,
    String,
    Second,
    Integer,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Boolean => "boolean",
            Kind::String => "string",
            Kind::Second => "second",
            Kind::Integer => "integer",
        }
    }
}

/// What the agent does with a parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    Action,
    Plug,
    Config,
    Verbose,
    Quiet,
    DebugFile,
    Delay,
    PowerTimeout,
    Version,
    Help,
    /// Listed (fence-agents callers pass it) but without effect here.
    Accepted,
}

/// One parameter: its stdin name, getopt spellings and metadata.
struct Param {
    name: &'static str,
    short: Option<char>,
    long: &'static str,
    /// The value placeholder in the getopt description; `None` for flags.
    value: Option<&'static str>,
    kind: Kind,
    default: Option<&'static str>,
    required: bool,
    deprecated: bool,
    obsoletes: Option<&'static str>,
    use_: Use,
    desc: &'static str,
}

const fn p(
    name: &'static str,
    short: Option<char>,
    long: &'static str,
    value: Option<&'static str>,
    kind: Kind,
    use_: Use,
    desc: &'static str,
) -> Param {
    Param {
        name,
        short,
        long,
        value,
        kind,
        default: None,
        required: false,
        deprecated: false,
        obsoletes: None,
        use_,
        desc,
    }
}

/// Every parameter, in metadata order. Parsing and the metadata both come from this table.
fn params() -> Vec<Param> {
    vec![
        Param {
            default: Some("off"),
            required: true,
            ..p("action", Some('o'), "action", Some("action"), Kind::String, Use::Action,
                "Fencing action: off (cut the node off the shared LUNs and mark it dead on the voting disks), on (let it back: clear the dead mark; its fenced daemon registers its key when it starts), status, monitor, list, metadata, validate-all. reboot is accepted and does what off does")
        },
        Param {
            required: true,
            obsoletes: Some("port"),
            ..p("plug", Some('n'), "plug", Some("nodename"), Kind::String, Use::Plug,
                "Name (or numeric id) of the node to act on, as in cluster.nodes of the fenced configuration")
        },
        Param {
            required: true,
            deprecated: true,
            ..p("port", Some('n'), "plug", Some("nodename"), Kind::String, Use::Plug,
                "Name (or numeric id) of the node to act on (deprecated name of plug)")
        },
        Param {
            default: Some(config::DEFAULT_PATH),
            ..p("config", Some('c'), "config", Some("file"), Kind::String, Use::Config,
                "The fenced configuration file (owned by root, not group/world-writable)")
        },
        p("verbose", Some('v'), "verbose", None, Kind::Boolean, Use::Verbose,
            "Verbose mode: say on stderr what is done"),
        p("quiet", Some('q'), "quiet", None, Kind::Boolean, Use::Quiet,
            "Print no messages on stderr (the exit code still tells)"),
        Param {
            deprecated: true,
            ..p("debug", Some('D'), "debug-file", Some("debugfile"), Kind::String, Use::DebugFile,
                "Append a log of the action to this file")
        },
        Param {
            obsoletes: Some("debug"),
            ..p("debug_file", Some('D'), "debug-file", Some("debugfile"), Kind::String, Use::DebugFile,
                "Append a log of the action to this file")
        },
        Param {
            default: Some("0"),
            ..p("delay", None, "delay", Some("seconds"), Kind::Second, Use::Delay,
                "Wait X seconds before fencing (off) is started")
        },
        Param {
            default: Some("20"),
            ..p("power_timeout", None, "power-timeout", Some("seconds"), Kind::Second, Use::PowerTimeout,
                "Accepted for compatibility; a fence is bounded by timeouts.fence_deadline of the fenced configuration")
        },
        Param {
            default: Some("0"),
            ..p("power_wait", None, "power-wait", Some("seconds"), Kind::Second, Use::Accepted,
                "Accepted for compatibility; not used (off returns once the fence is verified)")
        },
        Param {
            default: Some("1"),
            ..p("retry_on", None, "retry-on", Some("attempts"), Kind::Integer, Use::Accepted,
                "Accepted for compatibility; not used")
        },
        p("version", Some('V'), "version", None, Kind::Boolean, Use::Version,
            "Display version information and exit"),
        p("help", Some('h'), "help", None, Kind::Boolean, Use::Help, "Display help and exit"),
    ]
}

/// Standard fence-agents option names this agent has no use for: accepted with a warning.
const IGNORED_STANDARD: &[&str] = &[
    "ipaddr",
    "ip",
    "ipport",
    "login",
    "username",
    "passwd",
    "password",
    "passwd_script",
    "password_script",
    "login_timeout",
    "shell_timeout",
    "stonith_status_sleep",
    "disable_timeout",
    "plug_separator",
    "separator",
    "method",
    "verbose_level",
    "logfile",
    "devices",
    "key",
    "aptpl",
    "ssl",
    "ssh",
    "identity_file",
    "cmd_prompt",
    "inet4_only",
    "inet6_only",
    "agent",
    "name",
];

/// Why the options could not be used (the agent exits 1 and prints it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    /// An unknown action.
    #[error("unknown action {0:?}; use on, off, reboot, status, monitor, list, metadata or validate-all")]
    UnknownAction(String),
    /// An action that names a node without one.
    #[error("action {0} needs the node: plug=NAME on stdin, or -n NAME / --plug=NAME")]
    MissingPlug(&'static str),
    /// A bad value.
    #[error("{name}: {message}")]
    BadValue {
        /// The option.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// An unknown command-line option.
    #[error("unknown option {0}; see --help")]
    UnknownOption(String),
}

/// The options of one agent run.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentOptions {
    /// The action (default `off`, as fabric agents do).
    pub action: Action,
    /// The node to act on.
    pub plug: Option<String>,
    /// The fenced configuration file.
    pub config: PathBuf,
    /// Say what is done on stderr.
    pub verbose: bool,
    /// Say nothing on stderr.
    pub quiet: bool,
    /// Append a log to this file.
    pub debug_file: Option<PathBuf>,
    /// Wait before fencing.
    pub delay: Duration,
    /// Pacemaker's bound on power actions (only compared with fence_deadline).
    pub power_timeout: Option<Duration>,
    /// Print the version and exit.
    pub version: bool,
    /// Print the usage and exit.
    pub help: bool,
    /// Options accepted but ignored, and other remarks for stderr.
    pub warnings: Vec<String>,
}

impl Default for AgentOptions {
    fn default() -> Self {
        AgentOptions {
            action: Action::Off,
            plug: None,
            config: PathBuf::from(config::DEFAULT_PATH),
            verbose: false,
            quiet: false,
            debug_file: None,
            delay: Duration::ZERO,
            power_timeout: None,
            version: false,
            help: false,
            warnings: Vec::new(),
        }
    }
}

fn truthy(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "" | "1" | "yes" | "on" | "true" => Some(true),
        "0" | "no" | "off" | "false" => Some(false),
        _ => None,
    }
}

fn seconds(name: &str, v: &str) -> Result<Duration, UsageError> {
    let s: f64 = v.trim().parse().map_err(|_| UsageError::BadValue {
        name: name.into(),
        message: format!("{v:?} is not a number of seconds"),
    })?;
    if !s.is_finite() || !(0.0..=86_400.0).contains(&s) {
        return Err(UsageError::BadValue {
            name: name.into(),
            message: format!("{v:?} is out of range (0..86400 s)"),
        });
    }
    Ok(Duration::from_secs_f64(s))
}

/// `-` and `_` are the same in option names (fence-agents accept both).
fn normalize(name: &str) -> String {
    name.trim().replace('-', "_")
}

impl AgentOptions {
    fn set(&mut self, param: &Param, value: &str) -> Result<(), UsageError> {
        let flag = |v: &str| {
            truthy(v).ok_or_else(|| UsageError::BadValue {
                name: param.name.into(),
                message: format!("{v:?} is not a boolean (1/0, yes/no, on/off, true/false)"),
            })
        };
        match param.use_ {
            Use::Action => {
                self.action = Action::parse(value)
                    .ok_or_else(|| UsageError::UnknownAction(value.trim().to_string()))?
            }
            Use::Plug => {
                let v = value.trim();
                if v.is_empty() {
                    return Err(UsageError::BadValue {
                        name: param.name.into(),
                        message: "empty node name".into(),
                    });
                }
                self.plug = Some(v.to_string());
            }
            Use::Config => self.config = PathBuf::from(value.trim()),
            Use::Verbose => self.verbose = flag(value)?,
            Use::Quiet => self.quiet = flag(value)?,
            Use::DebugFile => self.debug_file = Some(PathBuf::from(value.trim())),
            Use::Delay => self.delay = seconds(param.name, value)?,
            Use::PowerTimeout => self.power_timeout = Some(seconds(param.name, value)?),
            Use::Version => self.version = flag(value)?,
            Use::Help => self.help = flag(value)?,
            Use::Accepted => self.warnings.push(format!(
                "option {} is accepted but has no effect for {AGENT_NAME}",
                param.name
            )),
        }
        Ok(())
    }

    /// Parses stdin text: `name=value` lines, `#` comments and blank lines skipped, surrounding
    /// double quotes removed, the last value of a repeated name wins. Unknown names are ignored
    /// with a warning (the fence-agents rule), `nodename` silently (Pacemaker always passes it;
    /// `plug`/`port` name the node to act on, `nodename` is used only when neither is given).
    pub fn from_stdin(text: &str) -> Result<AgentOptions, UsageError> {
        let table = params();
        let mut o = AgentOptions::default();
        let mut nodename = None;
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, value) = line.split_once('=').unwrap_or((line, ""));
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            let key = normalize(name);
            if key == "nodename" {
                nodename = Some(value.trim().to_string());
                continue;
            }
            if key == "option" {
                // The deprecated name of `action`.
                o.set(&table[0], value)?;
                continue;
            }
            match table.iter().find(|p| p.name == key) {
                Some(param) => o.set(param, value)?,
                None if IGNORED_STANDARD.contains(&key.as_str()) => o.warnings.push(format!(
                    "option {key} is accepted but has no effect for {AGENT_NAME}"
                )),
                None => o
                    .warnings
                    .push(format!("Parse error: ignoring unknown option '{line}'")),
            }
        }
        if o.plug.is_none() {
            o.plug = nodename.filter(|n| !n.is_empty());
        }
        Ok(o)
    }

    /// Parses command-line arguments (without argv\[0\]): `-o off`, `-ooff`, `--action=off`,
    /// `--action off`, flags `-v -q -h -V` (also bundled: `-vq`). Unknown options are errors,
    /// standard ones this agent does not use are accepted with a warning.
    pub fn from_args(args: &[String]) -> Result<AgentOptions, UsageError> {
        let table = params();
        let mut o = AgentOptions::default();
        let mut i = 0;
        while i < args.len() {
            let arg = &args[i];
            i += 1;
            if let Some(long) = arg.strip_prefix("--") {
                let (name, inline) = match long.split_once('=') {
                    Some((n, v)) => (n, Some(v.to_string())),
                    None => (long, None),
                };
                let key = normalize(name);
                let param = table
                    .iter()
                    .find(|p| normalize(p.long) == key || p.name == key);
                match param {
                    Some(param) => {
                        let value = match (param.value, inline) {
                            (Some(_), Some(v)) => v,
                            (Some(_), None) => {
                                let v =
                                    args.get(i).cloned().ok_or_else(|| UsageError::BadValue {
                                        name: param.name.into(),
                                        message: format!("--{name} needs a value"),
                                    })?;
                                i += 1;
                                v
                            }
                            (None, Some(v)) => v,
                            (None, None) => "1".into(),
                        };
                        o.set(param, &value)?;
                    }
                    None if IGNORED_STANDARD.contains(&key.as_str()) => {
                        // Standard options with a value take it inline or as the next word.
                        if inline.is_none() && args.get(i).is_some_and(|a| !a.starts_with('-')) {
                            i += 1;
                        }
                        o.warnings.push(format!(
                            "option --{name} is accepted but has no effect for {AGENT_NAME}"
                        ));
                    }
                    None => return Err(UsageError::UnknownOption(arg.clone())),
                }
            } else if let Some(shorts) = arg.strip_prefix('-').filter(|s| !s.is_empty()) {
                let mut chars = shorts.chars();
                while let Some(c) = chars.next() {
                    let Some(param) = table.iter().find(|p| p.short == Some(c)) else {
                        return Err(UsageError::UnknownOption(format!("-{c}")));
                    };
                    if param.value.is_some() {
                        let rest: String = chars.collect();
                        let value = if rest.is_empty() {
                            let v = args.get(i).cloned().ok_or_else(|| UsageError::BadValue {
                                name: param.name.into(),
                                message: format!("-{c} needs a value"),
                            })?;
                            i += 1;
                            v
                        } else {
                            rest
                        };
                        o.set(param, &value)?;
                        break;
                    }
                    o.set(param, "1")?;
                }
            } else {
                o.warnings
                    .push(format!("unused argument on the command line: {arg}"));
            }
        }
        Ok(o)
    }

    /// Checks that the action has what it needs.
    pub fn check(&self) -> Result<(), UsageError> {
        if self.action.needs_plug() && self.plug.is_none() && !self.help && !self.version {
            return Err(UsageError::MissingPlug(self.action.name()));
        }
        Ok(())
    }
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// What the agent does: the metadata's `longdesc` and the DESCRIPTION of fence_fenced(8).
pub const LONG_DESCRIPTION: &str =
    "fence_fenced fences a node through the fenced daemon of the node it runs on. \
off preempts the node's reservation key on every shared LUN (target-enforced: its writes are \
refused from that moment, verified with READ KEYS) and marks it dead on a majority of the voting \
disks; the fenced node fences itself on its next poll or is reset by its hardware watchdog. \
Every node runs fenced.service, which registers its key on every path of every LUN when it \
starts. This is fabric fencing: there is no power cycle, so reboot is not offered (a reboot \
request is carried out as off), and the fenced node must be rebooted (its watchdog does it). \
on lets a fenced node back: it clears the dead mark on the voting disks (run it on a live node, \
for instance with stonith_admin --unfence); the node's key is registered again when its fenced \
daemon starts, which is when status reports it on again. \
status exits 0 when the node's key is registered on every LUN and it is not marked dead, \
2 otherwise. Pacemaker's stonith-timeout must cover timeouts.fence_deadline of the fenced \
configuration.";

/// One option as fence_fenced(8) documents it, from the same table as parsing and metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionDoc {
    /// The `name=value` name on stdin.
    pub name: &'static str,
    /// The getopt spellings, e.g. `-o, --action=[action]`.
    pub getopt: String,
    /// The default, if any.
    pub default: Option<&'static str>,
    /// Whether the metadata marks it required.
    pub required: bool,
    /// Whether it is a deprecated alias.
    pub deprecated: bool,
    /// What it does.
    pub description: &'static str,
}

/// Every option, in metadata order (the man page's OPTIONS).
pub fn option_docs() -> Vec<OptionDoc> {
    params()
        .into_iter()
        .map(|p| OptionDoc {
            name: p.name,
            getopt: getopt_spelling(&p),
            default: p.default,
            required: p.required,
            deprecated: p.deprecated,
            description: p.desc,
        })
        .collect()
}

fn getopt_spelling(p: &Param) -> String {
    let mut getopt = String::new();
    if let Some(s) = p.short {
        let _ = write!(getopt, "-{s}, ");
    }
    let _ = write!(getopt, "--{}", p.long);
    if let Some(v) = p.value {
        let _ = write!(getopt, "=[{v}]");
    }
    getopt
}

/// Standard fence-agents option names accepted with a warning and otherwise ignored.
pub fn ignored_standard_options() -> &'static [&'static str] {
    IGNORED_STANDARD
}

/// The agent's metadata (fence-agents' `resource-agent` XML, valid against their
/// `metadata.rng`).
pub fn metadata() -> String {
    let mut x = String::new();
    let _ = writeln!(x, "<?xml version=\"1.0\" ?>");
    let _ = writeln!(
        x,
        "<resource-agent name=\"{AGENT_NAME}\" shortdesc=\"Fence agent for fenced: SCSI-3 persistent reservations, voting-disk markers and watchdog self-fencing\" >"
    );
    let _ = writeln!(x, "<longdesc>{}</longdesc>", xml_escape(LONG_DESCRIPTION));
    let _ = writeln!(x, "<vendor-url></vendor-url>");
    let _ = writeln!(x, "<parameters>");
    for p in params() {
        let mut attrs = format!(
            "name=\"{}\" unique=\"0\" required=\"{}\"",
            p.name,
            u8::from(p.required)
        );
        if p.deprecated {
            attrs.push_str(" deprecated=\"1\"");
        }
        if let Some(o) = p.obsoletes {
            let _ = write!(attrs, " obsoletes=\"{o}\"");
        }
        let getopt = getopt_spelling(&p);
        let default = p
            .default
            .map(|d| format!(" default=\"{}\"", xml_escape(d)))
            .unwrap_or_default();
        let _ = writeln!(x, "\t<parameter {attrs}>");
        let _ = writeln!(x, "\t\t<getopt mixed=\"{}\" />", xml_escape(&getopt));
        let _ = writeln!(x, "\t\t<content type=\"{}\"{default} />", p.kind.as_str());
        let _ = writeln!(
            x,
            "\t\t<shortdesc lang=\"en\">{}</shortdesc>",
            xml_escape(p.desc)
        );
        let _ = writeln!(x, "\t</parameter>");
    }
    let _ = writeln!(x, "</parameters>");
    let _ = writeln!(x, "<actions>");
    // `on` is automatic (Pacemaker unfences a node when it joins) and not run on the target:
    // a node the authority marks dead never acts for itself; a live node clears its mark once
    // its slot shows it rebooted, and its own fenced registers its key.
    let _ = writeln!(x, "\t<action name=\"on\" automatic=\"1\"/>");
    for a in [
        Action::Off,
        Action::Status,
        Action::Monitor,
        Action::List,
        Action::Metadata,
        Action::ValidateAll,
    ] {
        let _ = writeln!(x, "\t<action name=\"{}\" />", a.name());
    }
    let _ = writeln!(x, "</actions>");
    let _ = writeln!(x, "</resource-agent>");
    x
}

/// The usage text for `--help`.
pub fn usage() -> String {
    let mut u = format!(
        "Usage:\n\t{AGENT_NAME} [options]\n\t(or name=value lines on stdin when there are no arguments)\nOptions:\n"
    );
    for p in params().iter().filter(|p| !p.deprecated) {
        let getopt = getopt_spelling(p);
        let _ = writeln!(u, "   {getopt:<32} {}", p.desc);
    }
    u
}

/// Whether a node can write to the shared storage, as far as the fencing stack says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PlugState {
    /// The node.
    pub node: String,
    /// The voting-disk authority marks it dead.
    pub marked_dead: bool,
    /// LUNs (ids) on which its key is not registered.
    pub luns_without_key: Vec<String>,
    /// LUNs checked.
    pub luns: usize,
}

impl PlugState {
    /// "ON" (0): not marked dead and registered on every LUN. Otherwise "OFF" (2): it cannot
    /// write everywhere, or the cluster considers it fenced.
    pub fn is_on(&self) -> bool {
        !self.marked_dead && self.luns_without_key.is_empty()
    }
}

/// Reads whether `node` is fenced: the authority on the voting disks (read only; nothing is
/// written) and READ KEYS on every LUN (first answering path).
pub fn plug_state(config: &Config, node: &Member) -> Result<PlugState, String> {
    let mut channel = DiskChannel::open(config).map_err(|e| format!("voting disks: {e}"))?;
    let authority = channel
        .authority()
        .map_err(|e| format!("voting disks: {e}"))?;
    let marked_dead = authority.is_present() && authority.dead.contains(node.id);
    let luns = discover_luns(config)?;
    let mut without = Vec::new();
    for lun in &luns {
        if !key_on_lun(lun, node.key, config.timing.fence_deadline / 2)? {
            without.push(lun.id.clone());
        }
    }
    Ok(PlugState {
        node: node.name.clone(),
        marked_dead,
        luns_without_key: without,
        luns: luns.len(),
    })
}

/// Waits up to `within` until `node` is not marked dead and its key is on every LUN (its
/// daemon registers it once it reads that it is let back in), reading once a second.
pub fn wait_registered(config: &Config, node: &Member, within: Duration) -> Result<(), String> {
    let end = std::time::Instant::now() + within;
    loop {
        let last = match plug_state(config, node) {
            Ok(st) if st.is_on() => return Ok(()),
            Ok(st) if st.marked_dead => format!("{} is marked dead again", node.name),
            Ok(st) => format!(
                "{}'s key is not registered on {} of {} LUN(s) ({}): its fenced does not run, or has not registered yet",
                node.name,
                st.luns_without_key.len(),
                st.luns,
                st.luns_without_key.join(", ")
            ),
            Err(e) => e,
        };
        if std::time::Instant::now() >= end {
            return Err(format!("after {within:?}: {last}"));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Whether `key` is registered on `lun`, read through its first path that answers.
pub fn key_on_lun(
    lun: &Lun,
    key: sg_pr::ReservationKey,
    timeout: Duration,
) -> Result<bool, String> {
    use sg_pr::PersistentReservations;
    let mut last = format!("LUN {} has no paths", lun.id);
    for path in &lun.paths {
        match luns::open_path(path, timeout).and_then(|d| d.keys()) {
            Ok(k) => return Ok(k.value.contains(key)),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

/// What `monitor` found: one line per check, and whether the agent can work.
pub fn monitor(config: &Config) -> Result<Vec<String>, String> {
    let mut lines = Vec::new();
    let mut channel = DiskChannel::open(config).map_err(|e| format!("voting disks: {e}"))?;
    let authority = channel
        .authority()
        .map_err(|e| format!("voting disks: {e}"))?;
    lines.push(format!(
        "voting disks: a majority of {} answer (authority epoch {})",
        config.voting_disks.len(),
        authority.epoch
    ));
    // A path down is routine on a multipath SAN: the device stays usable while every LUN has
    // one path that answers (a routine path loss must not fail the stonith resource).
    let luns = discover_luns(config)?;
    let timeout = config.timing.fence_deadline / 2;
    for lun in &luns {
        let mut answering = 0;
        let mut down = Vec::new();
        for path in &lun.paths {
            let check = luns::open_path(path, timeout).and_then(|dev| {
                use sg_pr::PersistentReservations;
                if let Some(sg) = dev.as_sg() {
                    sg.test_unit_ready()?;
                }
                dev.keys()
            });
            match check {
                Ok(_) => answering += 1,
                Err(e) => down.push(format!("{}: {e}", path.display())),
            }
        }
        if answering == 0 {
            return Err(format!(
                "LUN {}: no path answers: {}",
                lun.id,
                down.join("; ")
            ));
        }
        lines.push(format!(
            "LUN {}: {answering} of {} path(s) answer TEST UNIT READY and READ KEYS{}",
            lun.id,
            lun.paths.len(),
            if down.is_empty() {
                String::new()
            } else {
                format!(" (degraded: {})", down.join("; "))
            }
        ));
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn stdin_lines_follow_the_fence_agents_rules() {
        let o = AgentOptions::from_stdin(
            "# comment\n\naction=OFF\nport=node1\nplug=\"node2\"\nnodename=node3\nipaddr=1.2.3.4\nfrobnicate=1\nverbose=yes\ndelay=2.5\nconfig=/tmp/x.toml\n",
        )
        .unwrap();
        assert_eq!(o.action, Action::Off);
        assert_eq!(
            o.plug.as_deref(),
            Some("node2"),
            "the last of plug/port wins"
        );
        assert!(o.verbose);
        assert_eq!(o.delay, Duration::from_millis(2500));
        assert_eq!(o.config, PathBuf::from("/tmp/x.toml"));
        assert_eq!(o.warnings.len(), 2, "{:?}", o.warnings);
        let o = AgentOptions::from_stdin("option=status\nnodename=node3\n").unwrap();
        assert_eq!(o.action, Action::Status);
        assert_eq!(o.plug.as_deref(), Some("node3"));
        assert_eq!(
            AgentOptions::from_stdin("action=explode\n").unwrap_err(),
            UsageError::UnknownAction("explode".into())
        );
        let o = AgentOptions::from_stdin("action=off\n").unwrap();
        assert_eq!(o.check(), Err(UsageError::MissingPlug("off")));
        let o = AgentOptions::from_stdin("action=list\n").unwrap();
        assert_eq!(o.check(), Ok(()));
    }

    #[test]
    fn command_line_takes_short_long_and_bundled_forms() {
        let o = AgentOptions::from_args(&args("-o status -n node2 -vq")).unwrap();
        assert_eq!(
            (o.action, o.plug.as_deref(), o.verbose, o.quiet),
            (Action::Status, Some("node2"), true, true)
        );
        let o =
            AgentOptions::from_args(&args("--action=reboot --plug node3 -c/etc/f.toml")).unwrap();
        assert_eq!(o.action, Action::Reboot);
        assert_eq!(o.plug.as_deref(), Some("node3"));
        assert_eq!(o.config, PathBuf::from("/etc/f.toml"));
        let o = AgentOptions::from_args(&args("-ooff --port=node1 --power-timeout=30")).unwrap();
        assert_eq!(o.action, Action::Off);
        assert_eq!(o.power_timeout, Some(Duration::from_secs(30)));
        let o = AgentOptions::from_args(&args("--action=list --ipaddr 10.0.0.1")).unwrap();
        assert_eq!(o.warnings.len(), 1);
        assert!(matches!(
            AgentOptions::from_args(&args("--frobnicate")),
            Err(UsageError::UnknownOption(_))
        ));
        assert!(matches!(
            AgentOptions::from_args(&args("-o")),
            Err(UsageError::BadValue { .. })
        ));
    }

    #[test]
    fn metadata_lists_every_parameter_and_no_reboot_action() {
        let m = metadata();
        for p in params() {
            assert!(m.contains(&format!("name=\"{}\"", p.name)), "{}", p.name);
        }
        assert!(!m.contains("action name=\"reboot\""));
        assert!(m.contains("<action name=\"off\" />"));
        assert_eq!(m.matches("<parameter ").count(), params().len());
    }
}
