//! `corvid-bench plot`: an SVG of the latest result of each workload, next to its target.
//!
//! Hand-written SVG keeps the bench free of a plotting stack: four bar panels
//! (throughput, latency on a log scale, memory per connection, recovery time), each bar
//! labelled with its value and each target drawn as a dashed line.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::Value;

/// One bar: its label, its value, and the target it is held to (if any).
struct Bar {
    label: String,
    value: f64,
    target: Option<Target>,
}

#[derive(Clone, Copy)]
enum Target {
    /// The value should be at least this.
    AtLeast(f64),
    /// The value should be at most this.
    AtMost(f64),
}

impl Target {
    fn value(self) -> f64 {
        match self {
            Target::AtLeast(v) | Target::AtMost(v) => v,
        }
    }

    fn met(self, value: f64) -> bool {
        match self {
            Target::AtLeast(t) => value >= t,
            Target::AtMost(t) => value <= t,
        }
    }
}

struct Panel {
    title: &'static str,
    unit: &'static str,
    log: bool,
    bars: Vec<Bar>,
}

/// The newest passing run of each workload (or the newest run, if none passed) in a
/// results file's lines.
pub fn latest(lines: &str) -> BTreeMap<String, Value> {
    let mut runs: BTreeMap<String, Value> = BTreeMap::new();
    for line in lines.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(run) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let Some(workload) = run["workload"].as_str().map(str::to_string) else {
            continue;
        };
        let replace = match runs.get(&workload) {
            None => true,
            Some(old) => run["ok"] == true || old["ok"] != true,
        };
        if replace {
            runs.insert(workload, run);
        }
    }
    runs
}

fn number(run: Option<&Value>, path: &[&str]) -> Option<f64> {
    let mut value = run?;
    for key in path {
        value = value.get(key)?;
    }
    value.as_f64()
}

fn panels(runs: &BTreeMap<String, Value>) -> Vec<Panel> {
    let online = runs.get("online");
    let offline = runs.get("offline");
    let unloaded = runs.get("unloaded");
    let bar = |label: &str, value: Option<f64>, target| {
        value.map(|value| Bar {
            label: label.to_string(),
            value,
            target,
        })
    };
    let throughput = [
        bar(
            "online delivered",
            number(online, &["delivered_per_sec"]),
            Some(Target::AtLeast(50_000.0)),
        ),
        bar(
            "offline send",
            number(offline, &["sends_per_sec"]),
            Some(Target::AtLeast(30_000.0)),
        ),
        bar(
            "offline drain",
            number(offline, &["drain_per_sec"]),
            Some(Target::AtLeast(50_000.0)),
        ),
        bar(
            "recovery load",
            number(runs.get("recovery"), &["sends_per_sec"]),
            None,
        ),
    ];
    let mut latency = Vec::new();
    for (name, run, targets) in [
        ("online", online, [None, None, None]),
        (
            "unloaded",
            unloaded,
            [Some(Target::AtMost(0.5)), Some(Target::AtMost(2.0)), None],
        ),
    ] {
        for (quantile, target) in ["p50", "p99", "p999"].into_iter().zip(targets) {
            latency.push(bar(
                &format!("{name} {quantile}"),
                number(run, &["latency", &format!("{quantile}_ms")]),
                target,
            ));
        }
    }
    vec![
        Panel {
            title: "Throughput",
            unit: "messages/s",
            log: false,
            bars: throughput.into_iter().flatten().collect(),
        },
        Panel {
            title: "End-to-end latency (send to push)",
            unit: "ms, log scale",
            log: true,
            bars: latency.into_iter().flatten().collect(),
        },
        Panel {
            title: "Server memory per idle connection",
            unit: "KiB",
            log: false,
            bars: [bar(
                "connections",
                number(runs.get("connections"), &["rss_kib_per_connection"]),
                Some(Target::AtMost(10.0)),
            )]
            .into_iter()
            .flatten()
            .collect(),
        },
        Panel {
            title: "Restart to first served request",
            unit: "s",
            log: false,
            bars: [bar(
                "recovery",
                number(runs.get("recovery"), &["first_request_secs"]),
                Some(Target::AtMost(2.0)),
            )]
            .into_iter()
            .flatten()
            .collect(),
        },
    ]
}

const PANEL_W: f64 = 520.0;
const PANEL_H: f64 = 320.0;

/// The SVG for the latest runs in `lines` (a results file's contents).
pub fn svg(lines: &str) -> String {
    let runs = latest(lines);
    let mut out = String::new();
    let (width, height) = (2.0 * PANEL_W + 30.0, 2.0 * PANEL_H + 70.0);
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="15" y="24" font-size="16" font-weight="bold">Corvid benchmarks: latest run of each workload (dashed line: target; green met, red missed)</text>"#
    );
    for (i, panel) in panels(&runs).iter().enumerate() {
        let x = 10.0 + (i % 2) as f64 * (PANEL_W + 10.0);
        let y = 40.0 + (i / 2) as f64 * (PANEL_H + 10.0);
        draw_panel(&mut out, panel, x, y);
    }
    out.push_str("</svg>\n");
    out
}

