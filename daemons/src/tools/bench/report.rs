//! The end-of-run figures: a table for people, one JSON object for machines.

use std::io::Write;

use serde_json::{Map, Value};

use super::BenchError;
use super::hist::Histogram;

/// Figures in the order they are printed.
#[derive(Debug, Default)]
pub(crate) struct Report {
    rows: Vec<(String, String, Value)>,
}

impl Report {
    /// A count.
    pub(crate) fn int(&mut self, key: &str, label: &str, v: u64) {
        self.push(key, label, Value::from(v));
    }

    fn push(&mut self, key: &str, label: &str, v: Value) {
        self.rows.push((key.to_owned(), label.to_owned(), v));
    }

    /// A measured real number (rounded to 2 decimals), or absent.
    pub(crate) fn num(&mut self, key: &str, label: &str, v: Option<f64>) {
        let v = v
            .filter(|v| v.is_finite())
            .map_or(Value::Null, |v| Value::from((v * 100.0).round() / 100.0));
        self.push(key, label, v);
    }

    /// Text.
    pub(crate) fn text(&mut self, key: &str, label: &str, v: impl Into<String>) {
        self.push(key, label, Value::from(v.into()));
    }

    /// p50/p90/p99/max/mean of a nanosecond histogram, in microseconds,
    /// under keys `<prefix>_p50_us` and so on.
    pub(crate) fn latency(&mut self, prefix: &str, label: &str, h: &Histogram) {
        const PARTS: [(&str, Option<f64>); 5] = [
            ("p50", Some(0.5)),
            ("p90", Some(0.9)),
            ("p99", Some(0.99)),
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
            let lab = format!("{label} {part} (µs)");
            if h.count() == 0 {
                self.push(&key, &lab, Value::Null);
            } else {
                self.num(&key, &lab, Some(ns / 1000.0));
            }
        }
    }

    /// Writes the table or the JSON object.
    pub(crate) fn write(&self, json: bool, out: &mut dyn Write) -> Result<(), BenchError> {
        if json {
            let map: Map<String, Value> = self
                .rows
                .iter()
                .map(|(k, _, v)| (k.clone(), v.clone()))
                .collect();
            serde_json::to_writer(&mut *out, &Value::Object(map))?;
            writeln!(out)?;
        } else {
            for (_, label, v) in &self.rows {
                writeln!(out, "  {label:<40} {}", show(v))?;
            }
        }
        out.flush()?;
        Ok(())
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::Number(n) if n.is_u64() => n.as_u64().map_or_else(String::new, thousands),
        Value::Number(n) => {
            let f = n.as_f64().unwrap_or(0.0);
            if f.abs() >= 1000.0 {
                thousands(f.round() as u64)
            } else {
                format!("{f:.2}")
            }
        }
        Value::String(s) => s.clone(),
        other => other.to_string(),
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
        r.num("rate", "rate", Some(25_000.456));
        r.num("cpu", "cpu", None);
        r.text("target", "target", "http://x");
        r.latency("latency", "latency", &h);
        let mut table = Vec::new();
        r.write(false, &mut table).unwrap();
        let table = String::from_utf8(table).unwrap();
        assert!(
            table.contains("1,234,567") && table.contains("25,000"),
            "{table}"
        );
        let mut json = Vec::new();
        r.write(true, &mut json).unwrap();
        let v: Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["sent"], 1_234_567);
        assert_eq!(v["latency_p99_us"], 2.0);
        assert!(v["cpu"].is_null());
        assert_eq!(v["target"], "http://x");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
    }
}
