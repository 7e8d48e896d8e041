//! The end-of-run figures: a table for people, one JSON object for machines.
//!
//! One number format everywhere in the table: counts exact with thousands
//! separators, measured reals to three significant digits (thousands
//! separators, no decimals, from 1,000 up), and every duration in the unit
//! that fits it (µs, ms or s), so a second-scale latency does not show as
//! millions of microseconds; every rate, size and share names its unit.
//! The JSON keeps the keys it always had, each naming its one unit:
//! latencies in microseconds (`_us`), durations in seconds (`_s`), rates
//! per second (`_per_s`), memory in KiB or bytes.

use std::io::Write;

use serde_json::{Map, Value};

use super::BenchError;
use super::hist::Histogram;

/// Figures in the order they are printed.
#[derive(Debug, Default)]
pub(crate) struct Report {
    /// (JSON key, table label, JSON value, table text).
    rows: Vec<(String, String, Value, String)>,
}

impl Report {
    /// A count.
    pub(crate) fn int(&mut self, key: &str, label: &str, v: u64) {
        self.push(key, label, Value::from(v), thousands(v));
    }

    /// A yes/no.
    pub(crate) fn flag(&mut self, key: &str, label: &str, v: bool) {
        self.push(
            key,
            label,
            Value::from(v),
            if v { "yes" } else { "no" }.into(),
        );
    }

    fn push(&mut self, key: &str, label: &str, v: Value, shown: String) {
        self.rows.push((key.to_owned(), label.to_owned(), v, shown));
    }

    /// A measured real number in `unit` (rounded to 2 decimals in the
    /// JSON), or absent.
    pub(crate) fn num(&mut self, key: &str, label: &str, v: Option<f64>, unit: &str) {
        match v.filter(|v| v.is_finite()) {
            Some(v) => self.push(
                key,
                label,
                Value::from((v * 100.0).round() / 100.0),
                if unit.is_empty() {
                    real(v)
                } else {
                    format!("{} {unit}", real(v))
                },
            ),
            None => self.push(key, label, Value::Null, "-".into()),
        }
    }

    /// A duration in seconds: `<key>` in the JSON (name it `…_s`), in the
    /// unit that fits in the table.
    pub(crate) fn secs(&mut self, key: &str, label: &str, v: Option<f64>) {
        match v.filter(|v| v.is_finite()) {
            Some(v) => self.push(
                key,
                label,
                Value::from((v * 1000.0).round() / 1000.0),
                duration(v * 1e9),
            ),
            None => self.push(key, label, Value::Null, "-".into()),
        }
    }

    /// Text.
    pub(crate) fn text(&mut self, key: &str, label: &str, v: impl Into<String>) {
        let v = v.into();
        self.push(key, label, Value::from(v.clone()), v);
    }

    /// Any JSON value under `key`, shown as `shown` in the table.
    pub(crate) fn value(&mut self, key: &str, label: &str, v: Value, shown: String) {
        self.push(key, label, v, shown);
    }

    /// A table line with no JSON counterpart (the JSON carries the same
    /// figure under another row's key).
    pub(crate) fn table_only(&mut self, label: &str, shown: String) {
        self.push("", label, Value::Null, shown);
    }

    /// p50/p90/p99/p99.9/max/mean of a nanosecond histogram: in the JSON
    /// in microseconds under keys `<prefix>_p50_us` and so on (`_p999_us`
    /// for p99.9), in the table each in the unit that fits it.
    pub(crate) fn latency(&mut self, prefix: &str, label: &str, h: &Histogram) {
        const PARTS: [(&str, Option<f64>); 6] = [
            ("p50", Some(0.5)),
            ("p90", Some(0.9)),
            ("p99", Some(0.99)),
            ("p999", Some(0.999)),
            ("max", None),
            ("mean", None),
        ];
        for (part, q) in PARTS {
            let ns = match (part, q) {
                (_, Some(q)) => h.quantile(q) as f64,
                ("max", None) => h.max() as f64,
                _ => h.mean(),
            };
            let key = format!("{prefix}_{part}_us");
            let lab = format!("{label} {}", if part == "p999" { "p99.9" } else { part });
            if h.count() == 0 {
                self.push(&key, &lab, Value::Null, "-".into());
            } else {
                let us = (ns / 10.0).round() / 100.0;
                self.push(&key, &lab, Value::from(us), duration(ns));
            }
        }
    }

