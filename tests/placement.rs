//! Process-level tests of placement and dependencies (issue 18): weights, tags and
//! `after` over real gossip between three `starling run` processes.

use std::path::Path;
use std::time::Duration;

use starling::{Clock, SystemClock, UnixMillis};

mod common;
use common::{
    Proc, free_port, free_tcp_port, http_get, metric, read_runs, sleep_until, spawn_peer_with,
};

const NAMES: [&str; 3] = ["a", "b", "c"];

/// Starts a, b and c seeding each other, each with its API (for `/metrics`) and `extra[i]`.
fn three(dir: &Path, jobs: &Path, extra: [&[&str]; 3]) -> (Vec<Proc>, [u16; 3]) {
    let ports = [free_port(), free_port(), free_port()];
    let apis = [free_tcp_port(), free_tcp_port(), free_tcp_port()];
    let peers = (0..3)
        .map(|i| {
            let seeds: Vec<u16> = (0..3).filter(|&k| k != i).map(|k| ports[k]).collect();
            let api = format!("127.0.0.1:{}", apis[i]);
            let mut flags = vec!["--api", api.as_str()];
            flags.extend_from_slice(extra[i]);
            spawn_peer_with(
                NAMES[i],
                ports[i],
                &seeds,
                jobs,
                &dir.join(format!("{}.log", NAMES[i])),
                &flags,
            )
        })
        .collect();
    (peers, apis)
}

