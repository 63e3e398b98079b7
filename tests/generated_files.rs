//! The files derived from the clap definition (`rdaemon::__cli::Cli`) are
//! committed, and this test keeps them honest:
//!
//! - `man/rdaemon.1`: NAME, SYNOPSIS, the first part of DESCRIPTION and all
//!   of OPTIONS come from `src/cli.rs` through clap_mangen; everything else
//!   is hand-written roff in `man/sections/*.roff`, spliced in here;
//! - `packaging/completions/`: bash, zsh and fish completions from
//!   clap_complete.
//!
//! Each test regenerates a file in memory and fails when the committed copy
//! differs. After changing `src/cli.rs` or `man/sections/`, refresh them:
//!
//! ```text
//! RDAEMON_BLESS=1 cargo test --test generated_files
//! ```
//!
//! A new option therefore reaches the man page and the completions without
//! anyone touching the hand-written sections, which must never repeat an
//! option's own help text (they may refer to options by name; a reference to
//! an option that does not exist fails [`hand_written_sections_name_real_options`]).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use clap::CommandFactory;
use clap_complete::Shell;
use rdaemon::__cli::Cli;

/// How to refresh the generated files; printed with every mismatch.
const REFRESH: &str = "RDAEMON_BLESS=1 cargo test --test generated_files";

/// The hand-written sections after OPTIONS, in order: heading, file in
/// `man/sections/`.
const TRAILING_SECTIONS: [(&str, &str); 6] = [
    ("FLEET-WIDE SLOTS", "etcd.roff"),
    ("EXIT STATUS", "exit-status.roff"),
    ("ENVIRONMENT", "environment.roff"),
    ("FILES", "files.roff"),
    ("EXAMPLES", "examples.roff"),
    ("SEE ALSO", "see-also.roff"),
];

/// Appended to the DESCRIPTION that clap_mangen renders from the long about.
const DESCRIPTION_FILE: &str = "description.roff";

/// The heading of options that have no `help_heading` in `src/cli.rs`.
const GENERAL_HEADING: &str = "General";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read_section(file: &str) -> String {
    let path = root().join("man/sections").join(file);
    let text =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with(".SH") || l.starts_with(".TH")),
        "{}: .SH and .TH are added by tests/generated_files.rs; use .SS inside a section",
        path.display()
    );
    text
}

/// A rendered man page split at its `.SH` lines: the part before the first
/// one (preamble, `.TH`), then each section's heading and body.
fn split_sections(roff: &str) -> (String, Vec<(String, String)>) {
    let mut head = String::new();
    let mut sections: Vec<(String, String)> = Vec::new();
    for line in roff.lines() {
        if let Some(heading) = line.strip_prefix(".SH ") {
            sections.push((heading.trim_matches('"').to_string(), String::new()));
        } else {
            let body = match sections.last_mut() {
                Some((_, body)) => body,
                None => &mut head,
            };
            body.push_str(line);
            body.push('\n');
        }
    }
    (head, sections)
}

