//! What people read in a table (`q-ls` on a terminal, `q top`): columns laid
//! out by comfy-table at the terminal's width, one line per row whatever a
//! cell holds, times in local time with their zone, and ids cut to the
//! shortest suffix that tells them apart.
//!
//! Invariants: a row is one line (a newline in a cell is shown as `⏎`, other
//! control characters as spaces, so nothing a job says can move the
//! cursor); at a width, every line fits it, and the cells of the flexible
//! columns are cut with `…` rather than wrapped. JSON never goes through
//! here: records keep UTC and full ids.

use crate::cli::Queue;
use comfy_table::{Cell, CellAlignment, ColumnConstraint, ContentArrangement, Row, Table, Width, presets};
use q_queue::{Entry, Job};
use serde_json::Value;

/// A column: its heading, whether its cells are flush right (numbers,
/// durations), and whether it gives up width when the table is too wide.
#[derive(Debug, Clone, Copy)]
pub struct Col {
    pub head: &'static str,
    pub right: bool,
    pub flexible: bool,
}

impl Col {
    /// A column that keeps its width, flush left.
    pub const fn fixed(head: &'static str) -> Col {
        Col { head, right: false, flexible: false }
    }
    /// A column that keeps its width, flush right.
    pub const fn right(head: &'static str) -> Col {
        Col { head, right: true, flexible: false }
    }
    /// A column whose cells are cut when the table is too wide.
    pub const fn flexible(head: &'static str) -> Col {
        Col { head, right: false, flexible: true }
    }
}

/// Two spaces between columns, none after the last.
const GAP: u16 = 2;

/// The most a flexible column but the last takes before it is cut.
const FLEX_MAX: u16 = 24;

/// A size in KiB for people, in binary units as ps and top show it:
/// `900K`, `1.5M`, `12M`, `2.0G`.
pub fn human_kb(kb: u64) -> String {
    const UNITS: [&str; 3] = ["M", "G", "T"];
    if kb < 1024 {
        return format!("{kb}K");
    }
    let mut v = kb as f64 / 1024.0;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if v < 10.0 { format!("{v:.1}{}", UNITS[i]) } else { format!("{v:.0}{}", UNITS[i]) }
}

/// The lines of a table (heading first), each at most `width` columns when
/// a width is given; without one (not a terminal) nothing is cut.
pub fn render(cols: &[Col], rows: &[Vec<String>], width: Option<usize>) -> Vec<String> {
    let mut t = Table::new();
    t.load_style(presets::NOTHING).set_truncation_indicator("…");
    let mut head = Row::from(cols.iter().map(|c| Cell::new(c.head)).collect::<Vec<_>>());
    head.max_height(1);
    t.set_header(head);
    for r in rows {
        let mut row = Row::from(r.iter().map(|s| Cell::new(clean(s))).collect::<Vec<_>>());
        row.max_height(1);
        t.add_row(row);
    }
    match width {
        Some(w) => {
            t.set_content_arrangement(ContentArrangement::Dynamic)
                .set_width(u16::try_from(w).unwrap_or(u16::MAX));
        }
        None => {
            t.set_content_arrangement(ContentArrangement::Disabled);
        }
    }
    let last = cols.len().saturating_sub(1);
    for (i, c) in cols.iter().enumerate() {
        let Some(col) = t.column_mut(i) else { continue };
        col.set_padding((0, if i == last { 0 } else { GAP }));
        if c.right {
            col.set_cell_alignment(CellAlignment::Right);
        }
        if !c.flexible {
            col.set_constraint(ColumnConstraint::ContentWidth);
        } else if i != last {
            // The last column (a command) gets what the others leave.
            col.set_constraint(ColumnConstraint::UpperBoundary(Width::Fixed(FLEX_MAX)));
        }
    }
    // Columns that keep their width may still not fit a very narrow
    // terminal: cut what is left over.
    t.lines().map(|l| fit(l.trim_end(), width.unwrap_or(usize::MAX))).collect()
}

