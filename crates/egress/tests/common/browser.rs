//! Headless Chromium driven over WebDriver (chromedriver), for the console's tests: Debian's
//! `chromium` and `chromium-driver`, which the test command installs when they are missing.
//! Each browser has its own chromedriver, port and fresh profile; the network it may reach is
//! 127.0.0.1.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use tokio::time::Instant;

fn binary(variable: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(variable)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    assert!(
        path.exists(),
        "{} not found: the test command (scripts/test) installs Debian's chromium and \
         chromium-driver, or set {variable}",
        path.display()
    );
    path
}

/// A headless Chromium and the chromedriver that drives it.
pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// A browser window `width` px wide.
    pub async fn start(width: u32) -> Self {
        let chromedriver = binary("HOOKBUS_CHROMEDRIVER", "/usr/bin/chromedriver");
        let chromium = binary("HOOKBUS_CHROMIUM", "/usr/bin/chromium");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let profile = tempfile::tempdir().unwrap();
        let capabilities = serde_json::json!({
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                    format!("--user-data-dir={}", profile.path().display()),
                    format!("--window-size={width},900"),
                ],
            }
        });
        let capabilities = capabilities.as_object().unwrap().clone();
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("no WebDriver session: {e}"),
            }
        };
        Self {
            client,
            driver,
            _profile: profile,
        }
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// The element at `css`, waiting for it to appear.
    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(15))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
    }

    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap()
    }

    /// Clicks `css`, which loads a page, and waits until the new page has loaded (so what is
    /// read next is on it, not on the page before).
    pub async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.client
            .execute("window.__before_click = true", vec![])
            .await
            .unwrap();
        element.click().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let loaded = self
                .client
                .execute(
                    "return window.__before_click === undefined && document.readyState === 'complete'",
                    vec![],
                )
                .await
                .unwrap_or_default();
            if loaded == serde_json::json!(true) {
                return;
            }
            assert!(Instant::now() < deadline, "clicking {css} loaded no page");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Types `text` into the field `css`, after clearing it.
    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    /// The page's whole text.
    pub async fn page_text(&self) -> String {
        self.text("body").await
    }

    pub async fn path(&self) -> String {
        self.client.current_url().await.unwrap().path().to_owned()
    }

    /// Reloads until `css` holds `text`, for a page that shows what happens later.
    pub async fn reload_until(&self, css: &str, text: &str, within: Duration) {
        self.until_text(css, text, within, true).await;
    }

    /// Waits until `css` holds `text` (the page changes by itself: a script).
    pub async fn wait_text(&self, css: &str, text: &str, within: Duration) {
        self.until_text(css, text, within, false).await;
    }

    async fn until_text(&self, css: &str, text: &str, within: Duration, reload: bool) {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(element) = self.client.find(Locator::Css(css)).await
                && element.text().await.unwrap_or_default().contains(text)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{css} did not show {text:?} within {within:?}; the page: {}",
                self.page_text().await
            );
            if reload {
                tokio::time::sleep(Duration::from_millis(300)).await;
                self.client.refresh().await.unwrap();
            } else {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// Saves what the browser shows to `target/console-screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        let dir =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/console-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    pub async fn stop(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
    }
}