/// Renders man/rdaemon.1 from the clap definition and the hand-written
/// sections.
fn man_page() -> String {
    let cmd = Cli::command();
    let version = cmd.get_version().unwrap_or_default().to_string();
    // Option groups in the order they are declared in src/cli.rs.
    let mut headings: Vec<String> = Vec::new();
    for arg in cmd.get_arguments() {
        if let Some(h) = arg.get_help_heading()
            && !headings.iter().any(|x| x == h)
        {
            headings.push(h.to_string());
        }
    }
    let man = clap_mangen::Man::new(cmd)
        .title("RDAEMON")
        .section("1")
        .date(release_date())
        .source(format!("rdaemon {version}"))
        .manual("User Commands");
    let mut rendered = Vec::new();
    man.render(&mut rendered).expect("render the man page");
    let rendered = String::from_utf8(rendered).expect("the man page is UTF-8");
    let (head, sections) = split_sections(&rendered);

    let mut name = None;
    let mut synopsis = None;
    let mut description = None;
    let mut general = None;
    let mut grouped: Vec<(String, String)> = Vec::new();
    for (heading, body) in sections {
        match heading.as_str() {
            "NAME" => name = Some(body),
            "SYNOPSIS" => synopsis = Some(body),
            "DESCRIPTION" => description = Some(body),
            "OPTIONS" => general = Some(body),
            // The after_help summary of exit statuses, the version and the
            // authors are covered by EXIT STATUS and the .TH line.
            "EXTRA" | "VERSION" | "AUTHORS" => {}
            other => match headings.iter().find(|h| h.to_uppercase() == other) {
                Some(h) => grouped.push((h.clone(), body)),
                None => panic!(
                    "clap_mangen rendered an unexpected section {other:?}; \
                     teach tests/generated_files.rs where it belongs"
                ),
            },
        }
    }

    let mut out = String::new();
    out.push_str(
        ".\\\" Generated by tests/generated_files.rs from src/cli.rs and man/sections/*.roff.\n\
         .\\\" Do not edit; refresh with: RDAEMON_BLESS=1 cargo test --test generated_files\n",
    );
    out.push_str(&head);
    // Never hyphenate (option names must stay whole) and do not stretch
    // lines to the right margin.
    out.push_str(".nh\n.ad l\n");
    let mut section = |heading: &str, body: &str| {
        out.push_str(&format!(".SH {}\n", roff_heading(heading)));
        out.push_str(body);
    };
    section("NAME", &name.expect("a NAME section"));
    section("SYNOPSIS", &synopsis.expect("a SYNOPSIS section"));
    let mut desc = description.expect("a DESCRIPTION section");
    desc.push_str(".PP\n");
    desc.push_str(&read_section(DESCRIPTION_FILE));
    section("DESCRIPTION", &desc);

    // One OPTIONS section: the modes first, then the options without a
    // heading, then the other groups, each as a subsection.
    let mut options = String::new();
    let modes = grouped.iter().position(|(h, _)| h == "Modes");
    let mut ordered: Vec<(String, String)> = Vec::new();
    if let Some(i) = modes {
        ordered.push(grouped.remove(i));
    }
    if let Some(body) = general {
        ordered.push((GENERAL_HEADING.to_string(), body));
    }
    ordered.extend(grouped);
    for (heading, body) in ordered {
        options.push_str(&format!(".SS {}\n", roff_heading(&heading)));
        options.push_str(&body);
    }
    section("OPTIONS", &options);

    for (heading, file) in TRAILING_SECTIONS {
        section(heading, &read_section(file));
    }
    out
}

/// The date of the latest entry in packaging/debian/changelog, as
/// YYYY-MM-DD: the man page's date changes with a release, not with the day
/// it happens to be generated.
fn release_date() -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let path = root().join("packaging/debian/changelog");
    let text =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    // The trailer line: " -- Name <address>  Sun, 22 Nov 2026 12:00:00 +0000".
    let trailer = text
        .lines()
        .find(|l| l.starts_with(" -- "))
        .unwrap_or_else(|| panic!("{}: no trailer line", path.display()));
    let date = trailer.rsplit_once(">  ").map_or("", |(_, d)| d);
    let fields: Vec<&str> = date.split_whitespace().collect();
    match fields.as_slice() {
        [_, day, month, year, ..] => {
            let m = MONTHS
                .iter()
                .position(|x| x == month)
                .unwrap_or_else(|| panic!("{}: bad month in {trailer:?}", path.display()));
            let d: u32 = day
                .parse()
                .unwrap_or_else(|_| panic!("{}: bad day in {trailer:?}", path.display()));
            format!("{year}-{:02}-{d:02}", m + 1)
        }
        _ => panic!("{}: cannot read the date in {trailer:?}", path.display()),
    }
}

/// Quotes a heading for `.SH`/`.SS` when it has spaces, escaping what roff
/// would otherwise interpret.
fn roff_heading(text: &str) -> String {
    let text = text.replace('\\', "\\\\").replace('-', "\\-");
    if text.contains(' ') || text.contains(',') {
        format!("\"{text}\"")
    } else {
        text
    }
}

