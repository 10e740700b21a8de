//! Wall-clock times as Unix milliseconds, durations like `90s` or `1h30m`, and
//! RFC 3339 formatting. Local timeouts use `Instant` elsewhere; this module is
//! only for what is written to disk or printed.

use crate::error::{Error, Kind, Result};
use std::time::{SystemTime, UNIX_EPOCH};

/// Now, as Unix milliseconds.
pub fn now_ms() -> i64 {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The largest run_at the 13-digit file names can hold (year 2286).
pub const MAX_MS: i64 = 9_999_999_999_999;

/// Parse a duration: an integer with a unit, possibly several (`90s`, `5m`,
/// `1h30m`, `250ms`, `2d`); a bare integer means seconds.
pub fn parse_duration(s: &str) -> Result<u64> {
    let bad = || {
        Error::new(
            Kind::Data,
            format!("invalid duration {s:?}: use a number with a unit, like 90s, 5m, 1h30m, 250ms or 2d"),
        )
    };
    let s = s.trim();
    if s.is_empty() {
        return Err(bad());
    }
    if let Ok(n) = s.parse::<u64>() {
        return n.checked_mul(1000).ok_or_else(bad);
    }
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let mult: u64 = match unit {
            "ms" => 1,
            "s" | "sec" => 1000,
            "m" | "min" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        total = n
            .checked_mul(mult)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    Ok(total)
}

/// Parse a point in time: RFC 3339 with any offset, or Unix seconds.
pub fn parse_time(s: &str) -> Result<i64> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<i64>() {
        return secs
            .checked_mul(1000)
            .filter(|ms| (0..=MAX_MS).contains(ms))
            .ok_or_else(|| Error::new(Kind::Data, format!("time {s:?} is out of range")));
    }
    let ts: jiff::Timestamp = s.parse().map_err(|e| {
        Error::new(
            Kind::Data,
            format!("invalid time {s:?}: use RFC 3339 like 2026-11-25T18:00:00+01:00, or Unix seconds ({e})"),
        )
    })?;
    let ms = ts.as_millisecond();
    if !(0..=MAX_MS).contains(&ms) {
        return Err(Error::new(Kind::Data, format!("time {s:?} is out of range")));
    }
    Ok(ms)
}

/// Parse what a person gives `--at`: anything [`parse_time`] takes, or a
/// civil time in the zone `tz`: `HH:MM` (its next occurrence after `now`),
/// `today HH:MM`, `tomorrow HH:MM`, `YYYY-MM-DD HH:MM`. A civil time that
/// a DST change skips or repeats is taken as jiff's "compatible"
/// disambiguation does (RFC 5545): in a gap, the time as read with the
/// offset before the gap (so 02:30 in a spring-forward gap is 03:30); in
/// a fold, the earlier of the two.
pub fn parse_at(s: &str, now_ms: i64, tz: &jiff::tz::TimeZone) -> Result<i64> {
    let s = s.trim();
    let words: Vec<&str> = s.split_whitespace().collect();
    let (day, hm) = match words[..] {
        [hm] if hm.contains(':') && !hm.contains('T') && hm.len() <= 5 => (None, hm),
        [day, hm] => (Some(day), hm),
        _ => return parse_time(s),
    };
    let bad = |why: String| {
        Error::new(
            Kind::Data,
            format!("invalid time {s:?}: {why}; use HH:MM, today HH:MM, tomorrow HH:MM, YYYY-MM-DD HH:MM (local time), RFC 3339 or Unix seconds"),
        )
    };
    let time = civil_hm(hm).ok_or_else(|| bad(format!("{hm:?} is not HH:MM")))?;
    let now = jiff::Timestamp::from_millisecond(now_ms).map_err(|e| bad(e.to_string()))?.to_zoned_datetime(tz.clone());
    let today = now.date();
    let at = |date: jiff::civil::Date| -> Result<i64> {
        let z = tz.to_ambiguous_zoned_datetime(date.to_datetime(time)).compatible().map_err(|e| bad(e.to_string()))?;
        let ms = z.timestamp().as_millisecond();
        if !(0..=MAX_MS).contains(&ms) {
            return Err(Error::new(Kind::Data, format!("time {s:?} is out of range")));
        }
        Ok(ms)
    };
    let tomorrow = || today.tomorrow().map_err(|e| bad(e.to_string()));
    match day {
        None => {
            let ms = at(today)?;
            if ms > now_ms { Ok(ms) } else { at(tomorrow()?) }
        }
        Some("today") => at(today),
        Some("tomorrow") => at(tomorrow()?),
        Some(d) => at(d.parse::<jiff::civil::Date>().map_err(|_| bad(format!("{d:?} is not today, tomorrow or YYYY-MM-DD")))?),
    }
}

/// `HH:MM` on a 24-hour clock.
fn civil_hm(hm: &str) -> Option<jiff::civil::Time> {
    let (h, m) = hm.split_once(':')?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 || !(h.bytes().chain(m.bytes())).all(|b| b.is_ascii_digit()) {
        return None;
    }
    jiff::civil::Time::new(h.parse().ok()?, m.parse().ok()?, 0, 0).ok()
}

/// Format Unix milliseconds as RFC 3339 UTC with milliseconds.
pub fn rfc3339(ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(ts) => format!("{ts:.3}"),
        Err(_) => ms.to_string(),
    }
}