/// A cell's text on one line: a newline shown as `⏎`, other control
/// characters (tabs, escapes) as a space.
pub fn clean(s: &str) -> String {
    s.trim_end_matches('\n')
        .chars()
        .map(|c| match c {
            '\n' => '⏎',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect()
}

/// Cut a line to `width` columns (the last one `…` when cut).
pub fn fit(s: &str, width: usize) -> String {
    use unicode_width::UnicodeWidthChar;
    let total: usize = s.chars().map(|c| c.width().unwrap_or(0)).sum();
    if total <= width {
        return s.to_owned();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        let w = c.width().unwrap_or(0);
        if used + w + 1 > width {
            break;
        }
        used += w;
        out.push(c);
    }
    if width > 0 {
        out.push('…');
    }
    out
}

/// A time for people: local time with its zone (`TZ` when set), the date
/// left out when it is today: `09:03:05 EST`, `2026-12-07 09:03 EST`.
pub fn local_time(ms: i64) -> String {
    let tz = jiff::tz::TimeZone::system();
    let Ok(ts) = jiff::Timestamp::from_millisecond(ms) else { return ms.to_string() };
    let t = ts.to_zoned_datetime(tz.clone());
    let today = jiff::Timestamp::now().to_zoned_datetime(tz).date();
    if t.date() == today {
        t.strftime("%H:%M:%S %Z").to_string()
    } else {
        t.strftime("%Y-%m-%d %H:%M %Z").to_string()
    }
}

/// An RFC 3339 time of a record, for people (`local_time`); empty when it
/// is missing or not a time.
pub fn local_rfc3339(t: Option<&str>) -> String {
    t.and_then(|t| q_queue::time::parse_time(t).ok()).map(local_time).unwrap_or_default()
}

/// How an attempt ended (a `result` record), in a word or two: `ok`,
/// `exit 3`, `signal 9`, `timeout`.
pub fn how(r: &Value) -> String {
    let Some(reason) = r["reason"].as_str() else { return String::new() };
    match (r["exit_code"].as_i64(), r["signal"].as_i64()) {
        (Some(c), _) if reason == "exit" => format!("exit {c}"),
        (_, Some(n)) if reason == "signal" => format!("signal {n}"),
        _ => reason.to_owned(),
    }
}

/// A job's command as a person reads it: the `cmd` words (quoted as a
/// shell would need them), `sh: SCRIPT`, or the handler's payload.
pub fn command(job: &Job) -> String {
    match (&job.cmd, &job.sh) {
        (Some(c), _) => words(c),
        (None, Some(s)) => format!("sh: {s}"),
        (None, None) => "(payload for a handler)".to_owned(),
    }
}

/// Words joined as a shell reads them back.
fn words(c: &[String]) -> String {
    c.iter().map(|w| quoted(w)).collect::<Vec<_>>().join(" ")
}

/// A word as a shell reads it back: as it is when it is plain, else in
/// single quotes.
fn quoted(w: &str) -> std::borrow::Cow<'_, str> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_./:=@%+,-".contains(c);
    if !w.is_empty() && w.chars().all(plain) {
        return w.into();
    }
    format!("'{}'", w.replace('\'', r"'\''")).into()
}

/// A short label for a listed job: its name, else its command (empty when
/// the job is gone meanwhile).
pub fn label(q: &Queue, e: &Entry) -> String {
    q.job(e).ok().flatten().map_or_else(String::new, |(_, job)| job_label(&job))
}

/// A job's label: its name, else its command.
pub fn job_label(job: &Job) -> String {
    job.name.clone().unwrap_or_else(|| command(job))
}

/// The fewest characters a suffix of an id may have: what the tools accept
/// on the command line as a unique suffix.
pub const MIN_SUFFIX: usize = q_queue::resolve::MIN_SHORT;

/// For each of `ids`, its shortest suffix (at least `MIN_SUFFIX`
/// characters, compared as the tools resolve them: any case) that no other
/// id of `ids` or `among` ends with, so that it can be typed back. Ids
/// pushed together share their first characters: the end tells them apart.
pub fn unique_suffixes(ids: &[&str], among: &[&str]) -> Vec<String> {
    let key = |s: &str| -> Vec<u8> { s.bytes().rev().map(|b| b.to_ascii_uppercase()).collect() };
    let mut all: Vec<Vec<u8>> = ids.iter().chain(among).map(|s| key(s)).collect();
    all.sort_unstable();
    all.dedup();
    ids.iter()
        .map(|id| {
            let k = key(id);
            // Sorted by their reversed text, an id's neighbours share the
            // longest suffixes with it.
            let i = all.binary_search(&k).unwrap_or_else(|i| i);
            let common = |o: &Vec<u8>| k.iter().zip(o).take_while(|(a, b)| a == b).count() + 1;
            let mut n = MIN_SUFFIX;
            if i > 0 {
                n = n.max(common(&all[i - 1]));
            }
            if let Some(next) = all.get(i + 1) {
                n = n.max(common(next));
            }
            id.get(id.len().saturating_sub(n)..).unwrap_or(id).to_owned()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_binary_units() {
        let got: Vec<String> = [0, 900, 1023, 1024, 1536, 12 * 1024, 1024 * 1024 * 2].into_iter().map(human_kb).collect();
        assert_eq!(got, ["0K", "900K", "1023K", "1.0M", "1.5M", "12M", "2.0G"]);
    }

    #[test]
    fn suffixes_are_the_shortest_that_differ() {
        let ids = [
            "01KBXR5TJ6M2Z3N4P5Q6R7S8T9",
            "01KBXR5TJ6M2Z3N4P5Q6R7S8TA",
            "01KBXR5TJ6M2Z3N4P5QXXXXXXX",
            "01KBXR5TJ6M2Z3N4P5QYXXXXXX",
        ];
        assert_eq!(unique_suffixes(&ids, &[]), ["R7S8T9", "R7S8TA", "XXXXXXX", "YXXXXXX"]);
        assert_eq!(unique_suffixes(&ids[..2], &[]), ["R7S8T9", "R7S8TA"]);
        assert_eq!(unique_suffixes(&["abc"], &[]), ["abc"]);
        assert!(unique_suffixes(&[], &[]).is_empty());
        // One id listed twice keeps its shortest form.
        assert_eq!(unique_suffixes(&[ids[0], ids[0]], &[]), ["R7S8T9", "R7S8T9"]);
        // Unique among jobs not shown too, in any case (as ids resolve).
        assert_eq!(unique_suffixes(&[ids[2]], &[]), ["XXXXXX"]);
        assert_eq!(unique_suffixes(&[ids[2]], &[ids[3]]), ["XXXXXXX"]);
        assert_eq!(unique_suffixes(&[ids[2]], &["01KBXR5TJ6M2Z3N4P5QYxxxxxx"]), ["XXXXXXX"]);
    }

    #[test]
    fn a_row_is_one_line_and_fits_the_width() {
        let cols = [Col::fixed("ID"), Col::right("N"), Col::flexible("COMMAND")];
        let rows = vec![
            vec!["a".into(), "1".into(), "echo one\necho two\techo three".into()],
            vec!["bb".into(), "22".into(), "x".repeat(200)],
        ];
        let lines = render(&cols, &rows, Some(30));
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(lines.iter().all(|l| unicode_width::UnicodeWidthStr::width(l.as_str()) <= 30), "{lines:#?}");
        assert!(lines[1].contains("echo one⏎echo"), "{lines:#?}");
        assert!(lines[2].ends_with('…'), "{lines:#?}");
        // Flush right numbers, every column starting where its heading does.
        assert_eq!(lines[0].find("COMMAND"), lines[1].find("echo"));
        assert_eq!(lines[1].find('1').unwrap() + 1, lines[2].find("22").unwrap() + 2);
        // A terminal too narrow for the fixed columns: lines are cut.
        let narrow = render(&cols, &rows, Some(8));
        assert!(narrow.iter().all(|l| unicode_width::UnicodeWidthStr::width(l.as_str()) <= 8), "{narrow:#?}");
        // Without a width nothing is cut.
        let whole = render(&cols, &rows, None);
        assert!(whole[2].ends_with(&"x".repeat(200)), "{whole:#?}");
    }

    #[test]
    fn commands_read_as_a_shell_would() {
        let w = |cmd: &[&str]| words(&cmd.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        assert_eq!(w(&["make", "-C", "site/a", "x=1"]), "make -C site/a x=1");
        assert_eq!(w(&["sh", "-c", "echo it's"]), r"sh -c 'echo it'\''s'");
        assert_eq!(w(&["printf", ""]), "printf ''");
    }

    #[test]
    fn lines_are_cut_to_a_width() {
        assert_eq!(fit("abcdef", 10), "abcdef");
        assert_eq!(fit("abcdef", 4), "abc…");
        assert_eq!(fit("日本語です", 5), "日本…");
    }
}