/// The completion script for `shell`: clap_complete's, plus what it cannot
/// know (see [`complete_names_and_commands`]).
fn completion(shell: Shell) -> String {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "rdaemon", &mut out);
    let script = String::from_utf8(out).expect("completions are UTF-8");
    complete_names_and_commands(shell, &script)
}

/// The options whose value is a daemon NAME.
const NAME_OPTIONS: [&str; 5] = ["name", "check", "status", "stop", "restart"];

/// Replaces `from` in `script` with `to`, insisting that it is there: a
/// new clap_complete that renders differently must fail here, loudly.
fn splice(script: &str, from: &str, to: &str) -> String {
    assert!(
        script.contains(from),
        "clap_complete's output no longer contains {from:?}; teach tests/generated_files.rs the new form"
    );
    script.replacen(from, to, 1)
}

const BASH_NAMES: &str = r#"# Added by tests/generated_files.rs (clap_complete knows neither): the
# daemon names in the PID directory (rdaemon --list-names) after --check,
# --status, --stop, --restart and --name; commands, then files, after --.
_rdaemon_names() {
    local i dir=()
    for (( i = 1; i < COMP_CWORD; i++ )); do
        # --pid-dir DIR, or --pid-dir=DIR: one word, or three when bash
        # breaks words at '=' (COMP_WORDBREAKS).
        case "${COMP_WORDS[i]}" in
            --pid-dir)
                if [[ "${COMP_WORDS[i+1]}" == = ]]; then
                    dir=(--pid-dir "${COMP_WORDS[i+2]}")
                else
                    dir=(--pid-dir "${COMP_WORDS[i+1]}")
                fi
                ;;
            --pid-dir=*) dir=(--pid-dir "${COMP_WORDS[i]#--pid-dir=}") ;;
        esac
    done
    "${COMP_WORDS[0]}" --list-names "${dir[@]}" 2>/dev/null
}

_rdaemon() {
    local cur="${COMP_WORDS[COMP_CWORD]}" prev="" i
    (( COMP_CWORD > 0 )) && prev="${COMP_WORDS[COMP_CWORD-1]}"
    for (( i = 1; i < COMP_CWORD; i++ )); do
        if [[ "${COMP_WORDS[i]}" == -- ]]; then
            if (( i + 1 == COMP_CWORD )); then
                COMPREPLY=( $(compgen -c -- "${cur}") )
            else
                COMPREPLY=( $(compgen -f -- "${cur}") )
            fi
            return 0
        fi
    done
    case "${prev}" in
        --name|--check|--status|--stop|--restart)
            if [[ "${cur}" != -* ]]; then
                COMPREPLY=( $(compgen -W "$(_rdaemon_names)" -- "${cur}") )
                return 0
            fi
            ;;
    esac
    _rdaemon_options "$@"
}

"#;

const ZSH_NAMES: &str = r#"# Added by tests/generated_files.rs: the daemon names in the PID directory.
(( $+functions[_rdaemon_names] )) ||
_rdaemon_names() {
    local -a names dir
    local i=${words[(I)--pid-dir]} j=${words[(I)--pid-dir=*]}
    (( i > 0 )) && dir=(--pid-dir "${words[i+1]}")
    (( j > i )) && dir=(--pid-dir "${words[j]#--pid-dir=}")
    names=(${(f)"$(_call_program names ${words[1]} --list-names "${dir[@]}" 2>/dev/null)"})
    _describe -t names 'daemon name' names
}

"#;

const FISH_NAMES: &str = r#"# Added by tests/generated_files.rs: the daemon names in the PID directory
# after --check, --status, --stop, --restart and --name; commands after --.
function __rdaemon_names
    set -l tokens (commandline -opc)
    set -l dir
    set -l i (contains -i -- --pid-dir $tokens)
    and set dir --pid-dir $tokens[(math $i + 1)]
    for t in $tokens
        string match -q -- '--pid-dir=*' $t
        and set dir --pid-dir (string replace -- '--pid-dir=' '' $t)
    end
    $tokens[1] --list-names $dir 2>/dev/null
