//! `q-ctl workers N`, `q-ctl slots NAME=N`, `q-ctl limit NAME=N`, `q-ctl
//! rate [NAME=]N/s`: change a
//! live supervisor until it exits ([`q_queue::supervisor`]). The change is
//! left for the supervisor through the backend (so it reaches one on
//! another host of a PostgreSQL queue); q-ctl waits until the supervisor
//! says it applied it (it looks every second), then prints one `ctl` line
//! with its settings before and after.
//!
//! No live supervisor: exit 75, saying how to start one. Several (a
//! PostgreSQL queue served from several hosts, one supervisor each):
//! `--host` names the one to change; without it, exit 2 naming them.

use super::TOOL;
use crate::cli::Common;
use crate::exit;
use crate::out;
use anyhow::{Result, bail};
use q_queue::Kind;
use q_queue::supervisor::{SupAsk, Supervisor};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long q-ctl waits for the supervisor to take the change.
const PATIENCE: Duration = Duration::from_secs(10);

/// Ask the live supervisor (of `host`, if given) for `ask` (its `id` and
/// `to` are filled in here).
pub(super) fn change(common: &Common, action: &str, host: Option<&str>, mut ask: SupAsk) -> Result<u8> {
    let q = common.open_existing()?;
    let all = q.supervisors()?;
    let live: Vec<&Supervisor> = all.iter().filter(|s| host.is_none_or(|h| s.holder.host == h)).collect();
    let s = match live.as_slice() {
        [s] => (*s).clone(),
        [] => {
            let hosts: Vec<&str> = all.iter().map(|s| s.holder.host.as_str()).collect();
            let msg = match host {
                Some(h) if !hosts.is_empty() => format!("no supervisor on host {h} serves queue {} (the live ones are on {}); pass one of them to --host", q.location().display(), hosts.join(", ")),
                _ => format!(
                    "no supervisor serves queue {}{}: q-ctl {action} changes a running q-supervise (until it exits); start one, e.g. q-supervise -j 4",
                    q.location().display(),
                    host.map(|h| format!(" on host {h}")).unwrap_or_default()
                ),
            };
            bail!(q_queue::Error::new(Kind::Busy, msg));
        }
        several => {
            let hosts: Vec<&str> = several.iter().map(|s| s.holder.host.as_str()).collect();
            eprintln!("{TOOL}: error: {} supervisors serve queue {} (on hosts {}); say which to change with --host", several.len(), q.location().display(), hosts.join(", "));
            return Ok(exit::USAGE);
        }
    };
    ask.id = q_queue::id::new_id();
    ask.to = s.id.clone();
    q.ask_supervisor(&ask)?;
    let until = Instant::now() + PATIENCE;
    let now = loop {
        let found = q.supervisors()?.into_iter().find(|x| x.id == s.id);
        match found {
            None => bail!(q_queue::Error::new(Kind::Busy, format!("the supervisor on host {} (pid {}) stopped before it took the change; a new one starts with its own settings", s.holder.host, s.holder.pid))),
            Some(x) if x.applied.contains(&ask.id) => break Some(x),
            Some(_) if Instant::now() >= until => break None,
            Some(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let applied = now.is_some();
    let after = now.as_ref().map_or_else(
        || {
            let mut t = s.settings.clone();
            t.apply(&ask);
            t
        },
        |x| x.settings.clone(),
    );
    if !common.quiet {
        if !applied {
            eprintln!("{TOOL}: the supervisor on host {} (pid {}) has not taken the change within {}s (it looks every second); it is left for it", s.holder.host, s.holder.pid, PATIENCE.as_secs());
        } else if out::stderr_is_tty() {
            eprintln!("{TOOL}: supervisor on host {} (pid {}) changed until it exits; running jobs finish first", s.holder.host, s.holder.pid);
        }
    }
    out::line(&json!({
        "type": "ctl",
        "action": action,
        "host": s.holder.host,
        "pid": s.holder.pid,
        "applied": applied,
        "workers": after.workers,
        "slots": after.slots,
        "limits": after.limits,
        "rate": after.rate,
        "rates": after.rates,
        "was_workers": s.settings.workers,
        "was_slots": s.settings.slots,
        "was_limits": s.settings.limits,
        "was_rate": s.settings.rate,
        "was_rates": s.settings.rates,
    }))?;
    Ok(exit::OK)
}

/// `NAME=N` pairs as a map (0: none of that name).
pub(super) fn pairs(list: &[(String, u32)]) -> BTreeMap<String, u32> {
    list.iter().cloned().collect()
}
