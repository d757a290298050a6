//! Generates the man pages and shell completions that the Debian package ships, from the clap
//! definitions of `fenced` and `sg-pr` (`fenced::args`, `sg_pr::args`) and from the fence
//! agent's option table (`fenced::agent`), so that they cannot drift from `--help`.
//!
//! `fenced-docgen OUT` writes `OUT/man/{fenced.8,fence_fenced.8,sg-pr.8,fenced.toml.5}` and
//! `OUT/completions/{bash,zsh,fish}/...`. `fenced.toml(5)` is the one page written by hand
//! (`fenced/docs/fenced.toml.5`): it is copied, and a test checks it against the example
//! configuration. `tests/package` runs this before `cargo deb`.
#![deny(missing_docs)]

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use clap::Command;
use clap_complete::Shell;
use clap_mangen::roff::{bold, italic, roman, Inline, Roff};
use clap_mangen::Man;

/// The hand-written fenced.toml(5), embedded so the generator works from any directory.
const FENCED_TOML_5: &str = include_str!("../../docs/fenced.toml.5");

/// The binaries with a clap command line: name and command.
pub fn commands() -> Vec<(&'static str, Command)> {
    vec![
        ("fenced", fenced::args::command()),
        ("sg-pr", sg_pr::args::command()),
    ]
}

/// Writes every man page and completion under `out`; returns the files written.
pub fn generate(out: &Path) -> io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let man = out.join("man");
    fs::create_dir_all(&man)?;
    for (name, cmd) in commands() {
        let path = man.join(format!("{name}.8"));
        fs::write(&path, clap_page(cmd, see_also(name))?)?;
        written.push(path);
    }
    let path = man.join("fence_fenced.8");
    fs::write(&path, agent_page())?;
    written.push(path);
    let path = man.join("fenced.toml.5");
    fs::write(&path, FENCED_TOML_5)?;
    written.push(path);

    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let dir = out.join("completions").join(shell.to_string());
        fs::create_dir_all(&dir)?;
        for (name, mut cmd) in commands() {
            // Debian's locations want `NAME` (bash), `_NAME` (zsh), `NAME.fish` (fish).
            let file = match shell {
                Shell::Bash => name.to_string(),
                Shell::Zsh => format!("_{name}"),
                _ => format!("{name}.fish"),
            };
            let path = dir.join(file);
            let mut f = fs::File::create(&path)?;
            clap_complete::generate(shell, &mut cmd, name, &mut f);
            written.push(path);
        }
    }
    Ok(written)
}

fn see_also(name: &str) -> &'static str {
    match name {
        "fenced" => "fence_fenced(8), fenced.toml(5), sg-pr(8), systemctl(1), journalctl(1), and /usr/share/doc/fenced/GUIDE.md (installing, configuring, the timing model, troubleshooting).",
        _ => "fenced(8), sg_persist(8), and /usr/share/doc/fenced/GUIDE.md.",
    }
}

fn manual(man: Man) -> Man {
    man.section("8")
        .manual("System Administration")
        .source(format!("fenced {}", env!("CARGO_PKG_VERSION")))
}

/// One page for a whole command: clap_mangen's title, name, synopsis, description and global
/// options, then COMMANDS with every leaf subcommand's usage, description and options (so
/// `man fenced` answers what `fenced disk format --help` does), then EXIT STATUS from the
/// command's after-help text.
fn clap_page(mut cmd: Command, see_also: &str) -> io::Result<String> {
    cmd.build();
    let man = manual(Man::new(cmd.clone()));
    let mut buf = Vec::new();
    man.render_title(&mut buf)?;
    man.render_name_section(&mut buf)?;
    man.render_synopsis_section(&mut buf)?;
    man.render_description_section(&mut buf)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut buf)?;
    }
    let mut roff = Roff::new();
    roff.control("SH", ["COMMANDS"]);
    let mut leaves = Vec::new();
    collect_leaves(&cmd, &mut leaves);
    for sub in leaves {
        render_subcommand(&mut roff, &sub);
    }
    if let Some(after) = cmd.get_after_help() {
        roff.control("SH", ["EXIT STATUS"]);
        roff.control("nf", []);
        for line in after.to_string().lines() {
            roff.text([roman(line)]);
        }
        roff.control("fi", []);
    }
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(see_also)]);
    let mut page = String::from_utf8(buf).map_err(io::Error::other)?;
    page.push_str(&roff.render());
    Ok(one_preamble(&page))
}

