//! The master's dashboard in a real browser: headless Chromium (Debian's
//! `chromium`, driven over WebDriver by its `chromium-driver`) loads it from
//! a cluster running a workload and clicks through it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use cairn_model::TaskState;
use cairn_sdk::TaskBuilder;
use cairn_tests::cluster::{Cluster, ClusterSpec, free_port};
use cairn_tests::framework::TestFramework;
use cairn_tests::process::{Proc, remove_dir_released, sweep};
use cairn_tests::wait_for;
use http_body_util::BodyExt;
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(30);

/// Where screenshots are kept for whoever reads the test run.
fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Headless Chromium driven over WebDriver (Debian's `chromium-driver`).
/// Dropping it ends the browser and every process it started.
struct Browser {
    driver: Proc,
    url: String,
    session: String,
    marker: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        for p in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
            assert!(
                Path::new(p).exists(),
                "{p} is needed (scripts/test installs chromium and chromium-driver)"
            );
        }
        let profile = tempfile::Builder::new()
            .prefix("cairn-chromium-")
            .tempdir()
            .unwrap();
        let marker = profile.path().display().to_string();
        let port = free_port();
        // The marker in the environment lets `sweep` find the browser's
        // processes, which inherit it.
        // SAFETY: tests of this binary do not read or write the environment
        // concurrently (one test, set before any process starts).
        unsafe { std::env::set_var("CAIRN_TEST_BROWSER", &marker) };
        // Chromium makes its singleton socket and scoped directories in
        // TMPDIR and leaves them when killed: they go in the profile.
        let tmp = profile.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let driver = Proc::spawn_with_env(
            "chromedriver",
            Path::new("/usr/bin/chromedriver"),
            &[format!("--port={port}")],
            &[("TMPDIR", &tmp)],
            &profile.path().join("chromedriver.log"),
        );
        let url = format!("http://127.0.0.1:{port}");
        wait_for(T, "chromedriver to answer", || {
            let u = format!("{url}/status");
            async move {
                cairn_tests::http::get_json(&u).await?["value"]["ready"]
                    .as_bool()?
                    .then_some(())
            }
        })
        .await;
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,900", format!("--user-data-dir={}/data", marker)],
            },
        }}});
        let v = wd("POST", &format!("{url}/session"), Some(caps)).await;
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {v}"))
            .to_string();
        Browser {
            driver,
            url,
            session,
            marker,
            _profile: profile,
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let v = wd(
            method,
            &format!("{}/session/{}{path}", self.url, self.session),
            body,
        )
        .await;
        if v["value"]["error"].is_string() {
            panic!("WebDriver {method} {path}: {v}");
        }
        v["value"].clone()
    }

    async fn open(&self, url: &str) {
        self.call("POST", "/url", Some(json!({"url": url}))).await;
    }

    /// The text of the page's body as shown.
    async fn text(&self) -> String {
        let v = self
            .call(
                "POST",
                "/execute/sync",
                Some(json!({"script": "return document.body.innerText", "args": []})),
            )
            .await;
        v.as_str().unwrap_or_default().to_string()
    }

    /// Whether an element matches `css` now.
    async fn has(&self, css: &str) -> bool {
        let script = "return document.querySelector(arguments[0]) !== null";
        let v = self
            .call(
                "POST",
                "/execute/sync",
                Some(json!({"script": script, "args": [css]})),
            )
            .await;
        v.as_bool().unwrap_or(false)
    }

    async fn wait_for(&self, css: &str) {
        wait_for(T, &format!("the page to show {css}"), || async {
            self.has(css).await.then_some(())
        })
        .await;
    }

    async fn wait_for_text(&self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + T;
        loop {
            let t = self.text().await;
            if t.contains(needle) {
                return t;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the page did not show {needle:?} within {T:?}; it shows:\n{t}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn click(&self, css: &str) {
        let v = self
            .call(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        let id = v
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string();
        self.call("POST", &format!("/element/{id}/click"), Some(json!({})))
            .await;
    }

    async fn screenshot(&self, name: &str) -> PathBuf {
        let v = self.call("GET", "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let path = artifacts().join(name);
        std::fs::write(&path, png).unwrap();
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.driver.kill9();
        sweep(&self.marker);
        // Only Chromium's browser process shows the marker in its
        // environment, not its zygote, GPU, network, storage or renderer
        // processes, so the sweep misses them: they end after the browser,
        // and one still writing into the profile while it was being removed
        // left the profile behind.
        remove_dir_released(Path::new(&self.marker));
    }
}

/// One WebDriver request; the JSON answer.
async fn wd(method: &str, url: &str, body: Option<Value>) -> Value {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = hyper::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let resp = tokio::time::timeout(Duration::from_secs(60), client.request(req))
        .await
        .expect("WebDriver answers within 60 s")
        .expect("WebDriver reachable");
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_agents_running_tasks_and_a_tasks_output() {
    let cluster = Cluster::start(ClusterSpec {
        agents: 2,
        ..ClusterSpec::default()
    })
    .await;
    let master = cluster.master_addr.clone();
    let mut fw = TestFramework::named(&master, "dashboard-demo").await;
    let offer = fw.offers(T).await.remove(0);
    let tasks: Vec<_> = (0..3)
        .map(|i| {
            TaskBuilder::new(format!("web-{i}"))
                .cpus(0.1)
                .mem(16.0)
                .shell(format!("echo hello-from-web-{i}; sleep 600"))
                .build(&offer.agent_id)
                .unwrap()
        })
        .collect();
    fw.driver.launch(&offer, tasks).await.unwrap();
    for i in 0..3 {
        fw.update(&format!("web-{i}"), T, |s| s.state == TaskState::Running)
            .await;
    }
    let base = format!("http://{master}/");
    let browser = Browser::start().await;

    // The overview, then the agents page listing both agents.
    browser.open(&base).await;
    browser.wait_for_text("3 running").await;
    browser.screenshot("dashboard-overview.png").await;
    browser.click("a[href='#/agents']").await;
    for i in 0..2 {
        let id = cluster.agent_id(i).await;
        browser
            .wait_for(&format!("#agents tr[data-agent-id='{id}']"))
            .await;
    }

    // The tasks page lists the running tasks.
    browser.click("a[href='#/tasks']").await;
    for i in 0..3 {
        browser
            .wait_for(&format!("#tasks tr[data-task-id='web-{i}']"))
            .await;
    }
    let text = browser.text().await;
    assert!(
        text.contains("TASK_RUNNING") || text.contains("RUNNING"),
        "{text}"
    );

    // Opening a task shows what it printed.
    browser.click("#tasks tr[data-task-id='web-1'] a").await;
    browser.wait_for("#task-id").await;
    browser.wait_for_text("hello-from-web-1").await;
    let shot = browser.screenshot("dashboard-task.png").await;
    assert!(shot.exists());
}
