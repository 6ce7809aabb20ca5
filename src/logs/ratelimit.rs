//! Rate limiting of repeated log lines: at most one line per call site per window, the
//! rest counted and the count shown on the next line let through, and at exit.
//!
//! chitchat logged one warning per datagram it could not decode (8,851 lines in 1.4 s
//! under a flood of garbage, issue 14), and still warns on every gossip round that cannot
//! reach a seed: lines that bury everything else and fill disks. Its call sites, and any
//! event with a field named `rate_limited`, go through [`RateLimit`]. [`OneLine`] keeps
//! every event on one line.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, Filter};
use tracing_subscriber::registry::LookupSpan;

use crate::node::{Clock, SystemClock};

/// Default window: one line per call site per 10 s.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);

thread_local! {
    /// How many lines of the event being formatted on this thread were suppressed before
    /// it: set by [`RateLimit`] when it lets the event through, taken by [`OneLine`].
    static SUPPRESSED: Cell<u64> = const { Cell::new(0) };
}

/// One call site's window.
struct Site {
    meta: &'static Metadata<'static>,
    /// The message of the last line let through, for the count at exit.
    message: String,
    /// Lines are let through again from this time on (Unix milliseconds).
    open_at: i64,
    /// Lines suppressed since the last one let through.
    suppressed: u64,
}

/// A per-layer filter (`tracing_subscriber::Layer::with_filter`) that lets through at most
/// one event per window from each call site it applies to: chitchat's (target
/// `chitchat...`) and those with a field named `rate_limited`. The others pass untouched.
/// Cheap to clone; clones share their counts.
#[derive(Clone)]
pub struct RateLimit {
    window: Duration,
    clock: Arc<dyn Clock>,
    sites: Arc<Mutex<BTreeMap<(&'static str, &'static str), Site>>>,
}

impl fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("window", &self.window)
            .finish()
    }
}

impl RateLimit {
    /// One line per call site per `window`, timed by the system clock.
    pub fn new(window: Duration) -> RateLimit {
        RateLimit::with_clock(window, Arc::new(SystemClock))
    }

    /// One line per call site per `window`, timed by `clock`.
    pub fn with_clock(window: Duration, clock: Arc<dyn Clock>) -> RateLimit {
        RateLimit {
            window,
            clock,
            sites: Arc::default(),
        }
    }

    fn applies(meta: &Metadata<'_>) -> bool {
        meta.is_event()
            && (meta.target().starts_with("chitchat")
                || meta.fields().field("rate_limited").is_some())
    }

    /// Logs, for every call site with lines suppressed since its last one, how many and
    /// of which message (a warning each), and starts counting afresh. `starling run` calls
    /// it before it exits.
    pub fn flush(&self) {
        let pending: Vec<(&'static Metadata<'static>, String, u64)> = {
            let mut sites = self.sites.lock().unwrap_or_else(|p| p.into_inner());
            sites
                .values_mut()
                .filter(|s| s.suppressed > 0)
                .map(|s| (s.meta, s.message.clone(), std::mem::take(&mut s.suppressed)))
                .collect()
        };
        // Logged outside the lock: these lines pass through this filter too.
        for (meta, message, suppressed) in pending {
            tracing::warn!(
                suppressed,
                of = %message,
                from = meta.target(),
                "repeated log lines suppressed"
            );
        }
    }
}

impl<S> Filter<S> for RateLimit {
    fn enabled(&self, _meta: &Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &Event<'_>, _cx: &Context<'_, S>) -> bool {
        let meta = event.metadata();
        if !RateLimit::applies(meta) {
            return true;
        }
        let now = self.clock.now().0;
        let window = i64::try_from(self.window.as_millis()).unwrap_or(i64::MAX);
        let mut sites = self.sites.lock().unwrap_or_else(|p| p.into_inner());
        let site = sites.entry((meta.target(), meta.name())).or_insert(Site {
            meta,
            message: String::new(),
            open_at: i64::MIN,
            suppressed: 0,
        });
        if now < site.open_at {
            site.suppressed += 1;
            return false;
        }
        site.open_at = now.saturating_add(window);
        let mut message = MessageOf(String::new());
        event.record(&mut message);
        site.message = message.0;
        SUPPRESSED.with(|s| s.set(std::mem::take(&mut site.suppressed)));
        true
    }
}

