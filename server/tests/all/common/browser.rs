//! Headless Chromium through chromedriver (WebDriver), one browser per test, torn down
//! (browser, driver and profile directory) even when the test fails.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};

/// Where chromedriver and Chromium are (Debian's packages by default).
fn chromedriver_path() -> String {
    std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into())
}

fn chromium_path() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

pub struct Browser {
    pub client: Client,
    driver: Child,
    profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free port and a fresh headless Chromium session.
    pub async fn start() -> Browser {
        let driver_path = chromedriver_path();
        assert!(
            std::path::Path::new(&driver_path).exists(),
            "chromedriver not found at {driver_path}: install Debian's chromium and chromium-driver (bash .ci/run does)"
        );
        let port = free_port();
        let driver = Command::new(&driver_path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let profile = tempfile::tempdir().expect("profile dir");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": chromium_path(),
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector).capabilities(caps.clone()).connect(&url).await {
                Ok(client) => break client,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("could not start a Chromium session: {e}"),
            }
        };
        Browser { client, driver, profile }
    }

    /// Opens the sandbox EHR at `ehr_url`, launches the app for `patient` inside the EHR's app
    /// frame, and switches into that frame.
    pub async fn launch_embedded(&self, ehr_url: &str, patient: &str) {
        self.client.goto(&format!("{ehr_url}/")).await.unwrap();
        self.click("input[name=embedded]").await;
        self.click(&format!("button[name=patient][value={patient}]")).await;
        let frame = self.wait("#app-frame").await;
        frame.enter_frame().await.unwrap();
    }

    /// Waits for an element and returns its text.
    /// The text of the first element matching `css`, once there. An element the page
    /// redraws between finding and reading it is found again.
    pub async fn text(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.wait(css).await.text().await {
                Ok(text) => return text,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("could not read the text of `{css}`: {e}"),
            }
        }
    }

    pub async fn wait(&self, css: &str) -> fantoccini::elements::Element {
        match self
            .client
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(css))
            .await
        {
            Ok(el) => el,
            Err(e) => {
                let url =
                    self.client.current_url().await.map(|u| u.to_string()).unwrap_or_default();
                let source = self.client.source().await.unwrap_or_default();
                panic!(
                    "no element `{css}` appeared at {url}: {e}\n{}",
                    &source[..source.len().min(3000)]
                )
            }
        }
    }

    /// Clicks `css`, found again if the page replaced it between the find and the click.
    pub async fn click(&self, css: &str) {
        for _ in 0..3 {
            match self.wait(css).await.click().await {
                Ok(_) => return,
                Err(e) if e.to_string().contains("stale element") => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("could not click `{css}`: {e}"),
            }
        }
        panic!("could not click `{css}`: the page kept replacing it");
    }

    /// Presses a key (a WebDriver key code such as `'\u{E015}'` for ArrowDown) on whatever has focus.
    pub async fn press(&self, key: char) {
        use fantoccini::actions::{InputSource, KeyAction, KeyActions};
        let actions = KeyActions::new("keyboard".into())
            .then(KeyAction::Down { value: key })
            .then(KeyAction::Up { value: key });
        self.client.perform_actions(actions).await.expect("key press");
    }

    pub async fn url(&self) -> String {
        self.client.current_url().await.expect("current url").to_string()
    }

    /// Runs a script and returns its value.
    pub async fn eval(&self, script: &str) -> serde_json::Value {
        self.client.execute(script, vec![]).await.expect("script runs")
    }

    /// Ends the session and the processes.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = &self.profile;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A failed test never reaches `close`: stop chromedriver, and Chromium with it.
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        kill_chromium_for(self.profile.path());
    }
}

/// Chromium outlives a killed chromedriver; find it by its profile directory and end it.
fn kill_chromium_for(profile: &std::path::Path) {
    let marker = format!("--user-data-dir={}", profile.display());
    let _ = Command::new("pkill").arg("-f").arg("--").arg(marker).status();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
