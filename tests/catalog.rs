//! The cluster-wide catalog over real UDP: in-process nodes, real chitchat, real `sh -c`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use starling::catalog::{CatalogError, Conflict, Source};
use starling::{
    Clock, FireId, JobSpec, MemberState, Node, NodeConfig, NodeHandle, Overlap, RawJob,
    SystemClock, UnixMillis,
};

mod common;
use common::free_port;

const GOSSIP: Duration = Duration::from_millis(100);

struct Peer {
    name: &'static str,
    port: u16,
}

fn peers(names: [&'static str; 3]) -> [Peer; 3] {
    names.map(|name| Peer {
        name,
        port: free_port(),
    })
}

fn config(p: &Peer, all: &[Peer], data_dir: Option<&Path>) -> NodeConfig {
    let mut c = NodeConfig::new(p.name, format!("127.0.0.1:{}", p.port).parse().unwrap());
    c.seeds = all
        .iter()
        .filter(|o| o.port != p.port)
        .map(|o| format!("127.0.0.1:{}", o.port).parse().unwrap())
        .collect();
    c.gossip_interval = GOSSIP;
    c.data_dir = data_dir.map(Path::to_path_buf);
    c
}

/// A shell command that appends `node job slot fire-id tag` to `out`.
fn append(out: &Path, tag: &str) -> String {
    format!(
        "echo $STARLING_NODE_ID $STARLING_JOB $STARLING_SCHEDULED_AT_MS $STARLING_FIRE_ID {tag} >> {}",
        out.display()
    )
}

fn raw(name: &str, schedule: &str, command: &str) -> RawJob {
    RawJob {
        name: Some(name.into()),
        schedule: Some(schedule.into()),
        command: Some(command.into()),
        ..RawJob::default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    node: String,
    job: String,
    slot: i64,
    fire_id: String,
    tag: String,
}

fn lines(out: &Path) -> Vec<Line> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 5, "malformed line {l:?}");
            Line {
                node: f[0].into(),
                job: f[1].into(),
                slot: f[2].parse().unwrap(),
                fire_id: f[3].into(),
                tag: f[4].into(),
            }
        })
        .collect()
}

/// Runs of `job` per slot.
fn by_slot(out: &Path, job: &str) -> BTreeMap<i64, Vec<Line>> {
    let mut m: BTreeMap<i64, Vec<Line>> = BTreeMap::new();
    for l in lines(out).into_iter().filter(|l| l.job == job) {
        m.entry(l.slot).or_default().push(l);
    }
    m
}

fn now() -> UnixMillis {
    SystemClock.now()
}