/// A duration for people: the one form every tool prints, in messages,
/// tables and live views. The two largest units, the second zero-padded so
/// that a column of them lines up (`1h05m`, `5m03s`, `42s`, `3d04h`); a
/// second unit that is zero is left out (`1h`, `7d`); under a second,
/// milliseconds (`250ms`; nothing at all is `0s`). It reads back with [`parse_duration`], cut to its
/// two units (a clock's truncation, never rounded up).
pub fn human_duration(ms: u64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    const UNITS: [(&str, u64); 4] = [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)];
    let i = UNITS.iter().position(|&(_, size)| s >= size).unwrap_or(3);
    let (unit, size) = UNITS[i];
    let mut out = format!("{}{unit}", s / size);
    if let Some(&(next, next_size)) = UNITS.get(i + 1) {
        let rest = (s % size) / next_size;
        if rest > 0 {
            out.push_str(&format!("{rest:02}{next}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), 90_000);
        assert_eq!(parse_duration("1h30m").unwrap(), 5_400_000);
        assert_eq!(parse_duration("250ms").unwrap(), 250);
        assert_eq!(parse_duration("7").unwrap(), 7000);
        assert_eq!(parse_duration("2d").unwrap(), 172_800_000);
        for bad in ["", "s", "5x", "-5s", "1.5s", "5 s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_for_people() {
        for (ms, text) in [
            (0, "0s"),
            (250, "250ms"),
            (1_999, "1s"),
            (42_000, "42s"),
            (65_000, "1m05s"),
            (3_600_000, "1h"),
            (3_900_000, "1h05m"),
            (3_959_000, "1h05m"),
            (5_400_000, "1h30m"),
            (604_800_000, "7d"),
            (273_600_000 + 59_000, "3d04h"),
        ] {
            assert_eq!(human_duration(ms), text, "{ms}");
            // It reads back, cut to its two units.
            assert!(parse_duration(text).unwrap() <= ms);
        }
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("1700000000").unwrap(), 1_700_000_000_000);
        let a = parse_time("2026-11-25T18:00:00+01:00").unwrap();
        let b = parse_time("2026-11-25T17:00:00Z").unwrap();
        assert_eq!(a, b);
        assert_eq!(rfc3339(b), "2026-11-25T17:00:00.000Z");
        assert!(parse_time("yesterday").is_err());
    }

    fn ny() -> jiff::tz::TimeZone {
        jiff::tz::TimeZone::get("America/New_York").unwrap()
    }

    fn ms(rfc: &str) -> i64 {
        parse_time(rfc).unwrap()
    }

    #[test]
    fn civil_times_in_a_zone() {
        let tz = ny();
        // 2026-11-25 10:00 in New York (EST, -05:00).
        let now = ms("2026-11-25T15:00:00Z");
        assert_eq!(parse_at("18:30", now, &tz).unwrap(), ms("2026-11-25T18:30:00-05:00"), "later today");
        assert_eq!(parse_at("09:15", now, &tz).unwrap(), ms("2026-11-26T09:15:00-05:00"), "passed: tomorrow");
        assert_eq!(parse_at("10:00", now, &tz).unwrap(), ms("2026-11-26T10:00:00-05:00"), "now is not next");
        assert_eq!(parse_at("today 09:15", now, &tz).unwrap(), ms("2026-11-25T09:15:00-05:00"), "today, even when past");
        assert_eq!(parse_at("tomorrow 7:05", now, &tz).unwrap(), ms("2026-11-26T07:05:00-05:00"));
        assert_eq!(parse_at("2026-12-31 23:59", now, &tz).unwrap(), ms("2026-12-31T23:59:00-05:00"));
        assert_eq!(parse_at("2026-07-04 12:00", now, &tz).unwrap(), ms("2026-07-04T12:00:00-04:00"), "summer time");
        // The year's last day: tomorrow is next year.
        assert_eq!(parse_at("08:00", ms("2026-12-31T20:00:00-05:00"), &tz).unwrap(), ms("2027-01-01T08:00:00-05:00"));
        // The forms that were there before still work.
        assert_eq!(parse_at("1700000000", now, &tz).unwrap(), 1_700_000_000_000);
        assert_eq!(parse_at("2026-11-25T18:00:00+01:00", now, &tz).unwrap(), ms("2026-11-25T17:00:00Z"));
        for bad in ["25:00", "12:60", "12:5", "noon", "yesterday 10:00", "2026-02-30 10:00", "today", "today 10", "1:2:3", "tomorrow 10:00 x"] {
            let e = parse_at(bad, now, &tz).unwrap_err();
            assert_eq!(e.kind, Kind::Data, "{bad}");
        }
    }

    #[test]
    fn dst_gaps_and_folds_are_disambiguated_compatibly() {
        let tz = ny();
        // 2026-03-08: 02:00 EST jumps to 03:00 EDT; 02:30 does not exist.
        let before = ms("2026-03-07T12:00:00-05:00");
        assert_eq!(parse_at("2026-03-08 02:30", before, &tz).unwrap(), ms("2026-03-08T03:30:00-04:00"), "gap: moved forward");
        assert_eq!(parse_at("tomorrow 02:30", before, &tz).unwrap(), ms("2026-03-08T03:30:00-04:00"));
        // 2026-11-01: 02:00 EDT falls back to 01:00 EST; 01:30 happens twice.
        let eve = ms("2026-10-31T12:00:00-04:00");
        assert_eq!(parse_at("2026-11-01 01:30", eve, &tz).unwrap(), ms("2026-11-01T01:30:00-04:00"), "fold: the earlier");
        // HH:MM during the fold's second hour: the next 01:30 is tomorrow's.
        let second = ms("2026-11-01T01:45:00-05:00");
        assert_eq!(parse_at("01:30", second, &tz).unwrap(), ms("2026-11-02T01:30:00-05:00"));
    }
}
