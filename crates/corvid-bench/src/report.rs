//! One run's result: a table for people on stdout, and one JSON line for machines, printed
//! and appended to the results file.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

/// The result of one workload run.
#[derive(Clone, Debug)]
pub struct Report {
    pub workload: String,
    /// Metrics in the order they were set.
    entries: Vec<(String, Value)>,
    /// Why the run failed: losses, duplicates, errors, a deadline. Empty when it passed.
    pub problems: Vec<String>,
}

impl Report {
    pub fn new(workload: &str) -> Report {
        Report {
            workload: workload.to_string(),
            entries: Vec::new(),
            problems: Vec::new(),
        }
    }

    /// Sets metric `key` (a later set replaces an earlier one).
    pub fn set(&mut self, key: &str, value: impl Into<Value>) {
        let value = value.into();
        match self.entries.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => self.entries.push((key.to_string(), value)),
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Marks the run as failed, saying why.
    pub fn problem(&mut self, text: impl Into<String>) {
        self.problems.push(text.into());
    }

    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }

    /// The JSON line: the workload, the verdict, `context` (command, machine), the metrics.
    pub fn to_json(&self, context: &Map<String, Value>) -> Value {
        let mut object = Map::new();
        object.insert("workload".into(), json!(self.workload));
        object.insert("ok".into(), json!(self.passed()));
        object.insert("problems".into(), json!(self.problems));
        for (key, value) in context {
            object.insert(key.clone(), value.clone());
        }
        for (key, value) in &self.entries {
            object.insert(key.clone(), value.clone());
        }
        Value::Object(object)
    }

    /// The table for people.
    pub fn table(&self) -> String {
        let width = self.entries.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = format!("== {} ==\n", self.workload);
        for (key, value) in &self.entries {
            out.push_str(&format!("  {key:<width$}  {}\n", human(value)));
        }
        if self.passed() {
            out.push_str("  result: ok\n");
        } else {
            for problem in &self.problems {
                out.push_str(&format!("  FAILED: {problem}\n"));
            }
        }
        out
    }
}

fn human(value: &Value) -> String {
    match value {
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:.3}"),
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| format!("{k}={}", human(v)))
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    }
}

/// Facts about this run shared by every report: the command, the time, the machine.
pub fn context(transport: &str, target: &str, label: Option<&str>) -> Map<String, Value> {
    let mut map = Map::new();
    let command: Vec<String> = std::env::args().collect();
    map.insert("command".into(), json!(command.join(" ")));
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    map.insert("unix_time".into(), json!(unix));
    map.insert("transport".into(), json!(transport));
    map.insert("server".into(), json!(target));
    map.insert(
        "cores".into(),
        json!(std::thread::available_parallelism().map_or(0, |n| n.get())),
    );
    if let Some(label) = label {
        map.insert("label".into(), json!(label));
    }
    map
}

/// Appends one JSON line to `path`.
pub fn append(path: &Path, line: &Value) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    writeln!(file, "{line}")
}

/// A latency histogram in microseconds.
pub fn histogram() -> Histogram<u64> {
    // 1 µs to 10 minutes at 3 significant digits; bounds are constants, so this succeeds.
    Histogram::new_with_bounds(1, 600_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).expect("3 significant digits are valid"))
}

/// Records `elapsed` in `histogram` (in µs, clamped into its range).
pub fn record(histogram: &mut Histogram<u64>, elapsed: Duration) {
    let micros = (elapsed.as_micros() as u64).clamp(1, histogram.high());
    histogram.saturating_record(micros);
}

/// The percentiles of a latency histogram, in milliseconds.
pub fn latency_json(histogram: &Histogram<u64>) -> Value {
    let ms = |micros: u64| (micros as f64 / 1000.0 * 1000.0).round() / 1000.0;
    json!({
        "count": histogram.len(),
        "p50_ms": ms(histogram.value_at_quantile(0.50)),
        "p90_ms": ms(histogram.value_at_quantile(0.90)),
        "p99_ms": ms(histogram.value_at_quantile(0.99)),
        "p999_ms": ms(histogram.value_at_quantile(0.999)),
        "max_ms": ms(histogram.max()),
    })
}

/// `count / duration`, rounded to a whole rate.
pub fn rate(count: u64, duration: Duration) -> f64 {
    if duration.is_zero() {
        return 0.0;
    }
    (count as f64 / duration.as_secs_f64()).round()
}

/// Seconds, rounded to the millisecond.
pub fn secs(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_is_a_table_and_a_json_line() {
        let mut report = Report::new("online");
        report.set("delivered_per_sec", 51234.0);
        report.set("lost", 0);
        report.set("lost", 2);
        report.problem("2 messages lost");
        let context = context("wire", "started", Some("test"));
        let line = report.to_json(&context);
        assert_eq!(line["workload"], "online");
        assert_eq!(line["ok"], false);
        assert_eq!(line["lost"], 2);
        assert_eq!(line["transport"], "wire");
        let table = report.table();
        assert!(table.contains("delivered_per_sec  51234.000"), "{table}");
        assert!(table.contains("FAILED: 2 messages lost"), "{table}");
        assert!(!line.to_string().contains('\n'));
    }

    #[test]
    fn latencies_are_reported_in_milliseconds() {
        let mut h = histogram();
        for micros in [100, 200, 300, 400, 1_500] {
            record(&mut h, Duration::from_micros(micros));
        }
        let json = latency_json(&h);
        assert_eq!(json["count"], 5);
        assert_eq!(json["p50_ms"], 0.3);
        assert!(json["max_ms"].as_f64().unwrap() >= 1.5);
        assert_eq!(rate(10, Duration::from_millis(500)), 20.0);
        assert_eq!(rate(10, Duration::ZERO), 0.0);
    }
}
