//! Prometheus text exposition format 0.0.4: collecting samples into
//! families and rendering them.
//!
//! A scrape builds a fresh [`Scrape`] and asks every source to add its
//! samples. Samples are grouped by family as they arrive, so two sources
//! (two msg_servers behind `teamtalk up`'s combined endpoint) adding to the
//! same family still yield one `# HELP`/`# TYPE` pair with all the samples
//! under it, as the format requires.

use std::collections::HashMap;
use std::fmt::Write as _;

use super::histogram::HistogramSnapshot;

/// The `Content-Type` of the rendered text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a family measures, the `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// Only goes up (resets when the process restarts).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations counted into cumulative buckets, with sum and count.
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

#[derive(Debug)]
struct Family {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    /// Rendered sample lines, each ending in `\n`.
    lines: String,
}

/// One scrape in the making: families in first-seen order, each with its
/// samples.
///
/// Labels pushed with [`Scrape::scoped`] are added to every sample made
/// inside the scope; that is how one endpoint tells daemons apart
/// (`daemon="msg_server",instance="127.0.0.1:8000"`).
#[derive(Debug, Default)]
pub struct Scrape {
    families: Vec<Family>,
    index: HashMap<&'static str, usize>,
    scope: Vec<(String, String)>,
}

impl Scrape {
    /// An empty scrape.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `f` with `labels` added to every sample it makes.
    pub fn scoped(&mut self, labels: &[(&str, &str)], f: impl FnOnce(&mut Self)) {
        let depth = self.scope.len();
        self.scope.extend(
            labels
                .iter()
                .filter(|(k, _)| valid_label_name(k))
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        f(self);
        self.scope.truncate(depth);
    }

    /// Adds a counter sample.
    pub fn counter(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
        value: u64,
    ) {
        let value = value.to_string();
        self.sample(name, help, Kind::Counter, name, labels, None, &value);
    }

    /// Adds a gauge sample.
    pub fn gauge(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
        value: f64,
    ) {
        let value = format_float(value);
        self.sample(name, help, Kind::Gauge, name, labels, None, &value);
    }

    /// Adds a histogram: one `_bucket` line per bound plus `le="+Inf"`
    /// (cumulative counts), then `_sum` and `_count`.
    pub fn histogram(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
        h: &HistogramSnapshot,
    ) {
        let mut cumulative = 0u64;
        let bucket = format!("{name}_bucket");
        for (bound, n) in h.bounds.iter().zip(&h.counts) {
            cumulative = cumulative.saturating_add(*n);
            let le = format_float(*bound);
            self.sample(
                name,
                help,
                Kind::Histogram,
                &bucket,
                labels,
                Some(&le),
                &cumulative.to_string(),
            );
        }
        let count = h.count.to_string();
        self.sample(
            name,
            help,
            Kind::Histogram,
            &bucket,
            labels,
            Some("+Inf"),
            &count,
        );
        let sum = format_float(h.sum);
        self.sample(
            name,
            help,
            Kind::Histogram,
            &format!("{name}_sum"),
            labels,
            None,
            &sum,
        );
        self.sample(
            name,
            help,
            Kind::Histogram,
            &format!("{name}_count"),
            labels,
            None,
            &count,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn sample(
        &mut self,
        family: &'static str,
        help: &'static str,
        kind: Kind,
        series: &str,
        labels: &[(&str, &str)],
        le: Option<&str>,
        value: &str,
    ) {
        debug_assert!(valid_metric_name(family), "metric name {family:?}");
        if !valid_metric_name(family) {
            return;
        }
        let idx = match self.index.get(family) {
            Some(&i) => i,
            None => {
                self.families.push(Family {
                    name: family,
                    help,
                    kind,
                    lines: String::new(),
                });
                self.index.insert(family, self.families.len() - 1);
                self.families.len() - 1
            }
        };
        let fam = &mut self.families[idx];
        debug_assert_eq!(fam.kind, kind, "{family} used as two kinds");
        if fam.kind != kind {
            return;
        }
        let out = &mut fam.lines;
        out.push_str(series);
        let scope = self.scope.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        let own = labels.iter().copied().filter(|(k, _)| {
            debug_assert!(valid_label_name(k), "label name {k:?}");
            valid_label_name(k)
        });
        let mut first = true;
        for (k, v) in scope.chain(own).chain(le.map(|le| ("le", le))) {
            out.push(if first { '{' } else { ',' });
            first = false;
            out.push_str(k);
            out.push_str("=\"");
            escape_label_value(v, out);
            out.push('"');
        }
        if !first {
            out.push('}');
        }
        out.push(' ');
        out.push_str(value);
        out.push('\n');
    }

    /// An empty scrape whose samples will carry the labels `parent` has in
    /// scope right now: for collecting on another thread and
    /// [`merge`](Self::merge)-ing back.
    #[must_use]
    pub fn child(parent: &Self) -> Self {
        Self {
            scope: parent.scope.clone(),
            ..Self::default()
        }
    }

    /// Appends `other`'s samples, family by family (made with
    /// [`child`](Self::child), they already carry this scrape's labels).
    pub fn merge(&mut self, other: Self) {
        for f in other.families {
            let idx = match self.index.get(f.name) {
                Some(&i) => i,
                None => {
                    self.families.push(Family {
                        name: f.name,
                        help: f.help,
                        kind: f.kind,
                        lines: String::new(),
                    });
                    self.index.insert(f.name, self.families.len() - 1);
                    self.families.len() - 1
                }
            };
            let fam = &mut self.families[idx];
            if fam.kind == f.kind {
                fam.lines.push_str(&f.lines);
            }
        }
    }

    /// The exposition text: for each family `# HELP`, `# TYPE`, samples.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        for f in &self.families {
            out.push_str("# HELP ");
            out.push_str(f.name);
            out.push(' ');
            escape_help(f.help, &mut out);
            out.push('\n');
            let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind.as_str());
            out.push_str(&f.lines);
        }
        out
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`.
fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with the reserved `__`.
fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    !name.starts_with("__")
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Label values escape backslash, double quote and line feed.
fn escape_label_value(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Help text escapes backslash and line feed (quotes stay).
fn escape_help(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Go's float syntax as Prometheus parses it: `+Inf`, `-Inf`, `NaN`, and
/// plain decimals otherwise.
fn format_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v == f64::INFINITY {
        "+Inf".to_owned()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Histogram;

    #[test]
    fn families_group_samples_from_every_scope() {
        let mut s = Scrape::new();
        s.scoped(&[("daemon", "msg_server"), ("instance", "a")], |s| {
            s.counter("x_total", "Xs seen.", &[("command", "CID_MSG_DATA")], 3);
            s.gauge("up", "Whether up.", &[], 1.0);
        });
        s.scoped(&[("daemon", "msg_server"), ("instance", "b")], |s| {
            s.counter("x_total", "Xs seen.", &[], 0);
        });
        s.counter("plain_total", "No labels.", &[], 7);
        assert_eq!(
            s.render(),
            "# HELP x_total Xs seen.\n# TYPE x_total counter\n\
             x_total{daemon=\"msg_server\",instance=\"a\",command=\"CID_MSG_DATA\"} 3\n\
             x_total{daemon=\"msg_server\",instance=\"b\"} 0\n\
             # HELP up Whether up.\n# TYPE up gauge\n\
             up{daemon=\"msg_server\",instance=\"a\"} 1\n\
             # HELP plain_total No labels.\n# TYPE plain_total counter\nplain_total 7\n"
        );
    }

    #[test]
    fn escapes_label_values_and_help() {
        let mut s = Scrape::new();
        s.gauge(
            "g",
            "Back\\slash and\nnewline \"quoted\".",
            &[("addr", "a\"b\\c\nd")],
            -2.5,
        );
        assert_eq!(
            s.render(),
            "# HELP g Back\\\\slash and\\nnewline \"quoted\".\n# TYPE g gauge\n\
             g{addr=\"a\\\"b\\\\c\\nd\"} -2.5\n"
        );
    }

    #[test]
    fn special_floats() {
        assert_eq!(format_float(f64::INFINITY), "+Inf");
        assert_eq!(format_float(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_float(f64::NAN), "NaN");
        assert_eq!(format_float(0.005), "0.005");
        assert_eq!(format_float(1.0), "1");
    }

    #[test]
    fn histogram_buckets_are_cumulative_with_inf_sum_and_count() {
        let h = Histogram::new(&[0.25, 1.0]);
        h.observe(0.125);
        h.observe(0.25); // on the bound: counted in le="0.25"
        h.observe(0.5);
        h.observe(7.0);
        let mut s = Scrape::new();
        s.histogram("lat_seconds", "Latency.", &[("op", "store")], &h.snapshot());
        assert_eq!(
            s.render(),
            "# HELP lat_seconds Latency.\n# TYPE lat_seconds histogram\n\
             lat_seconds_bucket{op=\"store\",le=\"0.25\"} 2\n\
             lat_seconds_bucket{op=\"store\",le=\"1\"} 3\n\
             lat_seconds_bucket{op=\"store\",le=\"+Inf\"} 4\n\
             lat_seconds_sum{op=\"store\"} 7.875\n\
             lat_seconds_count{op=\"store\"} 4\n"
        );
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_metric_name("teamtalk_pdus_in_total"));
        assert!(valid_metric_name("a:b"));
        assert!(!valid_metric_name("1abc"));
        assert!(!valid_metric_name("a-b"));
        assert!(!valid_metric_name(""));
        assert!(valid_label_name("command"));
        assert!(!valid_label_name("__name"));
        assert!(!valid_label_name("a:b"));
    }

    #[test]
    fn arbitrary_label_values_stay_on_one_quoted_line() {
        use proptest::prelude::*;
        proptest!(|(v in ".*")| {
            let mut s = Scrape::new();
            s.counter("c_total", "C.", &[("v", &v)], 1);
            let text = s.render();
            let lines: Vec<&str> = text.lines().collect();
            prop_assert_eq!(lines.len(), 3);
            let sample = lines[2];
            prop_assert!(sample.starts_with("c_total{v=\""), "{}", sample);
            prop_assert!(sample.ends_with("\"} 1"), "{}", sample);
            // Undo the escaping: the value comes back unchanged.
            let inner = &sample["c_total{v=\"".len()..sample.len() - "\"} 1".len()];
            let mut back = String::new();
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    match chars.next() {
                        Some('n') => back.push('\n'),
                        Some(o) => back.push(o),
                        None => prop_assert!(false, "dangling backslash"),
                    }
                } else {
                    prop_assert!(c != '"' && c != '\n', "{}", sample);
                    back.push(c);
                }
            }
            prop_assert_eq!(back, v);
        });
    }
}
