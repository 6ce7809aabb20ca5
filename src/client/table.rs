//! Readable tables for the CLI client.

use crate::api::{JobView, JobsPage, MembersPage, RunsPage};

/// Lays out `rows` under `headers`, columns padded to their widest cell.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

fn or_dash(v: Option<&str>) -> String {
    v.filter(|s| !s.is_empty()).unwrap_or("-").to_string()
}

/// `starling members`.
pub fn print_members(page: &MembersPage) -> String {
    let rows: Vec<Vec<String>> = page
        .members
        .iter()
        .map(|m| {
            vec![
                if m.is_self {
                    format!("{} (this)", m.id)
                } else {
                    m.id.clone()
                },
                m.address.clone(),
                m.state.clone(),
                m.generation.to_string(),
                m.jobs_owned.to_string(),
                or_dash(m.api.as_deref()),
            ]
        })
        .collect();
    table(
        &["ID", "ADDRESS", "STATE", "GENERATION", "JOBS", "API"],
        &rows,
    )
}

/// `starling jobs ls`.
pub fn print_jobs(page: &JobsPage) -> String {
    let rows: Vec<Vec<String>> = page
        .jobs
        .iter()
        .map(|j| {
            vec![
                j.name.clone(),
                schedule_or_after(&j.definition),
                or_dash(j.owner.as_deref()),
                j.source.to_string(),
                if j.paused { "paused" } else { "active" }.into(),
                or_dash(j.next.first().map(String::as_str)),
                if j.conflicts.is_empty() {
                    "-".into()
                } else {
                    j.conflicts.len().to_string()
                },
            ]
        })
        .collect();
    let mut out = table(
        &[
            "NAME",
            "SCHEDULE",
            "OWNER",
            "SOURCE",
            "STATE",
            "NEXT",
            "CONFLICTS",
        ],
        &rows,
    );
    if !page.conflicts.is_empty() {
        out.push_str(&format!(
            "\n{} conflict(s): `starling jobs show NAME` or --json for details\n",
            page.conflicts.len()
        ));
    }
    out
}

/// A job's schedule, or `after extract, clean` for a job that runs after others.
fn schedule_or_after(d: &crate::core::job::RawJob) -> String {
    match &d.after {
        Some(parents) => format!("after {}", parents.join(", ")),
        None => or_dash(d.schedule.as_deref()),
    }
}

/// `starling jobs show NAME`.
pub fn print_job(job: &JobView) -> String {
    let d = &job.definition;
    let mut out = String::new();
    let mut field = |k: &str, v: String| out.push_str(&format!("{k:<16}{v}\n"));
    field("name", job.name.clone());
    field("schedule", schedule_or_after(d));
    field(
        "timezone",
        d.timezone.clone().unwrap_or_else(|| "UTC".into()),
    );
    field("command", or_dash(d.command.as_deref()));
    for (k, v) in [
        ("timeout", &d.timeout),
        ("misfire", &d.misfire),
        ("catch_up_window", &d.catch_up_window),
        ("overlap", &d.overlap),
    ] {
        if let Some(v) = v {
            field(k, v.clone());
        }
    }
    if let Some(r) = d.retries {
        field("retries", r.to_string());
    }
    field("source", job.source.to_string());
    field("version", or_dash(job.version.as_deref()));
    field("owner", or_dash(job.owner.as_deref()));
    field("state", if job.paused { "paused" } else { "active" }.into());
    field(
        "next",
        if job.next.is_empty() {
            "-".into()
        } else {
            job.next.join(", ")
        },
    );
    for c in &job.conflicts {
        field("conflict", c.to_string());
    }
    if let Some(runs) = &job.last_runs {
        out.push_str("\nlast runs:\n");
        out.push_str(&runs_table(runs));
    }
    out
}

fn runs_table(runs: &[crate::history::RunEntry]) -> String {
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                r.slot.clone(),
                r.job.clone(),
                r.node.clone(),
                if r.slots > 1 {
                    format!("{} ({} slots)", r.outcome, r.slots)
                } else {
                    r.outcome.to_string()
                },
                r.exit_code.map_or("-".into(), |c| c.to_string()),
                r.duration_ms.map_or("-".into(), |d| format!("{d}ms")),
                r.attempts.to_string(),
                r.fire_id.clone(),
            ]
        })
        .collect();
    table(
        &[
            "SLOT", "JOB", "NODE", "OUTCOME", "EXIT", "DURATION", "ATTEMPTS", "FIRE ID",
        ],
        &rows,
    )
}

/// `starling runs`.
pub fn print_runs(page: &RunsPage) -> String {
    let mut out = runs_table(&page.runs);
    for n in page.nodes.iter().filter(|n| !n.answered) {
        out.push_str(&format!(
            "\nnote: runs of {} are missing: {}\n",
            n.node,
            n.error.as_deref().unwrap_or("no answer")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_and_the_last_is_not_padded() {
        let t = table(
            &["A", "LONGER"],
            &[
                vec!["wide-cell".into(), "x".into()],
                vec!["y".into(), "z".into()],
            ],
        );
        assert_eq!(t, "A          LONGER\nwide-cell  x\ny          z\n");
    }
}
