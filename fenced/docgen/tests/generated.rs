//! The generated man pages and completions cover every command, option and configuration key:
//! a subcommand, option or key added without reaching them fails here.

use std::fs;
use std::path::Path;

use clap::Command;

fn generate() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fenced_docgen::generate(dir.path()).unwrap();
    dir
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// How roff source spells `text` (clap_mangen and roff escape every `-`).
fn roff(text: &str) -> String {
    text.replace('-', "\\-")
}

/// Every leaf subcommand's full name (`fenced disk format`) with its long options.
fn leaves(cmd: &Command, out: &mut Vec<(String, Vec<String>)>) {
    for sub in cmd.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        if sub.has_subcommands() {
            leaves(sub, out);
        } else {
            let longs = sub
                .get_arguments()
                .filter(|a| !a.is_global_set())
                .filter_map(|a| a.get_long())
                .filter(|l| *l != "help")
                .map(|l| format!("--{l}"))
                .collect();
            out.push((sub.get_bin_name().unwrap().to_string(), longs));
        }
    }
}

#[test]
fn every_page_and_completion_is_written() {
    let dir = generate();
    for f in [
        "man/fenced.8",
        "man/fence_fenced.8",
        "man/sg-pr.8",
        "man/fenced.toml.5",
        "completions/bash/fenced",
        "completions/bash/sg-pr",
        "completions/zsh/_fenced",
        "completions/zsh/_sg-pr",
        "completions/fish/fenced.fish",
        "completions/fish/sg-pr.fish",
    ] {
        let text = read(&dir.path().join(f));
        assert!(text.len() > 200, "{f} is nearly empty");
    }
}

#[test]
fn man_pages_document_every_subcommand_and_its_options() {
    let dir = generate();
    let mut checked = 0;
    for (name, mut cmd) in fenced_docgen::commands() {
        cmd.build();
        let page = read(&dir.path().join(format!("man/{name}.8")));
        assert!(page.starts_with(".ie"), "{name}.8: one preamble first");
        assert_eq!(
            page.matches(".ie \\n(.g").count(),
            1,
            "{name}.8: one preamble"
        );
        assert!(page.contains(".TH"), "{name}.8 has no title");
        assert!(
            page.contains(".SH \"EXIT STATUS\""),
            "{name}.8 has no EXIT STATUS"
        );
        let mut subs = Vec::new();
        leaves(&cmd, &mut subs);
        assert!(
            subs.len() >= 8,
            "{name}: only {} subcommands found",
            subs.len()
        );
        for (sub, longs) in subs {
            let heading = format!(".SS \"{sub}\"");
            assert!(page.contains(&heading), "{name}.8 lacks {heading}");
            let section = page.split(&heading).nth(1).unwrap();
            let section = section.split(".SS").next().unwrap();
            for long in longs {
                assert!(
                    section.contains(&roff(&long)),
                    "{name}.8: {sub} does not document {long}"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} subcommands checked");
}

#[test]
fn completions_name_every_subcommand() {
    let dir = generate();
    for (name, cmd) in fenced_docgen::commands() {
        for shell in ["bash/", "zsh/_", "fish/"] {
            let file = format!(
                "completions/{shell}{name}{}",
                if shell == "fish/" { ".fish" } else { "" }
            );
            let text = read(&dir.path().join(&file));
            for sub in cmd.get_subcommands() {
                assert!(
                    text.contains(sub.get_name()),
                    "{file} lacks {}",
                    sub.get_name()
                );
            }
        }
    }
}

#[test]
fn agent_page_lists_every_action_option_and_exit_code() {
    let dir = generate();
    let page = read(&dir.path().join("man/fence_fenced.8"));
    for a in fenced::agent::Action::ALL {
        assert!(
            page.contains(&format!(".TP\n\\fB{}\\fR\n", roff(a.name()))),
            "no action {}",
            a.name()
        );
    }
    for o in fenced::agent::option_docs() {
        assert!(page.contains(&roff(o.name)), "no option {}", o.name);
    }
    for code in ["0", "1", "2"] {
        let section = page
            .split(".SH \"EXIT STATUS\"")
            .nth(1)
            .expect("EXIT STATUS");
        assert!(
            section.contains(&format!(".TP\n\\fB{code}\\fR\n")),
            "exit code {code}"
        );
    }
}

/// `key = value`, not prose that happens to contain " = ".
fn is_assignment(line: &str) -> bool {
    line.split_once(" = ").is_some_and(|(k, _)| {
        !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
    })
}

/// The example the package installs as /etc/fenced/fenced.toml.example parses, sets every
/// section, and fenced.toml(5) documents every key it sets.
#[test]
fn config_page_documents_every_key_of_the_example() {
    let example_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/fenced.toml");
    let example = read(&example_path);
    fenced::config::Config::parse(&example_path, &example).expect("the example parses");
    // Commented-out keys are documented too: uncomment them for the key list.
    let uncommented: String = example
        .lines()
        .map(|l| {
            l.trim_start()
                .strip_prefix("# ")
                .filter(|r| r.starts_with('{') || is_assignment(r))
                .unwrap_or(l)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let table: toml::Table = toml::from_str(&uncommented).expect("the uncommented example is TOML");
    let page = read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/fenced.toml.5"));
    let mut keys = 0;
    for (section, value) in &table {
        assert!(
            page.contains(&format!(".SH \"[{section}]\"")),
            "no section [{section}]"
        );
        let body = page.split(&format!(".SH \"[{section}]\"")).nth(1).unwrap();
        let body = body.split("\n.SH ").next().unwrap();
        let mut names: Vec<String> = value.as_table().unwrap().keys().cloned().collect();
        if let Some(nodes) = value.get("nodes").and_then(|n| n.as_array()) {
            for n in nodes {
                names.extend(n.as_table().unwrap().keys().cloned());
            }
        }
        for key in names {
            assert!(
                body.contains(&format!(".B {}\n", roff(&key))),
                "[{section}] {key} undocumented"
            );
            keys += 1;
        }
    }
    assert!(keys >= 20, "only {keys} keys checked");
    for section in [
        "cluster",
        "node",
        "storage",
        "timeouts",
        "watchdog",
        "self_fence",
        "control",
    ] {
        assert!(table.contains_key(section), "the example lacks [{section}]");
    }
}
