//! `q`: the front door. `q TOOL ARGS...` runs `q-TOOL ARGS...` the way git
//! runs its subcommands: it execs the sibling binary next to this one, or
//! `q-TOOL` from PATH when there is none. `q help [TOOL]` shows help (a
//! tool's own `--help`), `q completions SHELL [TOOL...]` prints completion
//! scripts generated from every tool's clap definition, `q man` lists the
//! manual pages, `q top` is the live view of the queue (`top.rs`), and `q`
//! alone prints the queue's counts and the commands.
//!
//! Invariants: the front door adds no behaviour of its own to a tool: the
//! arguments after the tool name reach it untouched (only a leading
//! `--queue DIR` becomes `Q_DIR`); it never writes to the queue.

use crate::cli::Common;
use crate::exit;
use anyhow::Result;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use clap_complete::Shell;
use std::ffi::OsString;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

const TOOL: &str = "q";

/// The tools, in the order `q` lists them.
pub const TOOLS: [&str; 9] = ["push", "claim", "run", "supervise", "gc", "ls", "wait", "log", "ctl"];

/// The manual pages beside the tools' own: (name, section, what).
const PAGES: [(&str, u8, &str); 3] = [
    ("q", 1, "the front door: run a tool, help, completions"),
    ("q-queue", 5, "the queue directory: layout, file names, JSON records"),
    ("q", 7, "concepts: jobs, states, leases, pipelines"),
];

/// The clap definition of a tool (`push`, or `q-push`), as its binary sees it.
pub fn tool_command(tool: &str) -> Option<clap::Command> {
    Some(match tool.strip_prefix("q-").unwrap_or(tool) {
        "push" => crate::push::Args::command(),
        "claim" => crate::claim::Args::command(),
        "run" => crate::run::Args::command(),
        "supervise" => crate::supervise::Args::command(),
        "gc" => crate::gc::Args::command(),
        "ls" => crate::ls::Args::command(),
        "wait" => crate::wait::Args::command(),
        "log" => crate::log::Args::command(),
        "ctl" => crate::ctl::Args::command(),
        _ => return None,
    })
}

#[derive(Debug, Parser)]
#[command(
    name = "q",
    version,
    about = "A job queue for the shell, with no daemon: the front door to the q-* tools",
    long_about = "A job queue for the shell, with no daemon: a directory is the queue, and small tools move jobs through it. `q TOOL ARGS...` runs `q-TOOL ARGS...` (the binary next to q, else the one on PATH), so `q push -- make` is `q-push -- make`. Alone, q prints the queue's counts and the commands.",
    after_help = "Examples:\n  q push -- make -C site build          # the same as q-push -- make -C site build\n  q help run                            # q-run --help\n  source <(q completions bash)          # tab completion for q and every q-* tool in this shell",
    disable_help_subcommand = true,
    allow_external_subcommands = true,
    subcommand_value_name = "TOOL",
    override_usage = "q [--queue DIR] [TOOL [ARGS]...]\n       q top | q help [TOOL] | q completions SHELL [TOOL]... | q man",
    subcommand_help_heading = "Commands"
)]
pub struct Args {
    /// The queue directory (passed on to the tool as Q_DIR) [default: $XDG_STATE_HOME/q/default, i.e. ~/.local/state/q/default]
    #[arg(long, env = "Q_DIR", hide_env_values = true, value_name = "DIR")]
    pub queue: Option<std::ffi::OsString>,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Show the help of q, or of a tool (its --help)
    Help {
        /// A tool (push, claim, run, ...) or a command of q
        #[arg(value_name = "TOOL")]
        tool: Option<String>,
    },
    /// Print shell completion scripts for q and every q-* tool (or the named ones)
    Completions {
        /// bash, zsh or fish
        #[arg(value_name = "SHELL", value_parser = ["bash", "zsh", "fish"])]
        shell: String,
        /// Only these tools (push or q-push; q for the front door) [default: all]
        #[arg(value_name = "TOOL")]
        tools: Vec<String>,
    },
    /// List the manual pages and where they are installed
    Man,
    /// The live view of the queue, redrawn in place: counts, what runs where, what ended, throughput and ETA (q quits)
    Top {
        /// The queue (as q --queue; Q_DIR)
        #[arg(long = "queue", id = "top_queue", value_name = "DIR")]
        queue: Option<OsString>,
        /// How often the queue is looked at again
        #[arg(long, value_name = "DUR", default_value = "1s", value_parser = parse_interval)]
        interval: std::time::Duration,
    },
    /// push, claim, run, supervise, gc, ls, wait, log, ctl: run q-TOOL ARGS...
    #[command(external_subcommand)]
    Tool(Vec<OsString>),
}

