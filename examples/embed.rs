//! Embedding a Starling peer in your own service.
//!
//! Run two copies to see ownership split between them:
//!
//! ```sh
//! cargo run --example embed -- a 127.0.0.1:7001 127.0.0.1:7002
//! cargo run --example embed -- b 127.0.0.1:7002 127.0.0.1:7001
//! ```
//!
//! Arguments: node id, gossip listen address, then seed addresses.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use starling::{HandlerError, JobSpec, Misfire, Node, NodeConfig, RunContext};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let mut args = std::env::args().skip(1);
    let id = args.next().unwrap_or_else(|| "embedded-1".into());
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:7001".into());
    let mut config = NodeConfig::new(&id, listen.parse()?);
    config.seeds = args.map(|s| s.parse()).collect::<Result<_, _>>()?;

    // A handler is any async closure taking a RunContext. Use ctx.fire_id as the
    // idempotency key for side effects: it is the same on every node for the same slot.
    let warmed = Arc::new(AtomicU64::new(0));
    let counter = warmed.clone();
    let mut report = JobSpec::parse("hourly-report", "0 * * * *")?;
    report.misfire = Misfire::Once;

    let node = Node::builder(config)
        .handler_job(
            JobSpec::parse("cache-warm", "@every 5s")?,
            move |ctx: RunContext| {
                let counter = counter.clone();
                async move {
                    let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
                    println!(
                        "{} warmed the cache for slot {} (fire id {}, run #{n} here)",
                        ctx.node_id, ctx.scheduled_at, ctx.fire_id
                    );
                    Ok::<(), HandlerError>(())
                }
            },
        )?
        .handler_job(report, |ctx: RunContext| async move {
            println!("report for {}", ctx.scheduled_at);
            Ok(())
        })?
        .start()
        .await?;

    println!(
        "members: {:?}; cache-warm is owned by {:?}",
        node.members(),
        node.owner_of("cache-warm")
    );
    tokio::signal::ctrl_c().await?;
    node.shutdown().await; // graceful leave: peers take over without a gap
    println!(
        "ran cache-warm {} time(s) here",
        warmed.load(Ordering::Relaxed)
    );
    Ok(())
}