end
function __rdaemon_command_position
    set -l tokens (commandline -opc)
    test "$tokens[-1]" = --
end
complete -c rdaemon -n __rdaemon_command_position -x -a '(__fish_complete_command)'
"#;

/// What clap_complete cannot know: the daemon names that exist (from
/// `rdaemon --list-names`, honouring a `--pid-dir` already typed) as the
/// values of [`NAME_OPTIONS`], and commands rather than rdaemon's options
/// after `--`.
fn complete_names_and_commands(shell: Shell, script: &str) -> String {
    match shell {
        Shell::Bash => {
            let script = splice(script, "_rdaemon() {", "_rdaemon_options() {");
            let anchor = "if [[ \"${BASH_VERSINFO[0]}\" -eq 4";
            splice(&script, anchor, &format!("{BASH_NAMES}{anchor}"))
        }
        Shell::Zsh => {
            let mut script = script.to_string();
            for opt in NAME_OPTIONS {
                let start = script
                    .find(&format!("'--{opt}=["))
                    .unwrap_or_else(|| panic!("no --{opt} in the zsh completion"));
                let end = start + script[start..].find('\n').expect("a line end");
                let line = script[start..end].replace(":NAME:_default'", ":NAME:_rdaemon_names'");
                assert!(line.contains("_rdaemon_names"), "--{opt}: {line}");
                script.replace_range(start..end, &line);
            }
            let anchor = "if [ \"$funcstack[1]\" = \"_rdaemon\" ]; then";
            splice(&script, anchor, &format!("{ZSH_NAMES}{anchor}"))
        }
        Shell::Fish => {
            let mut script = script.to_string();
            for opt in NAME_OPTIONS {
                let start = script
                    .find(&format!("complete -c rdaemon -l {opt} "))
                    .unwrap_or_else(|| panic!("no --{opt} in the fish completion"));
                let end = start + script[start..].find('\n').expect("a line end");
                let line = format!("{} -f -a '(__rdaemon_names)'", &script[start..end]);
                script.replace_range(start..end, &line);
            }
            format!("{FISH_NAMES}{script}")
        }
        _ => script.to_string(),
    }
}

/// Compares `generated` with the committed file `rel` (relative to the
/// crate root), or rewrites the file when `RDAEMON_BLESS=1`.
fn check_or_bless(rel: &str, generated: &str) {
    let path = root().join(rel);
    let committed = fs::read_to_string(&path).ok();
    if committed.as_deref() == Some(generated) {
        return;
    }
    if std::env::var_os("RDAEMON_BLESS").is_some_and(|v| v == "1") {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        }
        fs::write(&path, generated).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        eprintln!("blessed {rel}");
        return;
    }
    let detail = match committed {
        None => "it is missing".to_string(),
        Some(old) => first_difference(&old, generated),
    };
    panic!(
        "{rel} is out of date with src/cli.rs (or man/sections/): {detail}\n\
         Refresh the generated files with:\n\n    {REFRESH}\n\n\
         then review and commit them."
    );
}

/// Describes the first line where `old` and `new` differ.
fn first_difference(old: &str, new: &str) -> String {
    let mut old_lines = old.lines();
    let mut new_lines = new.lines();
    let mut n = 1;
    loop {
        match (old_lines.next(), new_lines.next()) {
            (Some(a), Some(b)) if a == b => n += 1,
            (a, b) => {
                return format!(
                    "first difference at line {n}:\n  committed: {}\n  generated: {}",
                    a.unwrap_or("<end of file>"),
                    b.unwrap_or("<end of file>")
                );
            }
        }
    }
}

#[test]
fn man_page_is_current() {
    check_or_bless("man/rdaemon.1", &man_page());
}

