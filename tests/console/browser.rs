//! A headless Chromium driven over WebDriver: Debian's `chromium` and `chromedriver`, each a
//! child process killed with the test, and a fresh profile in a temporary directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::common::Proc;

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Why the browser tests cannot run here, if they cannot: only when Debian's packages are
/// absent (`.ci/run` installs them, so in CI they run).
pub fn missing() -> Option<String> {
    let absent: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    (!absent.is_empty()).then(|| {
        format!(
            "{} not installed (apt-get install -y chromium chromium-driver)",
            absent.join(" and ")
        )
    })
}

/// Set (by `.ci/run`, once the packages are there) to make a browser that is missing or
/// cannot start a failure instead of a skip.
pub const REQUIRE: &str = "STARLING_REQUIRE_BROWSER";

/// A headless Chromium for a test, or `None` after printing why the test skips: the
/// packages are absent, or the browser cannot start here. With [`REQUIRE`] set, either
/// of those fails the test instead.
pub async fn open(test: &str, log: &Path, width: u32, height: u32) -> Option<Browser> {
    let why = match missing() {
        Some(why) => why,
        None => match Browser::start(log, width, height).await {
            Ok(b) => return Some(b),
            Err(e) => e,
        },
    };
    if std::env::var_os(REQUIRE).is_some() {
        panic!("{test}: no browser, and {REQUIRE} is set: {why}");
    }
    eprintln!("skipping {test}: {why}");
    None
}

/// Where the tests write their screenshots: `target/console-screenshots/`.
pub fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target/tmp has a parent")
        .join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub struct Browser {
    pub client: Client,
    _driver: Proc,
    _profile: tempfile::TempDir,
}

pub fn free_tcp_port() -> u16 {
    crate::common::free_port()
}

