//! Help pages a person reads: walks `routectl --help` and `routed --help` recursively (every
//! subcommand) and fails on any option or argument without a description, and on a command
//! whose own options come after the global ones. Needs nothing but the built binaries.

use std::process::Command;

/// The help text of `bin path... --help`.
fn help(bin: &str, path: &[String]) -> String {
    let out = Command::new(bin)
        .args(path)
        .arg("--help")
        .env_remove("ROUTED_DATASTORE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{bin} {path:?} --help failed: {out:?}"
    );
    String::from_utf8(out.stdout).unwrap()
}

/// One option/argument line of a help page that has no description: `command: line`.
type Undescribed = String;

/// Sections of a help page: (heading, lines).
fn sections(text: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for line in text.lines() {
        if !line.starts_with(' ') && line.ends_with(':') {
            out.push((line.trim_end_matches(':').to_string(), Vec::new()));
        } else if let Some((_, lines)) = out.last_mut() {
            lines.push(line.to_string());
        }
    }
    out
}

/// Entries of a section: a line indented 2 to 6 spaces starting with `-`, `<` or `[` starts
/// one (clap indents long-only options by 6); an entry is
/// described when its first line has text after the name column, or the next line is a
/// deeper-indented description.
fn undescribed(command: &str, lines: &[String]) -> Vec<Undescribed> {
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let indent = line.len() - line.trim_start().len();
        let entry = line.trim();
        let starts_entry = entry.starts_with(['-', '<', '[']);
        if !(2..=6).contains(&indent) || !starts_entry {
            continue;
        }
        let described_inline = entry.trim_end().contains("  ");
        let described_below = lines
            .get(i + 1)
            .is_some_and(|next| next.starts_with("          ") && !next.trim().is_empty());
        if !described_inline && !described_below {
            out.push(format!("{command}: {}", line.trim()));
        }
    }
    out
}

/// Subcommand names listed under `Commands:` (without clap's own `help`).
fn subcommands(text: &str) -> Vec<String> {
    sections(text)
        .into_iter()
        .filter(|(h, _)| h == "Commands")
        .flat_map(|(_, lines)| lines)
        .filter_map(|l| {
            let entry = l.strip_prefix("  ")?;
            if entry.starts_with(' ') {
                return None;
            }
            entry.split_whitespace().next().map(str::to_string)
        })
        .filter(|name| name != "help")
        .collect()
}

/// Walks `bin` and every subcommand below it; returns the problems found.
fn walk(bin: &str, name: &str) -> (usize, Vec<Undescribed>, Vec<String>) {
    let mut todo: Vec<Vec<String>> = vec![vec![]];
    let mut pages = 0;
    let mut problems = Vec::new();
    let mut misordered = Vec::new();
    while let Some(path) = todo.pop() {
        let text = help(bin, &path);
        pages += 1;
        let command = format!("{name} {}", path.join(" "));
        let secs = sections(&text);
        for (heading, lines) in &secs {
            if heading != "Commands" && !heading.starts_with("Usage") {
                problems.extend(undescribed(&command, lines));
            }
        }
        let position = |h: &str| secs.iter().position(|(s, _)| s == h);
        if let (Some(global), Some(own)) = (position("Global options"), position("Options")) {
            let own_has_more_than_help = secs[own].1.iter().any(|l| {
                let t = l.trim_start();
                t.starts_with('-') && !t.starts_with("-h, --help") && !t.starts_with("-V")
            });
            if own_has_more_than_help && own > global {
                misordered.push(command.clone());
            }
        }
        for sub in subcommands(&text) {
            let mut next = path.clone();
            next.push(sub);
            todo.push(next);
        }
    }
    (pages, problems, misordered)
}

#[test]
fn every_routectl_option_and_argument_has_a_description() {
    let (pages, problems, misordered) = walk(env!("CARGO_BIN_EXE_routectl"), "routectl");
    assert!(pages > 20, "walked only {pages} help pages");
    assert!(
        problems.is_empty(),
        "options without a description: {problems:#?}"
    );
    assert!(
        misordered.is_empty(),
        "global options before the command's own: {misordered:?}"
    );
}

#[test]
fn every_routed_option_and_argument_has_a_description() {
    let (pages, problems, _) = walk(env!("CARGO_BIN_EXE_routed"), "routed");
    assert!(pages >= 2, "walked only {pages} help pages");
    assert!(
        problems.is_empty(),
        "options without a description: {problems:#?}"
    );
}

#[test]
fn completion_scripts_are_printed_for_bash_zsh_and_fish() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef routectl"),
        ("fish", "complete -c routectl"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_routectl"))
            .args(["completion", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}: {out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains(marker), "{shell} script lacks {marker:?}");
        assert!(
            text.contains("apply"),
            "{shell} script does not complete `apply`"
        );
    }
}

#[test]
fn the_walker_finds_an_option_without_a_description() {
    let page = "Do it\n\nUsage: x [OPTIONS]\n\nOptions:\n      --described <V>\n          Says what\n\n      --bare <V>\n\n  -q, --quiet  Short form described\n  -h, --help\n          Print help\n";
    let found: Vec<Undescribed> = sections(page)
        .iter()
        .flat_map(|(_, lines)| undescribed("x", lines))
        .collect();
    assert_eq!(found, ["x: --bare <V>"]);
}
