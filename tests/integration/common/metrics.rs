//! Prometheus text (the admin API's `/metrics`), parsed by `prometheus-parse`:
//! [`samples`], [`metric`], [`must`], [`assert_metric`].

use std::collections::BTreeMap;

use prometheus_parse::{LineInfo, Scrape, Value};

pub type Labels = BTreeMap<String, String>;

/// Every sample of `text` as `(name, labels, value)`. Histograms come back
/// as their `NAME_bucket` samples (label `le`, text order), `NAME_sum` and
/// `NAME_count`; summaries as samples with a `quantile` label.
pub fn samples(text: &str) -> Vec<(String, Labels, f64)> {
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("in-memory lines");
    let mut out = Vec::new();
    for s in scrape.samples {
        let labels: Labels = s.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let with = |k: &str, x: f64| {
            let mut l = labels.clone();
            l.insert(k.into(), if x == f64::INFINITY { "+Inf".into() } else { x.to_string() });
            l
        };
        match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => out.push((s.metric, labels, v)),
            Value::Histogram(hs) => {
                let name = format!("{}_bucket", s.metric);
                out.extend(hs.iter().map(|h| (name.clone(), with("le", h.less_than), h.count)));
            }
            Value::Summary(qs) => {
                out.extend(qs.iter().map(|q| (s.metric.clone(), with("quantile", q.quantile), q.count)))
            }
        }
    }
    out
}

/// Whether `line` is a well-formed sample line.
pub fn is_sample_line(line: &str) -> bool {
    matches!(LineInfo::parse(line), LineInfo::Sample { .. })
}

/// The value of sample `name` with exactly the label set `labels`.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: Labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    samples(text).into_iter().find(|(n, l, _)| n == name && *l == want).map(|(_, _, v)| v)
}

/// [`metric`], panicking with the whole text when the sample is missing.
pub fn must(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric(text, name, labels).unwrap_or_else(|| panic!("no sample {name}{labels:?} in metrics:\n{text}"))
}

/// Asserts that sample `name` with exactly `labels` exists in `text` and has
/// `value`; the failure message holds the whole text.
pub fn assert_metric(text: &str, name: &str, labels: &[(&str, &str)], value: f64) {
    assert_eq!(must(text, name, labels), value, "{name}{labels:?} in metrics:\n{text}");
}