/// Takes an event's `message` field.
struct MessageOf(String);

impl Visit for MessageOf {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = value.to_string();
        }
    }
}

/// An event format (`tracing_subscriber::fmt::Layer::event_format`) around another that
/// keeps every event on one line: a line break inside a value (an error's `Caused by:`
/// chain, a backtrace) becomes `\n`, so every line of the log starts with its time and
/// level. It ends a line let through by [`RateLimit`] after others were suppressed with
/// `suppressed=N`.
#[derive(Debug, Clone, Default)]
pub struct OneLine<F>(pub F);

impl<S, N, F> FormatEvent<S, N> for OneLine<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let suppressed = SUPPRESSED.with(|s| s.replace(0));
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let line = line.strip_suffix('\n').unwrap_or(&line);
        if line.contains(['\n', '\r']) {
            writer.write_str(&line.replace('\n', "\\n").replace('\r', "\\r"))?;
        } else {
            writer.write_str(line)?;
        }
        if suppressed > 0 {
            write!(writer, " suppressed={suppressed}")?;
        }
        writer.write_char('\n')
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};

    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::{Layer, fmt as tsfmt};

    use super::*;
    use crate::core::types::UnixMillis;

    struct Manual(AtomicI64);

    impl Clock for Manual {
        fn now(&self) -> UnixMillis {
            UnixMillis(self.0.load(Ordering::Relaxed))
        }
    }

    /// Collects what the fmt layer writes.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn one_line_per_window_per_call_site_with_the_count_of_the_others() {
        let clock = Arc::new(Manual(AtomicI64::new(0)));
        let limit = RateLimit::with_clock(Duration::from_secs(10), clock.clone());
        let out = Lines::default();
        let writer = out.clone();
        let layer = tsfmt::layer()
            .with_ansi(false)
            .without_time()
            .with_writer(move || writer.clone())
            .event_format(OneLine(tsfmt::format().with_ansi(false).without_time()))
            .with_filter(limit.clone());
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..1000 {
                // Ten seconds of a flood: one line, then one more when the window ends.
                clock.0.store(i * 11, Ordering::Relaxed);
                tracing::warn!(target: "chitchat::transport::udp", n = i, "invalid-chitchat-payload");
                tracing::warn!(rate_limited = true, "our own noisy warning");
                tracing::warn!(job = "x", "run failed");
            }
            limit.flush();
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let garbage: Vec<&&str> = lines
            .iter()
            .filter(|l| l.contains("invalid-chitchat-payload") && !l.contains("repeated"))
            .collect();
        // At 0 ms and at 10,010 ms (i = 910): the second with the 909 in between.
        assert_eq!(garbage.len(), 2, "{text}");
        assert!(garbage[0].contains("n=0") && !garbage[0].contains("suppressed"));
        assert!(garbage[1].contains("n=910") && garbage[1].ends_with("suppressed=909"));
        // The 89 after it are reported at the flush, naming the message.
        assert!(
            lines
                .iter()
                .any(|l| l.contains("repeated log lines suppressed")
                    && l.contains("suppressed=89")
                    && l.contains("of=invalid-chitchat-payload")),
            "{text}"
        );
        let ours = |l: &&&str| l.contains("our own noisy") && !l.contains("repeated");
        assert_eq!(lines.iter().filter(ours).count(), 2);
        // Other warnings are never held back.
        assert_eq!(
            lines.iter().filter(|l| l.contains("run failed")).count(),
            1000
        );
    }

    #[test]
    fn an_event_with_line_breaks_in_its_values_stays_one_line() {
        let out = Lines::default();
        let writer = out.clone();
        let layer = tsfmt::layer()
            .with_writer(move || writer.clone())
            .event_format(OneLine(tsfmt::format().with_ansi(false).without_time()))
            .with_filter(RateLimit::new(DEFAULT_WINDOW));
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            let error = anyhow::anyhow!("permission denied").context("cannot send");
            tracing::warn!(target: "chitchat::server", error = ?error, "Failed to gossip");
            tracing::warn!(detail = "a\r\nINFO forged", "second");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].starts_with(" WARN chitchat::server: Failed to gossip"),
            "{text}"
        );
        assert!(lines[0].contains("cannot send\\n\\nCaused by:"), "{text}");
        assert!(lines[1].starts_with(" WARN"), "{text}");
    }
}
