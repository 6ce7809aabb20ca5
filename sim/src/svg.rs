//! The timeline picture: one lane per node over simulated time.

use std::fmt::Write as _;

use crate::check::Findings;
use crate::scenario::Fault;
use crate::world::{EPOCH, SimResult, node_name};

const LANE: f64 = 46.0;
const LEFT: f64 = 70.0;
const WIDTH: f64 = 1400.0;
const TOP: f64 = 40.0;

/// Draws the run: runs as ticks, crashes, restarts, leaves, stalls, partitions, loss bursts
/// and clock jumps, and every duplicate or miss in red.
pub fn timeline(
    result: &SimResult,
    findings: &Findings,
    nodes: usize,
    end_ms: i64,
    title: &str,
) -> String {
    let scale = (WIDTH - LEFT - 20.0) / end_ms.max(1) as f64;
    let x = |ms: i64| LEFT + ms as f64 * scale;
    let lane_y = |n: usize| TOP + 30.0 + n as f64 * LANE;
    let height = lane_y(nodes) + 40.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="monospace" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="10" y="18" font-size="13">{}</text>"#,
        escape(title)
    );
    // Time axis, every 10% of the run.
    for k in 0..=10 {
        let ms = end_ms * k / 10;
        let _ = writeln!(
            s,
            r##"<line x1="{0:.1}" y1="{1}" x2="{0:.1}" y2="{2}" stroke="#eee"/><text x="{0:.1}" y="{3}" text-anchor="middle" fill="#666">{4}s</text>"##,
            x(ms),
            TOP + 20.0,
            height - 25.0,
            height - 10.0,
            ms / 1000
        );
    }
    // Missed slots: a red lane on top.
    let _ = writeln!(
        s,
        r##"<text x="10" y="{}" fill="#c00">missed</text>"##,
        TOP + 14.0
    );
    for m in &findings.missed {
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{}" fill="#c00" text-anchor="middle" font-size="14">x<title>missed {} {}</title></text>"##,
            x(m.at_ms),
            TOP + 18.0,
            escape(&m.job),
            m.slot
        );
    }
    for n in 0..nodes {
        let y = lane_y(n);
        let _ = writeln!(
            s,
            r##"<text x="10" y="{}">{}</text><line x1="{LEFT}" y1="{y}" x2="{}" y2="{y}" stroke="#ccc"/>"##,
            y + 4.0,
            node_name(n),
            WIDTH - 20.0
        );
    }
    // Faults first, as backgrounds and markers.
    let mut partition_start: Option<(i64, Vec<usize>)> = None;
    let mut loss_start: Option<i64> = None;
    for a in &result.applied {
        match &a.fault {
            Fault::Crash(n) => marker(&mut s, x(a.at), lane_y(*n), "#c00", "crash"),
            Fault::Restart(n) => marker(&mut s, x(a.at), lane_y(*n), "#080", "restart"),
            Fault::Join(n) => marker(&mut s, x(a.at), lane_y(*n), "#080", "join"),
            Fault::Leave(n) => marker(&mut s, x(a.at), lane_y(*n), "#06c", "leave"),
            Fault::Place { node, weight, zone } => marker(
                &mut s,
                x(a.at),
                lane_y(*node),
                "#088",
                &format!("weight {weight}, zone {zone}"),
            ),
            Fault::Impostor { node, of } => marker(
                &mut s,
                x(a.at),
                lane_y(*node),
                "#c06",
                &format!("impostor of n{of}"),
            ),
            Fault::ClockJump { node, delta_ms } => marker(
                &mut s,
                x(a.at),
                lane_y(*node),
                "#80c",
                &format!("clock {delta_ms:+}ms"),
            ),
            Fault::Stall { node, ms } => band(
                &mut s,
                x(a.at),
                x(a.at + *ms as i64),
                lane_y(*node) - 12.0,
                24.0,
                "#fc0",
                "stall",
            ),
            Fault::Pause { node, ms, .. } => band(
                &mut s,
                x(a.at),
                x(a.at + *ms as i64),
                lane_y(*node) - 12.0,
                24.0,
                "#f6c",
                "paused (SIGSTOP)",
            ),
            Fault::Partition { a: side, .. } => partition_start = Some((a.at, side.clone())),
            Fault::Heal => {
                if let Some((from, side)) = partition_start.take() {
                    for n in side {
                        band(
                            &mut s,
                            x(from),
                            x(a.at),
                            lane_y(n) - 16.0,
                            32.0,
                            "#f90",
                            "partitioned",
                        );
                    }
                }
            }
            Fault::Loss(p) if *p > 0.0 => loss_start = Some(a.at),
            Fault::Loss(_) => {
                if let Some(from) = loss_start.take() {
                    band(
                        &mut s,
                        x(from),
                        x(a.at),
                        TOP + 20.0,
                        lane_y(nodes) - TOP - 30.0,
                        "#999",
                        "loss burst",
                    );
                }
            }
        }
    }
    // Runs as ticks; duplicates in red.
    let dup: std::collections::BTreeSet<(&str, &str)> = findings
        .duplicates
        .iter()
        .map(|d| (d.job.as_str(), d.slot.as_str()))
        .collect();
    for r in &result.runs {
        let slot = starling::UnixMillis(r.slot).to_rfc3339();
        let is_dup = dup.contains(&(r.job.as_str(), slot.as_str()));
        let (color, h) = if is_dup {
            ("#c00", 14.0)
        } else {
            ("#579", 6.0)
        };
        let y = lane_y(r.node);
        let _ = writeln!(
            s,
            r#"<line x1="{0:.1}" y1="{1:.1}" x2="{0:.1}" y2="{2:.1}" stroke="{color}"><title>{3} slot {4} started {5}ms late</title></line>"#,
            x(r.started),
            y - h,
            y + h,
            escape(&r.job),
            slot,
            r.started - (r.slot - EPOCH.0)
        );
    }
    let _ = writeln!(s, "</svg>");
    s
}

fn marker(s: &mut String, x: f64, y: f64, color: &str, label: &str) {
    let _ = writeln!(
        s,
        r#"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="{color}" stroke-width="3"/><text x="{:.1}" y="{:.1}" fill="{color}">{}</text>"#,
        y - 18.0,
        y + 18.0,
        x + 3.0,
        y - 8.0,
        escape(label)
    );
}

fn band(s: &mut String, x1: f64, x2: f64, y: f64, h: f64, color: &str, label: &str) {
    let _ = writeln!(
        s,
        r#"<rect x="{x1:.1}" y="{y:.1}" width="{:.1}" height="{h:.1}" fill="{color}" opacity="0.3"><title>{}</title></rect>"#,
        (x2 - x1).max(1.0),
        escape(label)
    );
}

fn escape(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