#[test]
fn bash_completion_is_current() {
    check_or_bless(
        "packaging/completions/rdaemon.bash",
        &completion(Shell::Bash),
    );
}

#[test]
fn zsh_completion_is_current() {
    check_or_bless("packaging/completions/_rdaemon", &completion(Shell::Zsh));
}

#[test]
fn fish_completion_is_current() {
    check_or_bless(
        "packaging/completions/rdaemon.fish",
        &completion(Shell::Fish),
    );
}

/// The long options `--help` shows.
fn visible_long_options() -> BTreeSet<String> {
    let mut cmd = Cli::command();
    cmd.build();
    cmd.get_arguments()
        .filter(|a| !a.is_hide_set())
        .filter_map(|a| a.get_long().map(str::to_string))
        .collect()
}

#[test]
fn man_page_documents_every_option() {
    let page = man_page();
    for long in visible_long_options() {
        let roff = format!("\\fB\\-\\-{}\\fR", long.replace('-', "\\-"));
        assert!(page.contains(&roff), "man page lacks --{long}");
    }
    let headings: Vec<&str> = page
        .lines()
        .filter_map(|l| l.strip_prefix(".SH "))
        .map(|h| h.trim_matches('"'))
        .collect();
    assert_eq!(
        headings,
        [
            "NAME",
            "SYNOPSIS",
            "DESCRIPTION",
            "OPTIONS",
            "FLEET\\-WIDE SLOTS",
            "EXIT STATUS",
            "ENVIRONMENT",
            "FILES",
            "EXAMPLES",
            "SEE ALSO"
        ]
    );
}

/// Options of other programs that the hand-written sections mention.
const FOREIGN_OPTIONS: [&str; 1] = ["clean"];

#[test]
fn hand_written_sections_name_real_options() {
    let known = visible_long_options();
    let files = std::iter::once(DESCRIPTION_FILE).chain(TRAILING_SECTIONS.iter().map(|(_, f)| *f));
    for file in files {
        let text = read_section(file);
        for (i, _) in text.match_indices("\\-\\-") {
            let name: String = text[i + 4..]
                .replace("\\-", "-")
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            // A bare `--` ends rdaemon's options.
            assert!(
                name.is_empty()
                    || known.contains(&name)
                    || FOREIGN_OPTIONS.contains(&name.as_str()),
                "man/sections/{file} mentions --{name}, which src/cli.rs does not define"
            );
        }
    }
}

/// `man --warnings` on the generated page prints nothing. Skipped when
/// man(1) is not installed.
#[test]
fn man_page_has_no_warnings() {
    let have_man = Command::new("man")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have_man {
        eprintln!("man(1) not found; skipping the man --warnings check");
        return;
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let page = dir.path().join("rdaemon.1");
    fs::write(&page, man_page()).expect("write the man page");
    for (width, locale) in [("80", "C.UTF-8"), ("120", "C")] {
        let out = man_warnings(&page, width, locale);
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "man --warnings -l (MANWIDTH={width}, LC_ALL={locale}) complained:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn man_warnings(page: &Path, width: &str, locale: &str) -> std::process::Output {
    Command::new("man")
        .args(["--warnings", "-l"])
        .arg(page)
        .env("MANWIDTH", width)
        .env("MANPAGER", "cat")
        .env("PAGER", "cat")
        .env("LC_ALL", locale)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()
        .expect("run man")
}

/// The Debian changelog's latest entry is for this version, so that the
/// package's changelog.Debian.gz never describes an older release.
#[test]
fn debian_changelog_names_this_version() {
    let path = root().join("packaging/debian/changelog");
    let text =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let first = text.lines().next().unwrap_or_default();
    let want = format!("rdaemon ({}-", env!("CARGO_PKG_VERSION"));
    assert!(
        first.starts_with(&want),
        "{}: the latest entry is {first:?}; add an entry for version {} \
         (Debian revision -1) when bumping the version in Cargo.toml",
        path.display(),
        env!("CARGO_PKG_VERSION")
    );
}