/// Polls node `api`'s metrics (every 100 ms, for at most `secs`) until `done` holds.
fn wait_metrics(api: u16, secs: u64, done: impl Fn(&str) -> bool) -> String {
    let mut last = String::new();
    for _ in 0..secs * 10 {
        if let Some(m) = http_get(api, "/metrics") {
            if done(&m) {
                return m;
            }
            last = m;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("metrics of :{api} never got there:\n{last}");
}

#[test]
fn weights_1_1_2_give_the_heavy_node_half_of_600_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::new();
    for j in 0..600 {
        // Hourly: nothing runs during the test; ownership is what is measured.
        text.push_str(&format!(
            "[[jobs]]\nname = \"job-{j:03}\"\nschedule = \"0 0 * * * *\"\ncommand = \"true\"\n\n"
        ));
    }
    let jobs = dir.path().join("jobs.toml");
    std::fs::write(&jobs, text).unwrap();
    let (mut peers, apis) = three(
        dir.path(),
        &jobs,
        [&["--weight", "1"], &[], &["--weight", "2"]],
    );
    // Each node counts the jobs it owns in its own view, with the weights it heard in
    // gossip: once all three see three members, the counts must add up to 600.
    let owned: Vec<f64> = apis
        .iter()
        .map(|&api| {
            let m = wait_metrics(api, 20, |m| metric(m, "starling_members") == Some(3.0));
            metric(&m, "starling_jobs_owned").unwrap()
        })
        .collect();
    for p in &mut peers {
        assert!(p.terminate().success());
    }
    eprintln!("jobs owned by a (1), b (1), c (2): {owned:?}");
    assert_eq!(owned.iter().sum::<f64>(), 600.0, "owned: {owned:?}");
    let heavy = owned[2] / 600.0;
    assert!(
        (0.45..=0.55).contains(&heavy),
        "c (weight 2) owns {heavy:.3} of the jobs; owned: {owned:?}"
    );
    // The two light nodes share the rest about evenly.
    assert!((owned[0] - owned[1]).abs() < 60.0, "owned: {owned:?}");
}

#[test]
fn a_constrained_job_runs_only_on_the_tagged_node_and_is_unplaceable_once_it_dies() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("runs.txt");
    let line = format!(
        "command = \"echo $STARLING_NODE_ID $STARLING_JOB $STARLING_SCHEDULED_AT_MS >> {}\"\n",
        out.display()
    );
    let mut text = format!(
        "[[jobs]]\nname = \"gpu-job\"\nschedule = \"@every 1s\"\n{line}constraints = {{ gpu = true }}\n\n"
    );
    // Unconstrained jobs alongside, which keep running everywhere.
    for j in 0..4 {
        text.push_str(&format!(
            "[[jobs]]\nname = \"free-{j}\"\nschedule = \"@every 1s\"\n{line}\n"
        ));
    }
    let jobs = dir.path().join("jobs.toml");
    std::fs::write(&jobs, text).unwrap();
    let (mut peers, apis) = three(dir.path(), &jobs, [&[], &[], &["--tag", "gpu=true"]]);
    for &api in &apis {
        wait_metrics(api, 20, |m| metric(m, "starling_members") == Some(3.0));
    }
    sleep_until(SystemClock.now().saturating_add(Duration::from_secs(3)));
    // 600 ms past a second boundary: the tagged node's last run is done.
    sleep_until(UnixMillis((SystemClock.now().0 / 1000 + 1) * 1000 + 600));
    peers[2].kill9();
    let killed = SystemClock.now().0;
    // Its death is seen, and the job's slots are reported by one survivor.
    let reported: Vec<f64> = apis[..2]
        .iter()
        .map(|&api| {
            let m = wait_metrics(api, 20, |m| {
                metric(m, "starling_members") == Some(2.0)
                    && metric(m, "starling_jobs_unplaceable") == Some(1.0)
            });
            metric(&m, "starling_slots_unplaceable_total").unwrap_or(0.0)
        })
        .collect();
    // The API says so too, and names no owner.
    let job = http_get(apis[0], "/v1/jobs/gpu-job").unwrap();
    assert!(
        job.contains("\"unplaceable\":true") && job.contains("\"owner\":null"),
        "{job}"
    );
    std::thread::sleep(Duration::from_secs(3));
    let reported_after: Vec<f64> = apis[..2]
        .iter()
        .map(|&api| {
            let m = http_get(api, "/metrics").unwrap();
            metric(&m, "starling_slots_unplaceable_total").unwrap_or(0.0)
        })
        .collect();
    for p in &mut peers[..2] {
        assert!(p.terminate().success());
    }
    let runs = read_runs(&out);
    let gpu: Vec<(&i64, &Vec<String>)> = runs
        .iter()
        .filter(|((job, _), _)| job == "gpu-job")
        .map(|((_, slot), nodes)| (slot, nodes))
        .collect();
    assert!(gpu.len() >= 3, "gpu-job ran {} slots: {runs:?}", gpu.len());
    for (slot, nodes) in &gpu {
        assert_eq!(nodes, &&vec!["c".to_string()], "slot {slot}");
        assert!(
            **slot < killed,
            "slot {slot} ran after c was killed at {killed}"
        );
    }
    // The other jobs kept running on the survivors.
    assert!(
        runs.iter()
            .any(|((job, slot), _)| job.starts_with("free-") && *slot > killed + 3_000),
        "unconstrained jobs stopped"
    );
    // Exactly one survivor (the stand-in) counts the job's slots, about one a second.
    let gained: Vec<f64> = (0..2).map(|i| reported_after[i] - reported[i]).collect();
    assert!(
        gained.iter().filter(|&&g| g > 0.0).count() == 1 && gained.iter().sum::<f64>() >= 2.0,
        "unplaceable slots counted: before {reported:?}, after {reported_after:?}"
    );
    let logs: String = ["a", "b"]
        .iter()
        .map(|n| std::fs::read_to_string(dir.path().join(format!("{n}.log"))).unwrap())
        .collect();
    assert!(logs.contains("job unplaceable"), "{logs}");
}

/// Lines a job appended: (node, fire id, slot), in file order.
fn read_lines(path: &Path) -> Vec<(String, u64, i64)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(f.len(), 3, "malformed line {line:?}");
            (
                f[0].to_string(),
                u64::from_str_radix(f[1], 16).unwrap(),
                f[2].parse().unwrap(),
            )
        })
        .collect()
}