pub fn main() -> ExitCode {
    exit::run(TOOL, body)
}

fn body() -> Result<u8> {
    let m = command().get_matches();
    let a = Args::from_arg_matches(&m).unwrap_or_else(|e| e.exit());
    match a.cmd {
        None => overview(&a),
        Some(Cmd::Tool(argv)) => {
            let (name, rest) = argv.split_first().expect("clap gives the tool name");
            exec_tool(&name.to_string_lossy(), rest, a.queue.as_deref())
        }
        Some(Cmd::Help { tool: None }) => print(&command().render_long_help().to_string()),
        Some(Cmd::Help { tool: Some(t) }) => {
            if let Some(sub) = command().find_subcommand_mut(&t) {
                return print(&sub.render_long_help().to_string());
            }
            exec_tool(&t, &[OsString::from("--help")], None)
        }
        Some(Cmd::Completions { shell, tools }) => completions(&shell, &tools),
        Some(Cmd::Man) => man(),
        Some(Cmd::Top { queue, interval }) => {
            let common = Common { queue: queue.or(a.queue), quiet: false, durability: "full".into() };
            crate::top::run(TOOL, &common, interval)
        }
    }
}

/// `q top --interval`: a duration of at least 100ms.
fn parse_interval(s: &str) -> std::result::Result<std::time::Duration, String> {
    match q_queue::time::parse_duration(s) {
        Ok(ms) if ms >= 100 => Ok(std::time::Duration::from_millis(ms)),
        Ok(_) => Err("the interval is at least 100ms".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// q's own command line: its help lists the tools.
fn command() -> clap::Command {
    let mut more = String::from("Tools (q TOOL ARGS... runs q-TOOL ARGS...):\n");
    for t in TOOLS {
        more.push_str(&format!("  {t:<10} {}\n", tool_about(t)));
    }
    more.push_str("\nExamples:\n  q push -- make -C site build          # the same as q-push -- make -C site build\n  q top                                 # watch the queue live (q quits)\n  q help run                            # q-run --help\n  source <(q completions bash)          # tab completion for q and every q-* tool in this shell\n\nSee also: man q-TOOL, man 7 q (concepts), man 5 q-queue (the format).");
    let mut c = Args::command().after_long_help(more);
    c.build();
    c
}

/// A tool's one-line description.
fn tool_about(t: &str) -> String {
    tool_command(t).and_then(|c| c.get_about().map(|a| a.to_string())).unwrap_or_default()
}

/// The command line `q` completes: its own, plus every tool as a subcommand
/// (so `q push --<TAB>` completes q-push's flags).
pub fn completion_command() -> clap::Command {
    let mut c = Args::command();
    for t in TOOLS {
        if let Some(tc) = tool_command(t) {
            c = c.subcommand(tc.name(t));
        }
    }
    c
}

/// `exec` q-TOOL: the sibling of this binary, else PATH. Returns only on
/// failure.
fn exec_tool(tool: &str, args: &[OsString], queue: Option<&std::ffi::OsStr>) -> Result<u8> {
    use std::os::unix::process::CommandExt;
    if tool.is_empty() || !tool.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Ok(usage(tool));
    }
    let name = format!("q-{tool}");
    let sibling = std::env::current_exe().ok().map(|e| e.with_file_name(&name)).filter(|p| p.is_file());
    let mut cmd = std::process::Command::new(sibling.as_deref().unwrap_or(Path::new(&name)));
    cmd.arg0(&name).args(args);
    if let Some(q) = queue {
        cmd.env("Q_DIR", q);
    }
    let err = cmd.exec();
    if err.kind() == std::io::ErrorKind::NotFound {
        if tool_command(tool).is_some() {
            eprintln!("{TOOL}: error: {name} is not installed next to q or on PATH (install with scripts/install or cargo install --locked --path .)");
            return Ok(127);
        }
        return Ok(usage(tool));
    }
    eprintln!("{TOOL}: error: cannot run {name}: {err}");
    Ok(126)
}

/// An unknown command: say which exist, exit 2 (usage).
fn usage(tool: &str) -> u8 {
    eprintln!("{TOOL}: error: {tool:?} is not a q command: the tools are {} (see q help)", TOOLS.join(", "));
    exit::USAGE
}

/// `q` alone: where the queue is, its counts, and the commands.
fn overview(a: &Args) -> Result<u8> {
    let common = Common { queue: a.queue.clone(), quiet: false, durability: "full".into() };
    let path = common.location();
    let q = common.open()?;
    let mut s = String::new();
    match &q {
        Some(_) => {
            let v = crate::ls::counts_json(q.as_ref())?;
            s.push_str(&format!("queue {}\n  {}\n\n", path.display(), crate::ls::counts_text(&v)));
        }
        None => s.push_str(&format!("queue {}: none yet (the first q push creates it)\n\n", path.display())),
    }
    s.push_str("Commands (q TOOL ARGS... runs q-TOOL ARGS...):\n");
    for t in TOOLS {
        s.push_str(&format!("  {t:<12} {}\n", tool_about(t)));
    }
    s.push_str("  top          the live view: counts, what runs where, what ended, throughput\n");
    s.push_str("  help         q help TOOL: a tool's options and examples\n");
    s.push_str("  completions  q completions bash|zsh|fish: tab completion scripts\n");
    s.push_str("  man          the manual pages (man q-TOOL, man 7 q, man 5 q-queue)\n");
    print(&s)
}

/// Print to stdout; a closed stdout ends quietly.
fn print(s: &str) -> Result<u8> {
    let mut o = std::io::stdout().lock();
    match o.write_all(s.as_bytes()).and_then(|()| o.flush()) {
        Ok(()) => Ok(exit::OK),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(exit::OK),
        Err(e) => Err(e.into()),
    }
}

/// `q completions SHELL [TOOL...]`.
fn completions(shell: &str, tools: &[String]) -> Result<u8> {
    let shell: Shell = shell.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let names: Vec<String> = if tools.is_empty() {
        std::iter::once("q".to_owned()).chain(TOOLS.iter().map(|t| format!("q-{t}"))).collect()
    } else {
        tools.iter().map(|t| if t == "q" || t.starts_with("q-") { t.clone() } else { format!("q-{t}") }).collect()
    };
    let mut buf = Vec::new();
    for name in &names {
        let mut cmd = if name == "q" {
            completion_command()
        } else {
            match tool_command(name) {
                Some(c) => c,
                None => return Ok(usage(name.strip_prefix("q-").unwrap_or(name))),
            }
        };
        let mut one = Vec::new();
        clap_complete::generate(shell, &mut cmd, name.as_str(), &mut one);
        if shell == Shell::Bash && name.contains('-') {
            one = fix_bash_subcommands(&String::from_utf8_lossy(&one), name).into_bytes();
        }
        buf.extend_from_slice(&one);
    }
    print(&String::from_utf8_lossy(&buf))
}

/// clap_complete's bash script names the subcommand cases of a binary whose
/// name has a `-` inconsistently (`q__subcmd__ctl__subcmd__nack` in the
/// cases, `q__ctl__subcmd__nack` where they are selected), so `q-ctl nack
/// --<TAB>` completed nothing. Use the selector's spelling for both.
fn fix_bash_subcommands(script: &str, bin: &str) -> String {
    const SEP: &str = "__subcmd__";
    script.replace(&format!("{}{SEP}", bin.replace('-', SEP)), &format!("{}{SEP}", bin.replace('-', "__")))
}

/// `q man`: the pages, and the directory they are installed in (next to the
/// binaries' `../share/man`, or on the MANPATH).
fn man() -> Result<u8> {
    let mut pages: Vec<(String, u8, String)> = TOOLS
        .iter()
        .map(|t| {
            (format!("q-{t}"), 1, tool_about(t))
        })
        .collect();
    pages.extend(PAGES.iter().map(|(n, s, w)| ((*n).to_owned(), *s, (*w).to_owned())));
    pages.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    let root = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().and_then(Path::parent).map(|p| p.join("share/man")))
        .filter(|d| d.join("man7/q.7").is_file());
    let mut s = String::new();
    for (n, sec, what) in &pages {
        s.push_str(&format!("{:<16} {what}\n", format!("{n}({sec})")));
    }
    match root {
        Some(r) => s.push_str(&format!("\nInstalled in {} (man q-push, man 5 q-queue, man 7 q).\n", r.display())),
        None => s.push_str("\nNot installed next to this q: scripts/install puts them in PREFIX/share/man; in a checkout, man -l man/q-push.1.\n"),
    }
    print(&s)
}