fn collect_leaves(cmd: &Command, out: &mut Vec<Command>) {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        if sub.has_subcommands() {
            collect_leaves(sub, out);
        } else {
            out.push(sub.clone());
        }
    }
}

fn render_subcommand(roff: &mut Roff, sub: &Command) {
    let full_name = sub.get_bin_name().unwrap_or(sub.get_name()).to_string();
    roff.control("SS", [full_name.as_str()]);
    let usage = sub.clone().render_usage().to_string();
    let usage = usage.trim_start_matches("Usage:").trim();
    roff.text([bold(usage)]);
    if let Some(about) = sub.get_long_about().or(sub.get_about()) {
        roff.control("PP", []);
        roff.text([roman(about.to_string())]);
    }
    // Global options are in OPTIONS once, not under every command.
    for arg in sub
        .get_arguments()
        .filter(|a| !a.is_hide_set() && !a.is_global_set())
        .filter(|a| !matches!(a.get_id().as_str(), "help" | "version"))
    {
        roff.control("TP", []);
        roff.text(arg_spelling(arg));
        let mut help = arg
            .get_long_help()
            .or(arg.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        if !defaults.is_empty() && !arg.is_required_set() && arg.get_num_args() != Some(0.into()) {
            let _ = write!(help, " [default: {}]", defaults.join(", "));
        }
        let values: Vec<String> = arg
            .get_possible_values()
            .iter()
            .filter(|v| !v.is_hide_set())
            .map(|v| v.get_name().to_string())
            .collect();
        if !values.is_empty() && arg.get_action().takes_values() {
            let _ = write!(help, " [possible values: {}]", values.join(", "));
        }
        roff.text([roman(help)]);
    }
}

fn arg_spelling(arg: &clap::Arg) -> Vec<Inline> {
    let value = arg
        .get_value_names()
        .and_then(|v| v.first())
        .map(|v| v.to_string())
        .unwrap_or_else(|| arg.get_id().as_str().to_uppercase());
    let mut out = Vec::new();
    if arg.is_positional() {
        let mut v = value;
        if arg.get_num_args().is_some_and(|n| n.max_values() > 1) {
            v.push_str("...");
        }
        out.push(italic(v));
        return out;
    }
    if let Some(s) = arg.get_short() {
        out.push(bold(format!("-{s}")));
        if arg.get_long().is_some() {
            out.push(roman(", "));
        }
    }
    if let Some(l) = arg.get_long() {
        out.push(bold(format!("--{l}")));
    }
    if arg.get_action().takes_values() {
        out.push(roman(" "));
        out.push(italic(value));
    }
    out
}

/// fence_fenced(8): the fence-agents interface, from the agent's own option table, action list
/// and description (the same ones its metadata and `--help` print).
fn agent_page() -> String {
    use fenced::agent::{self, Action, AGENT_NAME};
    let mut r = Roff::new();
    r.control(
        "TH",
        [
            "FENCE_FENCED",
            "8",
            "",
            &format!("fenced {}", env!("CARGO_PKG_VERSION")),
            "System Administration",
        ],
    );
    r.control("SH", ["NAME"]);
    r.text([roman(format!(
        "{AGENT_NAME} - Pacemaker fence agent for fenced (SCSI-3 persistent reservations, voting disks, watchdog)"
    ))]);
    r.control("SH", ["SYNOPSIS"]);
    r.text([bold(AGENT_NAME), roman(" "), italic("[OPTIONS]")]);
    r.control("br", []);
    r.text([bold(AGENT_NAME), roman(" < "), italic("name=value lines")]);
    r.control("SH", ["DESCRIPTION"]);
    r.text([roman(agent::LONG_DESCRIPTION)]);
    r.control("PP", []);
    r.text([roman(format!(
        "{AGENT_NAME} is the fenced binary invoked under this name (/usr/sbin/{AGENT_NAME} is a symbolic link to /usr/sbin/fenced). It follows the fence-agents API: with no arguments it reads its options from standard input, one name=value per line (as Pacemaker's fencer passes them; blank lines and lines starting with # are skipped, surrounding double quotes removed, the last value of a repeated name wins, - and _ are the same in names); otherwise from getopt-style options on the command line. Unknown names on standard input are ignored with a warning; nodename, which Pacemaker always passes, names the node to act on only when neither plug nor port is given."
    ))]);
    r.control("SH", ["ACTIONS"]);
    r.text([roman(
        "Given as action=NAME on standard input or -o NAME on the command line.",
    )]);
    for a in Action::ALL {
        r.control("TP", []);
        r.text([bold(a.name())]);
        r.text([roman(a.summary())]);
    }
    r.control("SH", ["OPTIONS"]);
    r.text([roman(
        "Each option is given as NAME=VALUE on standard input, or with the getopt spelling on the command line.",
    )]);
    for o in agent::option_docs() {
        r.control("TP", []);
        r.text([
            bold(o.name),
            roman("  ("),
            bold(o.getopt.clone()),
            roman(")"),
        ]);
        let mut text = o.description.trim_end_matches('.').to_string();
        text.push('.');
        if o.required && o.default.is_none() {
            text.push_str(" Needed by on, off, reboot and status.");
        }
        if o.deprecated {
            text.push_str(" Deprecated.");
        }
        if let Some(d) = o.default {
            let _ = write!(text, " [default: {d}]");
        }
        r.text([roman(text)]);
    }
    r.control("PP", []);
    r.text([roman(format!(
        "Standard fence-agents options without meaning for storage fencing are accepted with a warning and ignored: {}.",
        agent::ignored_standard_options().join(", ")
    ))]);
    r.control("SH", ["EXIT STATUS"]);
    for (code, text) in [
        ("0", "Success. For status: the node is not fenced (\"ON\")."),
        ("1", "Failure, or a bad option (the message says which). For status: the node's state could not be read."),
        ("2", "status only: the node is fenced (\"OFF\")."),
    ] {
        r.control("TP", []);
        r.text([bold(code)]);
        r.text([roman(text)]);
    }
    r.control("SH", ["EXAMPLES"]);
    r.control("nf", []);
    for line in [
        "printf 'action=status\\nplug=node2\\n' | fence_fenced; echo $?",
        "fence_fenced -o off -n node2",
        "fence_fenced -o metadata",
        "pcs stonith create fenced-fence fence_fenced pcmk_reboot_action=off \\",
        "    pcmk_off_timeout=40s op monitor interval=60s",
    ] {
        r.text([roman(line)]);
    }
    r.control("fi", []);
    r.control("SH", ["FILES"]);
    r.text([roman(format!(
        "{} (the fenced configuration; config= names another).",
        fenced::config::DEFAULT_PATH
    ))]);
    r.control("SH", ["SEE ALSO"]);
    r.text([roman(
        "fenced(8), fenced.toml(5), stonith_admin(8), and /usr/share/doc/fenced/pacemaker.md.",
    )]);
    r.render()
}

/// Every `Roff` render starts with the same preamble (a string for typewriter apostrophes) and
/// clap_mangen renders each section separately: keep the first.
fn one_preamble(page: &str) -> String {
    let preamble = Roff::new().render();
    format!("{preamble}{}", page.replace(&preamble, ""))
}