/// Polls `path` (every 20 ms, for at most `secs`) until `done` holds of its lines.
fn wait_lines(
    path: &Path,
    secs: u64,
    done: impl Fn(&[(String, u64, i64)]) -> bool,
) -> Vec<(String, u64, i64)> {
    for _ in 0..secs * 50 {
        let lines = read_lines(path);
        if done(&lines) {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{} never got there: {:?}", path.display(), read_lines(path));
}

#[test]
fn a_two_step_pipeline_runs_the_child_once_per_parent_success_across_a_kill_of_its_owner() {
    use starling::core::after::child_fire_id;
    let dir = tempfile::tempdir().unwrap();
    let (extract, load) = (dir.path().join("extract.txt"), dir.path().join("load.txt"));
    let line = |out: &Path| {
        format!(
            "echo $STARLING_NODE_ID $STARLING_FIRE_ID $STARLING_SCHEDULED_AT_MS >> {}",
            out.display()
        )
    };
    // extract runs on a (the only `role = extract` node); load after it, on b or c, so the
    // kill of load's owner leaves extract running.
    let text = format!(
        "[[jobs]]\nname = \"extract\"\nschedule = \"@every 1s\"\ncommand = \"{}\"\nconstraints = {{ role = \"extract\" }}\n\n\
         [[jobs]]\nname = \"load\"\nafter = [\"extract\"]\ncommand = \"{}; sleep 0.3\"\nconstraints = {{ role = \"load\" }}\n",
        line(&extract),
        line(&load)
    );
    let jobs = dir.path().join("jobs.toml");
    std::fs::write(&jobs, text).unwrap();
    let (mut peers, apis) = three(
        dir.path(),
        &jobs,
        [
            &["--tag", "role=extract"],
            &["--tag", "role=load"],
            &["--tag", "role=load"],
        ],
    );
    for &api in &apis {
        wait_metrics(api, 20, |m| metric(m, "starling_members") == Some(3.0));
    }
    let before = wait_lines(&load, 20, |l| l.len() >= 3);
    // Kill load's owner right after it started a run (its claim is out, the next parent
    // success is a second away): that run must not run again on the survivor.
    let owner = before.last().unwrap().0.clone();
    let n = before.len();
    wait_lines(&load, 10, |l| l.len() > n && l.last().unwrap().0 == owner);
    let victim = NAMES.iter().position(|x| *x == owner).unwrap();
    assert_ne!(victim, 0, "load ran on the extract node");
    peers[victim].kill9();
    let killed = SystemClock.now().0;
    let survivor = NAMES[3 - victim].to_string();
    wait_lines(&load, 30, |l| {
        l.iter().filter(|r| r.0 == survivor).count() >= 4
    });
    // Stop the parent first (a graceful leave publishes its last requests), then let the
    // survivor run what is left.
    assert!(peers[0].terminate().success());
    std::thread::sleep(Duration::from_secs(3));
    assert!(peers[3 - victim].terminate().success());

    let parents = read_lines(&extract);
    let children = read_lines(&load);
    let last_parent = parents.iter().map(|p| p.2).max().unwrap();
    let mut by_id: std::collections::BTreeMap<u64, Vec<&(String, u64, i64)>> =
        std::collections::BTreeMap::new();
    for c in &children {
        by_id.entry(c.1).or_default().push(c);
    }
    let mut derived = std::collections::BTreeSet::new();
    for (_, id, slot) in &parents {
        let child = child_fire_id(starling::FireId(*id), &starling::JobId::new("load")).0;
        derived.insert(child);
        // The last parent slots may still be on their way when the survivor stopped.
        if *slot + 2_000 > last_parent {
            continue;
        }
        let runs = by_id.get(&child).cloned().unwrap_or_default();
        assert_eq!(
            runs.len(),
            1,
            "extract slot {slot} (fire id {id:016x}) gave {} load runs: {runs:?}; killed {owner} at {killed}",
            runs.len()
        );
        assert_eq!(runs[0].2, *slot, "the child takes its parent's slot");
    }
    for c in &children {
        assert!(
            derived.contains(&c.1),
            "load ran without a parent success: {c:?}"
        );
    }
    assert!(
        children.iter().any(|c| c.0 == owner) && children.iter().any(|c| c.0 == survivor),
        "{children:?}"
    );
}