/// Polls `f` every 50 ms until it returns `Some`, for at most `secs` seconds.
async fn eventually<T>(secs: u64, what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let until = now().saturating_add(Duration::from_secs(secs));
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(now() < until, "not within {secs} s: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn start(p: &Peer, all: &[Peer], data_dir: Option<&Path>, jobs: Vec<JobSpec>) -> NodeHandle {
    Node::builder(config(p, all, data_dir))
        .jobs(jobs)
        .unwrap()
        .start()
        .await
        .unwrap()
}

async fn all_see(nodes: &[&NodeHandle], n: usize) {
    for node in nodes {
        assert!(
            node.wait_for_members(n, Duration::from_secs(15)).await,
            "{} sees {:?}",
            node.node_id(),
            node.members()
        );
    }
}

/// Nodes a, b and c without data dirs or jobs, once each sees the three; with a directory
/// for the test's files.
async fn three_without_data_dirs() -> (tempfile::TempDir, [NodeHandle; 3]) {
    let ps = peers(["a", "b", "c"]);
    let a = start(&ps[0], &ps, None, vec![]).await;
    let b = start(&ps[1], &ps, None, vec![]).await;
    let c = start(&ps[2], &ps, None, vec![]).await;
    all_see(&[&a, &b, &c], 3).await;
    (tempfile::tempdir().unwrap(), [a, b, c])
}

fn assert_once_per_slot(runs: &BTreeMap<i64, Vec<Line>>) {
    for (slot, r) in runs {
        assert_eq!(
            r.len(),
            1,
            "slot {} ran {} times: {r:?}",
            UnixMillis(*slot),
            r.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_job_runs_on_its_owner_outlives_its_acceptor_and_stops_when_deleted() {
    let (dir, [a, b, c]) = three_without_data_dirs().await;
    let out = dir.path().join("runs");

    // 1. Created on a; it runs on its owner.
    let put = a
        .catalog()
        .put_job(raw("dyn", "@every 1s", &append(&out, "v1")))
        .await
        .unwrap();
    assert_eq!(put.source, Source::Api);
    let owner = put.owner.clone().expect("an owner");
    eventually(10, "dyn runs", async || {
        (by_slot(&out, "dyn").len() >= 2).then_some(())
    })
    .await;
    assert!(
        lines(&out).iter().all(|l| l.node == owner.as_str()),
        "dyn ran off its owner {owner}: {:?}",
        lines(&out)
    );

    // 2. b sees it, with the same owner.
    let seen = eventually(5, "b sees dyn", async || b.catalog().job("dyn").await.ok()).await;
    assert_eq!(seen.owner, Some(owner.clone()));
    assert_eq!(seen.version, put.version);
    assert_eq!(seen.definition.schedule.as_deref(), Some("@every 1s"));
    let members = b.catalog().members().await.unwrap();
    assert_eq!(members.len(), 3);
    assert!(members.iter().all(|m| m.state == MemberState::Alive));
    assert_eq!(members.iter().map(|m| m.jobs_owned).sum::<usize>(), 1);
    assert_eq!(
        members.iter().find(|m| m.jobs_owned == 1).map(|m| &m.id),
        Some(&owner)
    );

    // A file job's name cannot be taken through the catalog, nor can an unknown job be
    // deleted; neither changes anything.
    assert!(matches!(
        b.catalog()
            .put_job(raw("bad", "61 * * * * *", "true"))
            .await,
        Err(CatalogError::Invalid(_))
    ));
    assert!(matches!(
        b.catalog().delete_job("nope").await,
        Err(CatalogError::NotFound(_))
    ));

    // 3. Kill a, the node that accepted it: the job keeps running.
    a.abort();
    let killed = now();
    all_see(&[&b, &c], 2).await;
    eventually(15, "dyn runs after a died", async || {
        let late = by_slot(&out, "dyn").range(killed.0 + 3_000..).count();
        (late >= 2).then_some(())
    })
    .await;
    // Someone took over publishing it.
    eventually(10, "a survivor publishes dyn", async || {
        let held =
            b.catalog().stats().await.unwrap().held + c.catalog().stats().await.unwrap().held;
        (held >= 1).then_some(())
    })
    .await;

    // 4. Deleted through c: it stops everywhere.
    c.catalog().delete_job("dyn").await.unwrap();
    let deleted = now();
    for n in [&b, &c] {
        eventually(5, "b and c forget dyn", async || {
            matches!(n.catalog().job("dyn").await, Err(CatalogError::NotFound(_))).then_some(())
        })
        .await;
    }
    // Slots up to 1 s after the delete may still run, or until both survivors were seen
    // to have forgotten it, if gossip took longer on a loaded machine; none later.
    let forgotten = now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let runs = by_slot(&out, "dyn");
    let last = (deleted.0 + 1_000).max(forgotten.0);
    let after: Vec<&i64> = runs.keys().filter(|s| **s > last).collect();
    assert!(after.is_empty(), "dyn ran after its delete: {after:?}");
    assert_once_per_slot(&runs);
    b.shutdown().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_now_runs_once_on_the_owner_and_cancel_kills_the_run() {
    let (dir, [a, b, c]) = three_without_data_dirs().await;
    let out = dir.path().join("runs");

    // A yearly job: its slots never come during the test.
    let long = format!(
        "{}; sleep 30; {}",
        append(&out, "start"),
        append(&out, "end")
    );
    a.catalog()
        .put_job(raw("manual", "0 0 0 1 1 *", &long))
        .await
        .unwrap();
    let owner = eventually(5, "c sees manual", async || {
        c.catalog().job("manual").await.ok()
    })
    .await
    .owner
    .unwrap();
    eventually(5, "b sees manual", async || {
        b.catalog().job("manual").await.ok()
    })
    .await;
    let paused = b.catalog().pause_job("manual").await.unwrap();
    assert!(paused.paused);
    // Asked through c; it runs on the owner, once, with the request's own fire id.
    let id: FireId = c.catalog().run_job("manual").await.unwrap();
    let started = eventually(10, "the run-now run starts", async || {
        lines(&out).into_iter().find(|l| l.tag == "start")
    })
    .await;
    assert_eq!(started.node, owner.as_str());
    assert_eq!(started.fire_id, id.to_string());
    assert_ne!(
        id,
        FireId::of(&"manual".into(), UnixMillis(started.slot)),
        "a run-now fire id is not a slot's"
    );
    // Cancelled through b: the owner kills it, "end" never comes.
    b.catalog().cancel_run(id).await.unwrap();
    let owner_handle = [&a, &b, &c]
        .into_iter()
        .find(|n| *n.node_id() == owner)
        .unwrap();
    eventually(10, "the owner cancels the run", async || {
        (owner_handle.stats().await.cancelled == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let all = lines(&out);
    assert_eq!(all.len(), 1, "{all:?}");
    let mut requested = 0;
    for n in [&a, &b, &c] {
        requested += n.stats().await.requested_runs;
    }
    assert_eq!(requested, 1);
    assert!(matches!(
        a.catalog().run_job("nope").await,
        Err(CatalogError::NotFound(_))
    ));
    for n in [a, b, c] {
        n.shutdown().await;
    }
}

fn file_job(name: &str, schedule: &str, command: &str) -> JobSpec {
    let mut spec = JobSpec::parse(name, schedule).unwrap();
    spec.exec.command = Some(command.into());
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_files_that_disagree_are_reported_and_one_definition_runs_once_per_slot() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("runs");
    let ps = peers(["a", "b", "c"]);
    // a and b define `drift` differently; c's file lacks it and may still own it. Runs may
    // overlap, as in the same test on processes (tests/api.rs): under `forbid` a slot may
    // be skipped behind the late catch-up runs of a node that just started, or behind a
    // run that outlasted a second on a loaded machine (documented), and this test is
    // about drift.
    let drift = |tag: &str| {
        let mut job = file_job("drift", "@every 1s", &append(&out, tag));
        job.overlap = Overlap::Allow;
        vec![job]
    };
    let a = start(&ps[0], &ps, None, drift("A")).await;
    let b = start(&ps[1], &ps, None, drift("B")).await;
    let c = start(&ps[2], &ps, None, vec![]).await;
    all_see(&[&a, &b, &c], 3).await;

    let chosen = eventually(10, "c reports the drift", async || {
        c.catalog()
            .conflicts()
            .await
            .unwrap()
            .into_iter()
            .find_map(|conflict| match conflict {
                Conflict::FileDrift { job, definitions } if job.as_str() == "drift" => {
                    let chosen = definitions.iter().find(|d| d.chosen)?;
                    Some((chosen.nodes.clone(), chosen.definition.command.clone()?))
                }
                _ => None,
            })
    })
    .await;
    let tag = if chosen.1.ends_with(&format!("A >> {}", out.display())) {
        "A"
    } else {
        "B"
    };
    // Every node reports the same conflict and the same choice.
    for n in [&a, &b] {
        let info = n.catalog().job("drift").await.unwrap();
        assert_eq!(info.conflicts.len(), 1, "{:?}", info.conflicts);
        assert_eq!(info.definition.command.as_ref(), Some(&chosen.1));
        assert_eq!(
            info.source,
            Source::File {
                nodes: chosen.0.clone()
            }
        );
    }
    // An API write cannot take the name.
    let e = c
        .catalog()
        .put_job(raw("drift", "@every 1s", "true"))
        .await
        .unwrap_err();
    assert!(matches!(e, CatalogError::FileDefined { .. }), "{e}");

    let from = (now().0 / 1000 + 2) * 1000;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let to = (now().0 / 1000 - 1) * 1000;
    let runs = by_slot(&out, "drift");
    let window: BTreeMap<i64, Vec<Line>> = runs
        .range(from..=to)
        .map(|(k, v)| (*k, v.clone()))
        .collect();
    assert_eq!(
        window.len() as i64,
        (to - from) / 1000 + 1,
        "a slot is missing: {window:?}"
    );
    assert_once_per_slot(&window);
    assert!(
        window.values().flatten().all(|l| l.tag == tag),
        "another definition ran: {window:?}"
    );
    for n in [a, b, c] {
        n.shutdown().await;
    }
}

/// Nodes a, b and c (on new ports) with data dirs `data`, once each sees the three.
async fn three_with_data_dirs(data: &[std::path::PathBuf]) -> [NodeHandle; 3] {
    let ps = peers(["a", "b", "c"]);
    let nodes = [
        start(&ps[0], &ps, Some(&data[0]), vec![]).await,
        start(&ps[1], &ps, Some(&data[1]), vec![]).await,
        start(&ps[2], &ps, Some(&data[2]), vec![]).await,
    ];
    all_see(&[&nodes[0], &nodes[1], &nodes[2]], 3).await;
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_survives_a_crash_of_the_whole_cluster_with_data_dirs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("runs");
    let data: Vec<std::path::PathBuf> =
        ["a", "b", "c"].iter().map(|n| dir.path().join(n)).collect();
    let nodes = three_with_data_dirs(&data).await;
    let put = nodes[0]
        .catalog()
        .put_job(raw("keep", "@every 1s", &append(&out, "v1")))
        .await
        .unwrap();
    for n in &nodes {
        eventually(5, "every node holds keep", async || {
            n.catalog().job("keep").await.ok()
        })
        .await;
    }
    eventually(10, "keep runs", async || {
        (!by_slot(&out, "keep").is_empty()).then_some(())
    })
    .await;
    // The catalog is saved within a second of a change.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    for n in nodes {
        n.abort();
    }
    let crashed = now();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The whole cluster comes back (on new ports), with no jobs of its own.
    let nodes = three_with_data_dirs(&data).await;
    for n in &nodes {
        let info = n.catalog().job("keep").await.unwrap();
        assert_eq!(
            info.version,
            put.version,
            "{} lost the definition",
            n.node_id()
        );
    }
    eventually(10, "keep runs after the restart", async || {
        (by_slot(&out, "keep").range(crashed.0 + 2_000..).count() >= 2).then_some(())
    })
    .await;
    // Someone publishes it again, so a node that joins later learns it.
    eventually(10, "a node publishes keep", async || {
        let mut held = 0;
        for n in &nodes {
            held += n.catalog().stats().await.unwrap().held;
        }
        (held >= 1).then_some(())
    })
    .await;
    assert_once_per_slot(&by_slot(&out, "keep"));
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_catalog_file_is_moved_aside_and_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("catalog.bin"), b"STRL not really a catalog").unwrap();
    let ps = peers(["solo", "x", "y"]);
    let mut c = config(&ps[0], &ps[..1], Some(&data));
    c.seeds.clear();
    let node = Node::builder(c).start().await.unwrap();
    assert_eq!(
        std::fs::read(data.join("catalog.bin.damaged")).unwrap(),
        b"STRL not really a catalog"
    );
    assert!(node.catalog().jobs().await.unwrap().is_empty());
    node.catalog()
        .put_job(raw("fresh", "@every 1h", "true"))
        .await
        .unwrap();
    node.shutdown().await;
    // The new file holds the new catalog; the damaged one is still aside.
    assert!(data.join("catalog.bin").exists());
    assert!(data.join("catalog.bin.damaged").exists());
    let ps2 = peers(["solo", "x", "y"]);
    let mut c = config(&ps2[0], &ps2[..1], Some(&data));
    c.seeds.clear();
    let node = Node::builder(c).start().await.unwrap();
    assert!(node.catalog().job("fresh").await.is_ok());
    node.shutdown().await;
}

/// (name, owner, version) of every job, as `node` lists them.
async fn summary(node: &NodeHandle) -> Vec<(String, Option<String>, Option<String>)> {
    node.catalog()
        .jobs()
        .await
        .unwrap()
        .into_iter()
        .map(|j| {
            (
                j.name.to_string(),
                j.owner.map(|o| o.to_string()),
                j.version.map(|v| format!("{v:?}")),
            )
        })
        .collect()
}

/// Once a catalog settles after growing, every node packs the maps it keeps per job
/// (`node::compact`, issue 15): the catalog, the owners and the runs stay what they were,
/// and gossip goes on (a job added afterwards reaches every node).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_that_settles_is_packed_and_nothing_else_changes() {
    let (dir, [a, b, c]) = three_without_data_dirs().await;
    let out = dir.path().join("runs");
    let nodes = [&a, &b, &c];
    for i in 0..200 {
        nodes[i % 3]
            .catalog()
            .put_job(raw(&format!("quiet-{i:03}"), "0 0 0 1 1 *", "true"))
            .await
            .unwrap();
    }
    a.catalog()
        .put_job(raw("tick", "* * * * * *", &append(&out, "t")))
        .await
        .unwrap();
    let before = eventually(15, "every node holds the 201 jobs alike", async || {
        let first = summary(&a).await;
        (first.len() == 201
            && first.iter().all(|j| j.1.is_some())
            && summary(&b).await == first
            && summary(&c).await == first)
            .then_some(first)
    })
    .await;
    let hash = a.catalog().stats().await.unwrap().hash;
    eventually(15, "every node packs its maps", async || {
        let mut all = true;
        for n in nodes {
            all &= n.catalog().stats().await.unwrap().compactions > 0;
        }
        all.then_some(())
    })
    .await;
    for n in nodes {
        assert_eq!(summary(n).await, before, "{}", n.node_id());
        assert_eq!(n.catalog().stats().await.unwrap().hash, hash);
    }
    // Gossip goes on: a job added now reaches every node, and tick keeps running once a
    // slot on its owner.
    let seen = lines(&out).len();
    b.catalog()
        .put_job(raw("late", "0 0 0 1 1 *", "true"))
        .await
        .unwrap();
    eventually(10, "every node holds late", async || {
        let mut all = true;
        for n in nodes {
            all &= n.catalog().job("late").await.is_ok();
        }
        all.then_some(())
    })
    .await;
    eventually(10, "tick runs twice more", async || {
        (lines(&out).len() >= seen + 2).then_some(())
    })
    .await;
    let owner = before.iter().find(|j| j.0 == "tick").unwrap().1.clone();
    let runs = by_slot(&out, "tick");
    assert!(
        runs.values()
            .flatten()
            .all(|l| Some(&l.node) == owner.as_ref())
    );
    assert_once_per_slot(&runs);
    for n in [a, b, c] {
        n.shutdown().await;
    }
}

/// Every entry of `node`'s listing is what the node makes of that job anew, and its owner
/// is the node's owner of it.
async fn listing_is_made_anew(node: &NodeHandle) -> bool {
    let listed = node.catalog().jobs().await.unwrap();
    for info in &listed {
        let anew = node.catalog().job(info.name.as_str()).await.unwrap();
        if *info != anew || info.owner != node.owner_of(info.name.as_str()) {
            return false;
        }
    }
    !listed.is_empty()
}

/// After a membership change, a node places its kept listing's jobs again and makes only
/// the entries whose owner moved (issue 15, `GET /v1/jobs` right after a membership
/// change): the listing is still what the node makes of each job anew, with owners of the
/// new view, when a node joins and when it leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listing_after_a_membership_change_shows_the_owners_of_the_new_view() {
    let ps = peers(["a", "b", "c"]);
    let a = start(&ps[0], &ps, None, vec![]).await;
    let b = start(&ps[1], &ps, None, vec![]).await;
    all_see(&[&a, &b], 2).await;
    for i in 0..60 {
        a.catalog()
            .put_job(raw(&format!("j-{i:02}"), "0 0 0 1 1 *", "true"))
            .await
            .unwrap();
    }
    a.catalog().pause_job("j-07").await.unwrap();
    eventually(15, "a lists the 60 jobs, owned", async || {
        let s = summary(&a).await;
        (s.len() == 60 && s.iter().all(|j| j.1.is_some())).then_some(())
    })
    .await;
    let c = start(&ps[2], &ps, None, vec![]).await;
    eventually(15, "a sees c join", async || {
        (a.members().len() == 3).then_some(())
    })
    .await;
    // The listing follows the view within moments (the catalog task hears of it).
    eventually(10, "a's listing follows c's join", async || {
        listing_is_made_anew(&a).await.then_some(())
    })
    .await;
    let owned_by_c = summary(&a)
        .await
        .iter()
        .filter(|j| j.1.as_deref() == Some("c"))
        .count();
    assert!(owned_by_c > 0, "c owns some of the 60 jobs in a's listing");
    c.shutdown().await;
    eventually(15, "a sees c leave", async || {
        (a.members().len() == 2).then_some(())
    })
    .await;
    eventually(10, "a's listing follows c's leave", async || {
        listing_is_made_anew(&a).await.then_some(())
    })
    .await;
    assert!(
        summary(&a)
            .await
            .iter()
            .all(|j| j.1.as_deref() != Some("c"))
    );
    for n in [a, b] {
        n.shutdown().await;
    }
}