fn draw_panel(out: &mut String, panel: &Panel, x: f64, y: f64) {
    let _ = writeln!(
        out,
        r##"<rect x="{x}" y="{y}" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="#ccc"/>"##
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" font-weight="bold">{} ({})</text>"#,
        x + 10.0,
        y + 18.0,
        escape(panel.title),
        escape(panel.unit)
    );
    if panel.bars.is_empty() {
        let _ = writeln!(
            out,
            r##"<text x="{}" y="{}" fill="#888">no result yet</text>"##,
            x + 10.0,
            y + 50.0
        );
        return;
    }
    let (left, top, bottom) = (x + 60.0, y + 35.0, y + PANEL_H - 45.0);
    let plot_w = PANEL_W - 80.0;
    let max = panel
        .bars
        .iter()
        .flat_map(|b| [Some(b.value), b.target.map(Target::value)])
        .flatten()
        .fold(0.0f64, f64::max)
        * 1.15;
    let scale = |v: f64| -> f64 {
        if panel.log {
            let (lo, hi) = (0.01f64.log10(), max.max(0.1).log10());
            let t = (v.max(0.01).log10() - lo) / (hi - lo);
            bottom - t.clamp(0.0, 1.0) * (bottom - top)
        } else {
            bottom - (v / max.max(f64::MIN_POSITIVE)) * (bottom - top)
        }
    };
    // Axis and a few gridlines.
    let ticks: Vec<f64> = if panel.log {
        [0.01, 0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0]
            .into_iter()
            .filter(|t| *t <= max)
            .collect()
    } else {
        (0..=4).map(|i| max / 1.15 * f64::from(i) / 4.0).collect()
    };
    for tick in ticks {
        let ty = scale(tick);
        let _ = writeln!(
            out,
            r##"<line x1="{left}" y1="{ty:.1}" x2="{:.1}" y2="{ty:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#555">{}</text>"##,
            left + plot_w,
            left - 4.0,
            ty + 4.0,
            short(tick)
        );
    }
    let _ = writeln!(
        out,
        r##"<line x1="{left}" y1="{bottom}" x2="{:.1}" y2="{bottom}" stroke="#333"/>"##,
        left + plot_w
    );
    let slot = plot_w / panel.bars.len() as f64;
    let bar_w = (slot * 0.6).min(70.0);
    for (i, bar) in panel.bars.iter().enumerate() {
        let cx = left + slot * (i as f64 + 0.5);
        let top_y = scale(bar.value);
        let color = match bar.target {
            Some(target) if target.met(bar.value) => "#2e7d32",
            Some(_) => "#c62828",
            None => "#546e7a",
        };
        let _ = writeln!(
            out,
            r#"<rect x="{:.1}" y="{top_y:.1}" width="{bar_w:.1}" height="{:.1}" fill="{color}"/>"#,
            cx - bar_w / 2.0,
            (bottom - top_y).max(0.0)
        );
        let _ = writeln!(
            out,
            r#"<text x="{cx:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            top_y - 4.0,
            short(bar.value)
        );
        let _ = writeln!(
            out,
            r#"<text x="{cx:.1}" y="{:.1}" text-anchor="middle" font-size="11">{}</text>"#,
            bottom + 16.0,
            escape(&bar.label)
        );
        if let Some(target) = bar.target {
            let ty = scale(target.value());
            let _ = writeln!(
                out,
                r##"<line x1="{:.1}" y1="{ty:.1}" x2="{:.1}" y2="{ty:.1}" stroke="#000" stroke-dasharray="4 3"/><text x="{:.1}" y="{:.1}" font-size="10" fill="#000">{}</text>"##,
                cx - slot / 2.0 + 4.0,
                cx + slot / 2.0 - 4.0,
                cx - slot / 2.0 + 4.0,
                ty - 3.0,
                match target {
                    Target::AtLeast(v) => format!("≥ {}", short(v)),
                    Target::AtMost(v) => format!("≤ {}", short(v)),
                }
            );
        }
    }
}

/// A compact number: 51234 → "51.2k", 0.4567 → "0.457".
fn short(v: f64) -> String {
    if v >= 1_000_000.0 {
        format!("{:.2}M", v / 1_000_000.0)
    } else if v >= 10_000.0 {
        format!("{:.1}k", v / 1000.0)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_passing_run_of_each_workload_is_plotted() {
        let lines = [
            r#"{"workload":"online","ok":true,"delivered_per_sec":40000,"latency":{"p50_ms":2.0,"p99_ms":9.0,"p999_ms":20.0}}"#,
            r#"{"workload":"online","ok":false,"delivered_per_sec":1}"#,
            "not json",
            r#"{"workload":"unloaded","ok":true,"latency":{"p50_ms":0.4,"p99_ms":3.0,"p999_ms":5.0}}"#,
            r#"{"workload":"connections","ok":true,"rss_kib_per_connection":7.5}"#,
        ]
        .join("\n");
        let runs = latest(&lines);
        assert_eq!(runs["online"]["delivered_per_sec"], 40000);
        let svg = svg(&lines);
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("online delivered"));
        assert!(
            svg.contains(">40.0k<"),
            "the bar is labelled with its value"
        );
        assert!(svg.contains("#c62828"), "a missed target is red");
        assert!(svg.contains("#2e7d32"), "a met target is green");
        assert!(svg.contains("no result yet"), "recovery has no run");
        assert_eq!(short(51234.0), "51.2k");
        assert_eq!(short(0.4567), "0.457");
    }
}