    /// Writes the table or the JSON object.
    pub(crate) fn write(&self, json: bool, out: &mut dyn Write) -> Result<(), BenchError> {
        if json {
            let map: Map<String, Value> = self
                .rows
                .iter()
                .filter(|(k, ..)| !k.is_empty())
                .map(|(k, _, v, _)| (k.clone(), v.clone()))
                .collect();
            serde_json::to_writer(&mut *out, &Value::Object(map))?;
            writeln!(out)?;
        } else {
            for (_, label, _, shown) in &self.rows {
                writeln!(out, "  {label:<40} {shown}")?;
            }
        }
        out.flush()?;
        Ok(())
    }
}

/// A measured real: three significant digits below 1,000, whole with
/// thousands separators from there.
pub(crate) fn real(v: f64) -> String {
    let a = v.abs();
    let sign = if v < 0.0 { "-" } else { "" };
    if a >= 999.5 {
        return format!("{sign}{}", thousands(a.round() as u64));
    }
    let decimals = if a == 0.0 || a >= 99.95 {
        0
    } else if a >= 9.995 {
        1
    } else if a >= 0.9995 {
        2
    } else {
        // Three significant digits of a fraction: 0.0123.
        let digits = (-a.log10()).floor() as usize;
        (digits + 3).min(9)
    };
    format!("{sign}{a:.decimals$}")
}

/// A duration of `ns` nanoseconds in µs, ms or s, whichever keeps the
/// number between 1 and 1,000 (three significant digits).
pub(crate) fn duration(ns: f64) -> String {
    if ns < 999.5 {
        format!("{} ns", real(ns))
    } else if ns < 999_500.0 {
        format!("{} µs", real(ns / 1e3))
    } else if ns < 999_500_000.0 {
        format!("{} ms", real(ns / 1e6))
    } else {
        format!("{} s", real(ns / 1e9))
    }
}

/// `1234567` → `1,234,567`.
pub(crate) fn thousands(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_and_json_carry_the_same_figures() {
        let mut h = Histogram::new();
        h.record(2_000);
        let mut r = Report::default();
        r.int("sent", "sent", 1_234_567);
        r.num("rate", "rate", Some(25_000.456), "msgs/s");
        r.num("cpu", "cpu", None, "%");
        r.text("target", "target", "http://x");
        r.flag("clean", "clean", true);
        r.value(
            "spread",
            "spread",
            serde_json::json!({"a": 1}),
            "a=1".into(),
        );
        r.table_only("only in the table", "shown".into());
        r.secs("setup_s", "setup", Some(0.0123));
        r.latency("latency", "latency", &h);
        let mut table = Vec::new();
        r.write(false, &mut table).unwrap();
        let table = String::from_utf8(table).unwrap();
        assert!(
            table.contains("1,234,567") && table.contains("25,000 msgs/s"),
            "{table}"
        );
        assert!(
            table.contains("2.00 µs") && table.contains("12.3 ms"),
            "{table}"
        );
        let mut json = Vec::new();
        r.write(true, &mut json).unwrap();
        let v: Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["sent"], 1_234_567);
        assert_eq!(v["latency_p99_us"], 2.0);
        assert_eq!(v["latency_p999_us"], 2.0);
        assert_eq!(v["setup_s"], 0.012);
        assert_eq!(v["clean"], true);
        assert!(v["cpu"].is_null());
        assert_eq!(v["target"], "http://x");
        assert_eq!(v["spread"]["a"], 1);
        assert!(table.contains("a=1") && table.contains("only in the table"));
        assert_eq!(v.as_object().map(|o| o.contains_key("")), Some(false));
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
    }

    #[test]
    fn second_scale_latencies_show_in_seconds() {
        let mut h = Histogram::new();
        h.record(2_500_000_000);
        let mut r = Report::default();
        r.latency("latency", "latency", &h);
        let mut table = Vec::new();
        r.write(false, &mut table).unwrap();
        let table = String::from_utf8(table).unwrap();
        // Within the histogram's 1/64 precision, in seconds: never
        // "2,500,000 µs".
        assert!(table.contains(" s\n"), "{table}");
        assert!(!table.contains("µs") && !table.contains(",000"), "{table}");
    }

    #[test]
    fn one_number_format() {
        assert_eq!(real(0.0), "0");
        assert_eq!(real(0.5734), "0.573");
        assert_eq!(real(0.012_34), "0.0123");
        assert_eq!(real(5.734), "5.73");
        assert_eq!(real(57.34), "57.3");
        assert_eq!(real(573.4), "573");
        assert_eq!(real(56_882.4), "56,882");
        assert_eq!(real(-2.5), "-2.50");
        assert_eq!(duration(570_000.0), "570 µs");
        assert_eq!(duration(28_400_000.0), "28.4 ms");
        assert_eq!(duration(2_500_000_000.0), "2.50 s");
        assert_eq!(duration(999_700.0), "1.00 ms");
        assert_eq!(duration(850.0), "850 ns");
    }
}