impl Browser {
    /// Starts chromedriver and a headless Chromium of `width` × `height`, logging the driver
    /// to `log`; on failure, says why with the end of that log.
    pub async fn start(log: &Path, width: u32, height: u32) -> Result<Browser, String> {
        let port = free_tcp_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).map_err(|e| e.to_string())?)
            .spawn()
            .map_err(|e| format!("{CHROMEDRIVER} does not start: {e}"))?;
        let mut driver = Proc(Some(driver));
        let profile = tempfile::tempdir().map_err(|e| e.to_string())?;
        // This machine's network is closed: everything Chromium would fetch in the
        // background is turned off, or it waits on connections that never come.
        let args = [
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            format!("--user-data-dir={}", profile.path().display()),
            format!("--window-size={width},{height}"),
        ];
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
        });
        let caps = caps.as_object().unwrap().clone();
        let url = format!("http://127.0.0.1:{port}");
        // The driver takes a moment to listen: bounded retries (each attempt that reaches
        // it waits for Chromium to start).
        let mut last = String::new();
        for _ in 0..100 {
            match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(client) => {
                    return Ok(Browser {
                        client,
                        _driver: driver,
                        _profile: profile,
                    });
                }
                Err(e) => last = e.to_string(),
            }
            if !driver.is_running() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        driver.kill9();
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Err(format!(
            "no WebDriver session from {CHROMEDRIVER} on port {port}: {last}; its log ends: {}",
            tail.join(" / ")
        ))
    }

    /// Runs `script` in the page and returns its value.
    pub async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Runs an async `script` whose last argument is the callback.
    pub async fn js_async(&self, script: &str) -> Value {
        self.client
            .execute_async(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
    }

    /// Types `text` into the element `css` (focusing it first, as a user would).
    pub async fn type_into(&self, css: &str, text: &str) {
        self.find(css).await.send_keys(text).await.unwrap();
    }

    /// Saves a screenshot of the top of the page as `name`.png in [`screenshot_dir`].
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        self.js("window.scrollTo(0, 0);").await;
        let png = self.client.screenshot().await.unwrap();
        let path = screenshot_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// Polls `check` every 200 ms until it returns `Some`, for at most `within`; panics
    /// naming `what` (and the page's own status line) if it never does.
    pub async fn wait_for<T, F, Fut>(&self, what: &str, within: Duration, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let rounds = (within.as_millis() / 200).max(1);
        for _ in 0..rounds {
            if let Some(v) = check().await {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let status = self.page_status().await;
        panic!("the page did not show {what} within {within:?}; it says: {status}");
    }

    /// The page's status line and message, for failure reports.
    pub async fn page_status(&self) -> String {
        self.js(
            "return [document.getElementById('live').textContent, \
             document.getElementById('message').hidden ? '' : document.getElementById('message-text').textContent, \
             Array.from(document.querySelectorAll('.note')).filter(n => !n.hidden).map(n => n.textContent).join(' | ')].join(' / ')",
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
    }
}

/// WCAG 2 contrast, computed in the page: colours as the browser resolved them,
/// backgrounds composited from the element up to the page.
const CONTRAST_JS: &str = r#"
const parse = (s) => {
  const m = /rgba?\(([^)]+)\)/.exec(s || '');
  if (!m) return null;
  const p = m[1].split(/[\s,\/]+/).filter(Boolean).map(Number);
  return { rgb: p.slice(0, 3), a: p.length > 3 ? p[3] : 1 };
};
const lum = (rgb) => {
  const [r, g, b] = rgb.map((v) => {
    v /= 255;
    return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
  });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
};
const ratio = (a, b) => {
  const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p);
  return (x + 0.05) / (y + 0.05);
};
const background = (e) => {
  const layers = [];
  for (let n = e; n && n.nodeType === 1; n = n.parentElement) {
    if (n instanceof SVGElement && !(n instanceof SVGSVGElement)) continue;
    const c = parse(getComputedStyle(n).backgroundColor);
    if (c && c.a > 0) {
      layers.push(c);
      if (c.a >= 1) break;
    }
  }
  let rgb = [255, 255, 255];
  for (const l of layers.reverse()) rgb = rgb.map((v, i) => l.rgb[i] * l.a + v * (1 - l.a));
  return rgb;
};
const name = (e) => e.id ? '#' + e.id : e.tagName.toLowerCase() + (e.className && typeof e.className === 'string' ? '.' + e.className.split(' ').join('.') : '');
"#;

impl Browser {
    /// Presses and releases `key` on whatever has the focus, as a keyboard would.
    pub async fn press(&self, key: fantoccini::key::Key) {
        use fantoccini::actions::{InputSource, KeyAction, KeyActions};
        let value = key.chars().next().unwrap();
        let keys = KeyActions::new("keyboard".into())
            .then(KeyAction::Down { value })
            .then(KeyAction::Up { value });
        self.client.perform_actions(keys).await.unwrap();
    }

    /// Every visible piece of text whose contrast with what is behind it is under WCAG AA
    /// (4.5:1, or 3:1 for large text), as `element "text" ratio`.
    pub async fn contrast_failures(&self) -> Vec<String> {
        let script = format!(
            "{CONTRAST_JS}
            const out = [];
            for (const e of document.querySelectorAll('body *')) {{
              const text = Array.from(e.childNodes).filter((n) => n.nodeType === 3)
                .map((n) => n.textContent).join('').trim();
              if (!text || !e.getClientRects().length || e.closest('.sr-only')) continue;
              const s = getComputedStyle(e);
              if (s.visibility !== 'visible') continue;
              const fg = parse(e instanceof SVGElement ? s.fill : s.color);
              if (!fg) continue;
              const bg = background(e);
              const rgb = fg.rgb.map((v, i) => v * fg.a + bg[i] * (1 - fg.a));
              const size = parseFloat(s.fontSize);
              const large = size >= 24 || (size >= 18.66 && Number(s.fontWeight) >= 700);
              const r = ratio(rgb, bg);
              if (r < (large ? 3 : 4.5)) out.push(`${{name(e)}} \"${{text.slice(0, 40)}}\" ${{r.toFixed(2)}}:1`);
            }}
            return out;"
        );
        let v = self.js(&script).await;
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    }

    /// What has the focus (`#id`, or tag and classes, with its text), and, if its focus
    /// is not visible (no outline of 2 px or more, or one under 3:1 against what is
    /// behind it), why not.
    pub async fn focus(&self) -> (String, Option<String>) {
        let script = format!(
            "{CONTRAST_JS}
            const e = document.activeElement;
            if (!e || e === document.body) return ['body', null];
            const s = getComputedStyle(e);
            const label = name(e) + ' ' + (e.getAttribute('aria-label') || e.textContent || e.value || '').trim().slice(0, 30);
            const width = parseFloat(s.outlineWidth);
            if (s.outlineStyle === 'none' || !(width >= 2)) return [label, `outline ${{s.outlineStyle}} ${{s.outlineWidth}}`];
            const ring = parse(s.outlineColor);
            const r = ratio(ring.rgb, background(e.parentElement || e));
            return [label, r < 3 ? `outline contrast ${{r.toFixed(2)}}:1` : null];"
        );
        let v = self.js(&script).await;
        (
            v[0].as_str().unwrap().to_string(),
            v[1].as_str().map(str::to_string),
        )
    }
}
